/**
 * SSE and long-poll specifics: stream framing, heartbeats, the retry hint, poll timeouts and limits,
 * and coded errors for bad channels, garbage or forged cursors and wrong methods.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatCursor, parseCursor, type PollResponse, type Position } from '@tidings/protocol';
import { RawSseClient, startGateway, type TestGateway, watchNextConnectionWrites } from '@tidings/testing';

let gw: TestGateway;
const open: RawSseClient[] = [];
beforeAll(async () => {
  gw = await startGateway({ sseHeartbeat: 100, sseRetry: 2000, maxPollMessages: 5 });
});
afterAll(async () => {
  for (const c of open) c.close();
  await gw.close();
});
const sse = async (query: string, lastEventId?: string): Promise<RawSseClient> => {
  const c = await RawSseClient.open(`${gw.url}/sse?${query}`, lastEventId);
  open.push(c);
  return c;
};
/** A cursor's entries as an object (channel to position), for readable comparisons. */
const cursorOf = (text: string | undefined): Record<string, Position> => Object.fromEntries(parseCursor(text ?? ''));
/**
 * Cursor entries for channels a test does not request: one at `near` (a requested channel's own
 * epoch, an earlier seq: applied to that channel it would replay it), one ahead of its channel
 * (`aheadChannel` at `ahead` + 100: checked, it would be bad_position) and one in an unconfigured namespace.
 */
function unrelatedEntries(near: Position, aheadChannel: string, ahead: Position): string {
  return formatCursor(
    new Map([
      ['unrelated-near', { epoch: near.epoch, seq: near.seq - 1 }],
      [aheadChannel, { epoch: ahead.epoch, seq: ahead.seq + 100 }],
      ['zzz:unrelated', { epoch: 'abcdefgh', seq: 5 }],
    ]),
  );
}
async function errorOf(res: Response | RawSseClient): Promise<{ status: number; code: string }> {
  const body = (res instanceof Response ? await res.json() : JSON.parse(res.body)) as { error: { code: string } };
  return { status: res.status, code: body.error.code };
}

describe('SSE stream', () => {
  it('is an event stream with a jittered retry hint, a welcome carrying the cursor, and heartbeats', async () => {
    const p = await gw.publish('sse-a', 1);
    const c = await sse('channel=sse-a&channel=sse-b');
    expect(c.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(c.headers['cache-control']).toContain('no-cache');
    await c.until((x) => x.comments >= 2, 2000);
    expect(c.retry).toBeGreaterThanOrEqual(2000);
    expect(c.retry).toBeLessThanOrEqual(3000);
    const welcome = c.named('tidings:welcome')[0];
    const cursor = parseCursor(welcome?.id ?? '');
    expect(cursor.get('sse-a')).toEqual(p.position);
    expect(cursor.get('sse-b')?.seq).toBe(0);
    expect(JSON.parse(welcome?.data ?? '{}')).toMatchObject({ channels: ['sse-a', 'sse-b'], heartbeat: 100 });
  });

  it('sends the head, the retry hint and the welcome in one write', async () => {
    const writes = watchNextConnectionWrites(gw.gateway.server);
    const c = await sse('channel=sse-one-write');
    await c.until((x) => x.named('tidings:welcome').length === 1);
    expect(writes).toEqual([3]);
  });

  it('sends each stream its heartbeat one interval after it opened, not in one sweep over all streams', async () => {
    const own = await startGateway({ sseHeartbeat: 1000 });
    try {
      const firstComment = async (c: RawSseClient): Promise<number> => {
        await c.until((x) => x.comments >= 1, 3000);
        return performance.now();
      };
      const a = await RawSseClient.open(`${own.url}/sse?channel=beat-a`);
      const aOpened = performance.now();
      const aBeat = firstComment(a);
      await new Promise((r) => setTimeout(r, 500));
      const b = await RawSseClient.open(`${own.url}/sse?channel=beat-b`);
      const bOpened = performance.now();
      const [ta, tb] = await Promise.all([aBeat, firstComment(b)]);
      a.close();
      b.close();
      expect(ta - aOpened).toBeGreaterThan(900);
      expect(tb - bOpened).toBeGreaterThan(900);
      expect(tb - ta).toBeGreaterThan(300);
    } finally {
      await own.close();
    }
  });

  it('gives every event an id holding every channel position', async () => {
    const c = await sse('channel=sse-v1,sse-v2');
    await c.until((x) => x.named('tidings:welcome').length === 1);
    const a = await gw.publish('sse-v1', 'a', { type: 'chat.message' });
    const b = await gw.publish('sse-v2', 'b');
    await c.until((x) => x.events.length === 3);
    const [first, second] = c.events.slice(1);
    expect(first?.event).toBe('chat.message');
    expect(parseCursor(first?.id ?? '').get('sse-v1')).toEqual(a.position);
    expect(second?.event).toBe('message');
    expect(JSON.parse(second?.data ?? '')).toEqual({ channel: 'sse-v2', position: b.position, data: 'b' });
    const ids = parseCursor(second?.id ?? '');
    expect([ids.get('sse-v1'), ids.get('sse-v2')]).toEqual([a.position, b.position]);
  });

  it('resumes from the lastEventId query like from the header', async () => {
    const p1 = await gw.publish('sse-q', 1);
    await gw.publish('sse-q', 2);
    const cursor = formatCursor(new Map([['sse-q', p1.position]]));
    const c = await sse(`channel=sse-q&lastEventId=${encodeURIComponent(cursor)}`);
    await c.until((x) => x.named('message').length === 1);
    expect(JSON.parse(c.named('message')[0]?.data ?? '')).toMatchObject({ data: 2 });
  });

  it('prefers the Last-Event-ID header over the query', async () => {
    const p1 = await gw.publish('sse-h', 1);
    const p2 = await gw.publish('sse-h', 2);
    await gw.publish('sse-h', 3);
    const c = await sse(`channel=sse-h&lastEventId=${encodeURIComponent(formatCursor(new Map([['sse-h', p1.position]])))}`, formatCursor(new Map([['sse-h', p2.position]])));
    await c.until((x) => x.named('message').length === 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(c.named('message').map((e) => (JSON.parse(e.data) as { data: number }).data)).toEqual([3]);
  });

  it('ignores cursor entries for channels not requested', async () => {
    // Requested: sse-x (published to) and sse-y (never published to), neither in the cursor, so both
    // start from now. The cursor's entries are all for other channels: one at a position that would
    // replay sse-x if it were applied to it (sse-x's own epoch, seq 1), one ahead of its channel (would
    // be bad_position), one in an unconfigured namespace (would be unknown_namespace).
    await gw.publish('sse-x', 1);
    const x = await gw.publish('sse-x', 2);
    const ahead = await gw.publish('sse-unrelated-ahead', 1);
    const unrelated = unrelatedEntries(x.position, 'sse-unrelated-ahead', ahead.position);
    const c = await sse('channel=sse-x&channel=sse-y', unrelated);
    expect(c.status).toBe(200);
    await c.until((s) => s.named('tidings:welcome').length === 1);
    const welcome = c.named('tidings:welcome')[0];
    const y = { epoch: parseCursor(welcome?.id ?? '').get('sse-y')?.epoch, seq: 0 };
    const start = { 'sse-x': x.position, 'sse-y': y };
    expect(cursorOf(welcome?.id)).toEqual(start);
    expect(JSON.parse(welcome?.data ?? '{}')).toMatchObject({ channels: ['sse-x', 'sse-y'] });
    expect(cursorOf((JSON.parse(welcome?.data ?? '{}') as { cursor: string }).cursor)).toEqual(start);

    // Live: only the requested channels are delivered, and every id covers exactly them.
    await gw.publish('sse-other', 'not requested');
    const y1 = await gw.publish('sse-y', 'y1');
    const x3 = await gw.publish('sse-x', 'x3');
    await c.until((s) => s.events.length === 3);
    await new Promise((r) => setTimeout(r, 50));
    expect(c.events.slice(1).map((e) => JSON.parse(e.data) as unknown)).toEqual([
      { channel: 'sse-y', position: y1.position, data: 'y1' },
      { channel: 'sse-x', position: x3.position, data: 'x3' },
    ]);
    expect(c.events.slice(1).map((e) => cursorOf(e.id))).toEqual([
      { 'sse-x': x.position, 'sse-y': y1.position },
      { 'sse-x': x3.position, 'sse-y': y1.position },
    ]);

    // A requested channel that is in the cursor resumes from its own entry, whatever surrounds it.
    const resumed = await sse('channel=sse-x', `${unrelated},${formatCursor(new Map([['sse-x', x.position]]))}`);
    await resumed.until((s) => s.named('message').length === 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(cursorOf(resumed.named('tidings:welcome')[0]?.id)).toEqual({ 'sse-x': x.position });
    expect(resumed.named('message').map((e) => [JSON.parse(e.data) as unknown, cursorOf(e.id)])).toEqual([
      [{ channel: 'sse-x', position: x3.position, data: 'x3' }, { 'sse-x': x3.position }],
    ]);
  });

  it.each([
    ['garbage Last-Event-ID', 'channel=a', 'not a cursor', 400, 'bad_cursor'],
    ['a Last-Event-ID with a bad channel', 'channel=a', 'a b=abc.1', 400, 'bad_cursor'],
    ['a garbage lastEventId query', 'channel=a&lastEventId=%00%01', undefined, 400, 'bad_cursor'],
    ['no channel', '', undefined, 400, 'bad_request'],
    ['an invalid channel', 'channel=%20x', undefined, 400, 'bad_channel'],
    ['an unknown namespace', 'channel=zzz:x', undefined, 404, 'unknown_namespace'],
  ])('refuses %s with a coded error', async (_what, query, lastEventId, status, code) => {
    const c = await sse(query, lastEventId);
    expect(await errorOf(c)).toEqual({ status, code });
  });

  it('refuses a position ahead of the channel (a forged cursor) with bad_position', async () => {
    const p = await gw.publish('sse-forged', 1);
    const c = await sse('channel=sse-forged', formatCursor(new Map([['sse-forged', { epoch: p.position.epoch, seq: 1000 }]])));
    expect(await errorOf(c)).toEqual({ status: 400, code: 'bad_position' });
  });

  it('refuses POST with 405', async () => {
    const res = await fetch(`${gw.url}/sse?channel=a`, { method: 'POST' });
    expect(await errorOf(res)).toEqual({ status: 405, code: 'method_not_allowed' });
  });
});

describe('long polling', () => {
  const poll = async (query: string): Promise<{ status: number; body: PollResponse }> => {
    const res = await fetch(`${gw.url}/poll?${query}`);
    return { status: res.status, body: (await res.json()) as PollResponse };
  };

  it('without a cursor starts from now and answers an empty poll at the timeout with a cursor', async () => {
    const p = await gw.publish('poll-now', 1);
    const started = Date.now();
    const { status, body } = await poll('channel=poll-now&timeout=200');
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(status).toBe(200);
    expect(body).toEqual({ messages: [], gaps: [], cursor: formatCursor(new Map([['poll-now', p.position]])) });
  });

  it('holds until a message arrives, then answers at once', async () => {
    const first = await poll('channel=poll-hold&timeout=0');
    const pending = poll(`channel=poll-hold&cursor=${encodeURIComponent(first.body.cursor)}&timeout=5000`);
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    const p = await gw.publish('poll-hold', { hi: 1 });
    const { body } = await pending;
    expect(Date.now() - started).toBeLessThan(1000);
    expect(body.messages).toEqual([{ channel: 'poll-hold', position: p.position, data: { hi: 1 } }]);
    expect(body.cursor).toBe(formatCursor(new Map([['poll-hold', p.position]])));
  });

  it('returns at most maxPollMessages and continues from the cursor', async () => {
    const first = await poll('channel=poll-many&timeout=0');
    for (let i = 1; i <= 8; i++) await gw.publish('poll-many', i);
    const a = await poll(`channel=poll-many&cursor=${encodeURIComponent(first.body.cursor)}`);
    expect(a.body.messages.map((m) => m.data)).toEqual([1, 2, 3, 4, 5]);
    const b = await poll(`channel=poll-many&cursor=${encodeURIComponent(a.body.cursor)}`);
    expect(b.body.messages.map((m) => m.data)).toEqual([6, 7, 8]);
  });

  it.each([
    ['a garbage cursor', 'channel=a&cursor=%%%', 400, 'bad_cursor'],
    ['a cursor with a bad position', 'channel=a&cursor=a%3Dx.%21', 400, 'bad_cursor'],
    ['a bad timeout', 'channel=a&timeout=soon', 400, 'bad_request'],
    // What Number() would read as a number: empty, a space, hex, an exponent, a sign.
    ['an empty timeout', 'channel=a&timeout=', 400, 'bad_request'],
    ['a blank timeout', 'channel=a&timeout=%20', 400, 'bad_request'],
    ['a hex timeout', 'channel=a&timeout=0x10', 400, 'bad_request'],
    ['an exponent timeout', 'channel=a&timeout=1e3', 400, 'bad_request'],
    ['a signed timeout', 'channel=a&timeout=%2B5', 400, 'bad_request'],
    ['no channel', 'cursor=', 400, 'bad_request'],
    ['too many channels', Array.from({ length: 65 }, (_, i) => `channel=c${i}`).join('&'), 429, 'limit_exceeded'],
  ])('refuses %s with a coded error', async (_what, query, status, code) => {
    const res = await fetch(`${gw.url}/poll?${query}`);
    expect(await errorOf(res)).toEqual({ status, code });
  });

  it('ignores cursor entries for channels not requested, in what it delivers and in the cursor it returns', async () => {
    await gw.publish('poll-x', 1);
    const x = await gw.publish('poll-x', 2);
    const ahead = await gw.publish('poll-unrelated-ahead', 1);
    const unrelated = unrelatedEntries(x.position, 'poll-unrelated-ahead', ahead.position);
    // poll-x and poll-y are not in the cursor: both start from now, nothing is replayed.
    const now = await poll(`channel=poll-x&channel=poll-y&timeout=0&cursor=${encodeURIComponent(unrelated)}`);
    expect(now.status).toBe(200);
    expect(now.body.messages).toEqual([]);
    expect(now.body.gaps).toEqual([]);
    const y = { epoch: parseCursor(now.body.cursor).get('poll-y')?.epoch, seq: 0 };
    expect(cursorOf(now.body.cursor)).toEqual({ 'poll-x': x.position, 'poll-y': y });

    // With poll-x's own entry among the unrelated ones, poll-x resumes from it; the returned cursor still covers exactly the requested channels.
    await gw.publish('poll-other', 'not requested');
    const x3 = await gw.publish('poll-x', 'x3');
    const own = `${unrelated},${formatCursor(new Map([['poll-x', x.position]]))}`;
    const resumed = await poll(`channel=poll-x&channel=poll-y&timeout=0&cursor=${encodeURIComponent(own)}`);
    expect(resumed.status).toBe(200);
    expect(resumed.body.messages).toEqual([{ channel: 'poll-x', position: x3.position, data: 'x3' }]);
    expect(resumed.body.gaps).toEqual([]);
    expect(cursorOf(resumed.body.cursor)).toEqual({ 'poll-x': x3.position, 'poll-y': y });
  });

  it('leaves no session behind after polls end', async () => {
    await poll('channel=poll-clean&timeout=0');
    await poll('channel=poll-clean&timeout=50');
    expect(gw.gateway.connections().poll).toBe(0);
  });
});

describe('the channels of one stream', () => {
  const names = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `many-${from + i}`);

  it('takes 64 channels (repeats counted once) and refuses 65 with limit_exceeded', async () => {
    const ok = await fetch(`${gw.url}/poll?channel=${[...names(64), ...names(64)].join(',')}&timeout=0`);
    expect(ok.status).toBe(200);
    const res = await fetch(`${gw.url}/poll?channel=${names(65).join(',')}&timeout=0`);
    expect(await errorOf(res)).toEqual({ status: 429, code: 'limit_exceeded' });
  });

  it('stops reading a list at its 65th channel: a thousand are not compared with each other first', async () => {
    // A bad name past the limit is never reached: the list is refused for its length.
    const list = [...names(1000), 'bad name'].join(',');
    const res = await fetch(`${gw.url}/poll?channel=${list}&timeout=0`);
    expect(await errorOf(res)).toEqual({ status: 429, code: 'limit_exceeded' });
  });

  it('resumes a stream of 64 channels of 200 characters: the cursor comes back in a header or a query, beside a request line of about 38 KB', async () => {
    // Names of a character a URL percent-encodes (three bytes each), so that the request line is as long as it gets.
    const long = Array.from({ length: 64 }, (_, i) => `${String(i).padStart(2, '0')}${'@'.repeat(198)}`);
    const query = long.map((c) => `channel=${encodeURIComponent(c)}`).join('&');
    const first = await sse(query);
    await first.until((c) => c.events.some((e) => e.event === 'tidings:welcome'));
    await gw.publish(long[63] as string, 'first');
    await first.until((c) => c.named('message').length === 1);
    const id = first.events.at(-1)?.id ?? '';
    expect(id.length).toBeGreaterThan(12_000);
    first.close();
    await gw.publish(long[63] as string, 'missed');
    const again = await sse(query, id);
    await again.until((c) => c.named('message').length === 1);
    expect(JSON.parse(again.named('message')[0]?.data ?? '{}')).toMatchObject({ data: 'missed' });
    // A long poll sends the same cursor back in its query.
    const poll = await fetch(`${gw.url}/poll?${query}&cursor=${encodeURIComponent(id)}&timeout=0`);
    expect(poll.status).toBe(200);
    expect(((await poll.json()) as PollResponse).messages.map((m) => m.data)).toEqual(['missed']);
  });
});
