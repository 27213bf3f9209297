/**
 * Long polling at scale: a poll for one channel is parked in the channel's poll group, with no session,
 * broker subscribe, history read or unsubscribe of its own; every poller parked at a position gets the
 * same bytes; a poll a little behind is answered at once from the group's recent publications (never
 * beyond what history keeps); holds time out with the cursor unchanged; a client that goes away is let
 * go; and closing the gateway answers every parked poll.
 */
import { request, type IncomingMessage } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { formatCursorEntry, type Position } from '@tidings/protocol';
import { MemoryBroker, type AuthorizeHooks, type Broker, type HistoryPage } from '@tidings/server';
import { faultyBroker, signToken, startGateway, TEST_SECRET, type TestGateway } from '@tidings/testing';

/** A memory broker that counts the calls a poll could cost. */
class CountingBroker extends MemoryBroker {
  readonly calls = { subscribe: 0, unsubscribe: 0, history: 0 };
  override subscribe(channel: string): Promise<void> {
    this.calls.subscribe += 1;
    return super.subscribe(channel);
  }
  override unsubscribe(channel: string): Promise<void> {
    this.calls.unsubscribe += 1;
    return super.unsubscribe(channel);
  }
  override history(channel: string, since: Position | undefined, limit: number): Promise<HistoryPage> {
    this.calls.history += 1;
    return super.history(channel, since, limit);
  }
}

interface Answer {
  readonly status: number;
  readonly raw: string;
  readonly body: { messages: Array<{ data: unknown; position: Position }>; gaps: Array<{ reason: string; from: Position; to: Position }>; cursor: string };
}

/** One poll; resolves with the answer. `abort` cuts it. */
function poll(gw: TestGateway, query: string, headers: Record<string, string> = {}): { answer: Promise<Answer>; abort: () => void } {
  let cut = (): void => undefined;
  const answer = new Promise<Answer>((resolve, reject) => {
    const req = request(`${gw.url}/poll?${query}`, { agent: false, headers }, (res: IncomingMessage) => {
      let raw = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (raw += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, raw, body: JSON.parse(raw) as Answer['body'] }));
    });
    req.on('error', reject);
    req.end();
    cut = () => req.destroy();
  });
  return { answer, abort: () => cut() };
}

const cursorOf = (channel: string, p: Position): string => `cursor=${encodeURIComponent(formatCursorEntry(channel, p))}`;

async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const open: TestGateway[] = [];
afterEach(async () => {
  for (const gw of open.splice(0)) await gw.close();
});

async function gateway(config = {}): Promise<{ gw: TestGateway; broker: CountingBroker }> {
  const broker = new CountingBroker({ maxChannels: 1000, dedupMaxKeys: 100 });
  const gw = await startGateway({ channelLinger: 60_000, ...config }, { broker });
  open.push(gw);
  return { gw, broker };
}

/** The first poll of a channel takes the ordinary path and starts its group; waits until the group is ready. */
async function startGroup(gw: TestGateway, channel: string, headers: Record<string, string> = {}): Promise<Position> {
  const groups = gw.gateway.stats().polls.groups;
  const first = await gw.publish(channel, 'start');
  await poll(gw, `channel=${channel}&timeout=0`, headers).answer;
  await until(() => gw.gateway.stats().polls.groups === groups + 1, 'the poll group');
  // Ready once a poll at the latest position parks instead of taking the ordinary path.
  for (;;) {
    const p = poll(gw, `channel=${channel}&${cursorOf(channel, first.position)}&timeout=50`, headers);
    const parked = await Promise.race([p.answer.then(() => false), until(() => gw.gateway.stats().polls.parked > 0, 'parked', 40).then(() => true, () => false)]);
    await p.answer;
    if (parked) return first.position;
  }
}

/**
 * 40 pollers of `channels` follow 10 publications to 'news' from `cursor`, each asking again at once;
 * every one gets all 10 in order, and no poll is refused.
 */
async function fortyFollow(gw: TestGateway, channels: string, cursor: string): Promise<void> {
  const follow = async (): Promise<{ got: unknown[]; statuses: number[] }> => {
    const got: unknown[] = [];
    const statuses: number[] = [];
    let at = cursor;
    while (got.length < 10) {
      const { status, body } = await poll(gw, `channel=${channels}&cursor=${encodeURIComponent(at)}&timeout=5000`).answer;
      statuses.push(status);
      if (status !== 200) break;
      got.push(...body.messages.map((m) => m.data));
      at = body.cursor;
    }
    return { got, statuses };
  };
  const pollers = Array.from({ length: 40 }, follow);
  await until(() => gw.gateway.stats().polls.parked === 40, 'all held');
  for (let n = 1; n <= 10; n++) {
    await gw.publish('news', n);
    await new Promise((r) => setTimeout(r, 20));
  }
  const followed = await Promise.all(pollers);
  expect(followed.reduce((n, f) => n + f.statuses.length, 0)).toBeGreaterThan(40);
  for (const { got, statuses } of followed) {
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(got).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  }
}

describe('long polls and the connect rate', () => {
  it('a poll its group takes is no new connection: 40 pollers follow 10 publications at a connect rate of 5 per second, none refused', async () => {
    const { gw } = await gateway({ maxConnectRate: 5 });
    const at = await startGroup(gw, 'news');
    await fortyFollow(gw, 'news', formatCursorEntry('news', at));
    // A poll no group takes (a channel without one) starts a session: a new connection, which the rate holds.
    const fresh = await Promise.all(Array.from({ length: 12 }, (_, i) => poll(gw, `channel=fresh${i}&timeout=0`).answer));
    const refused = fresh.filter((a) => a.status === 503);
    expect(refused.length).toBeGreaterThanOrEqual(5);
    expect(refused[0]?.body).toMatchObject({ error: { code: 'unavailable' } });
  });
});

describe('catch-up answers of a poll group', () => {
  it('hold about maxBufferedBytes of messages each (at least one); following the cursor gets every one, from the group', async () => {
    const bound = 32 * 1024;
    const { gw, broker } = await gateway({ maxBufferedBytes: bound, namespaces: { '': { historySize: 100 } } });
    let at = await startGroup(gw, 'news');
    const big = 'g'.repeat(8 * 1024);
    for (let n = 1; n <= 30; n++) await gw.publish('news', { n, big });
    const before = { ...broker.calls };
    const got: number[] = [];
    for (let round = 0; round < 40 && got.length < 30; round++) {
      const { status, raw, body } = await poll(gw, `channel=news&${cursorOf('news', at)}&timeout=0`).answer;
      expect(status).toBe(200);
      if (body.messages.length > 1) expect(raw.length).toBeLessThanOrEqual(bound + 1024);
      got.push(...body.messages.map((m) => (m.data as { n: number }).n));
      at = body.messages.at(-1)?.position ?? at;
    }
    expect(got).toEqual(Array.from({ length: 30 }, (_, k) => k + 1));
    expect(broker.calls).toEqual(before);
  });

  it('made anew for a position cost the poll a token of the connect rate; one already made for it costs nothing', async () => {
    const { gw } = await gateway({ maxConnectRate: 3 });
    const at = await startGroup(gw, 'news');
    for (let n = 1; n <= 20; n++) await gw.publish('news', n);
    // The bucket (3, and 3 a second) is full again.
    await new Promise((r) => setTimeout(r, 1100));
    const behind = (seq: number): Promise<Answer> => poll(gw, `channel=news&${cursorOf('news', { epoch: at.epoch, seq })}&timeout=0`).answer;
    const same = await Promise.all(Array.from({ length: 12 }, () => behind(at.seq)));
    expect(same.map((a) => a.status)).toEqual(Array.from({ length: 12 }, () => 200));
    const distinct = await Promise.all(Array.from({ length: 12 }, (_, i) => behind(at.seq + 1 + i)));
    const refused = distinct.filter((a) => a.status === 503);
    expect(refused.length).toBeGreaterThanOrEqual(8);
    expect(refused[0]?.body).toMatchObject({ error: { code: 'unavailable' } });
  });
});

describe('long polling through poll groups', () => {
  it('parks 300 polls with no session or broker call each, and answers them all with the same bytes', async () => {
    const { gw, broker } = await gateway();
    const at = await startGroup(gw, 'news');
    const before = { ...broker.calls };
    const polls = Array.from({ length: 300 }, () => poll(gw, `channel=news&${cursorOf('news', at)}`));
    await until(() => gw.gateway.stats().polls.parked === 300, 'all parked');
    expect(gw.gateway.stats().sessions).toBe(0);
    const published = await gw.publish('news', { n: 1 });
    const answers = await Promise.all(polls.map((p) => p.answer));
    expect(new Set(answers.map((a) => a.raw)).size).toBe(1);
    expect(answers[0]?.status).toBe(200);
    expect(answers[0]?.body.messages.map((m) => m.data)).toEqual([{ n: 1 }]);
    expect(answers[0]?.body.cursor).toBe(formatCursorEntry('news', published.position));
    // Three hundred polls and their answers cost the broker nothing.
    expect(broker.calls).toEqual(before);
    // The next round, from the new cursor, costs nothing either.
    const again = Array.from({ length: 50 }, () => poll(gw, `channel=news&${cursorOf('news', published.position)}`));
    await until(() => gw.gateway.stats().polls.parked === 50, 'parked again');
    await gw.publish('news', { n: 2 });
    for (const a of await Promise.all(again.map((p) => p.answer))) expect(a.body.messages.map((m) => m.data)).toEqual([{ n: 2 }]);
    expect(broker.calls).toEqual(before);
  }, 30_000);

  it('answers a poll a little behind at once from recent publications, exactly what it missed', async () => {
    const { gw, broker } = await gateway();
    const at = await startGroup(gw, 'news');
    const published = [];
    for (let i = 1; i <= 5; i++) published.push(await gw.publish('news', i));
    await until(() => gw.gateway.stats().hub.channels === 1, 'joined');
    const before = { ...broker.calls };
    const behind = published[1]?.position as Position;
    const a = await poll(gw, `channel=news&${cursorOf('news', behind)}`).answer;
    expect(a.body.messages.map((m) => m.data)).toEqual([3, 4, 5]);
    expect(a.body.gaps).toEqual([]);
    expect(a.body.cursor).toBe(formatCursorEntry('news', published[4]?.position as Position));
    expect(broker.calls).toEqual(before);
    // From before the group started: the ordinary path, with history.
    const old = await poll(gw, `channel=news&${cursorOf('news', { ...at, seq: 0 })}`).answer;
    expect(old.body.messages.map((m) => m.data)).toEqual(['start', 1, 2, 3, 4, 5]);
    expect(broker.calls.history).toBeGreaterThan(before.history);
  });

  it('never answers from publications the history no longer keeps: a gap, as on the ordinary path', async () => {
    const { gw } = await gateway({ namespaces: { '': { historySize: 3 } } });
    await startGroup(gw, 'news');
    const published = [];
    for (let i = 1; i <= 6; i++) published.push(await gw.publish('news', i));
    const a = await poll(gw, `channel=news&${cursorOf('news', published[0]?.position as Position)}`).answer;
    expect(a.body.gaps.map((g) => g.reason)).toEqual(['trimmed']);
    expect(a.body.messages.map((m) => m.data)).toEqual([4, 5, 6]);
  });

  it('times out with the cursor unchanged, lets go of a poll whose client left, and answers parked polls on close', async () => {
    const { gw } = await gateway();
    const at = await startGroup(gw, 'news');
    const timed = await poll(gw, `channel=news&${cursorOf('news', at)}&timeout=200`).answer;
    expect(timed.body).toEqual({ messages: [], gaps: [], cursor: formatCursorEntry('news', at) });
    const left = poll(gw, `channel=news&${cursorOf('news', at)}`);
    left.answer.catch(() => undefined);
    await until(() => gw.gateway.stats().polls.parked === 1, 'parked');
    left.abort();
    await until(() => gw.gateway.stats().polls.parked === 0, 'let go');
    const held = Array.from({ length: 5 }, () => poll(gw, `channel=news&${cursorOf('news', at)}`));
    await until(() => gw.gateway.stats().polls.parked === 5, 'parked');
    await gw.close();
    for (const a of await Promise.all(held.map((p) => p.answer))) expect(a.body).toEqual({ messages: [], gaps: [], cursor: formatCursorEntry('news', at) });
  });
});

describe('what poll groups hold', () => {
  it('no place of a poll that timed out on a quiet channel for long: its lists stay within twice the parked polls, and a few', async () => {
    const { gw } = await gateway();
    const at = await startGroup(gw, 'quiet');
    for (let round = 0; round < 5; round++) {
      const polls = Array.from({ length: 100 }, () => poll(gw, `channel=quiet&${cursorOf('quiet', at)}&timeout=20`));
      for (const a of await Promise.all(polls.map((p) => p.answer))) expect(a.body).toEqual({ messages: [], gaps: [], cursor: formatCursorEntry('quiet', at) });
    }
    const { parked, listed, queued } = gw.gateway.stats().polls;
    expect(parked).toBe(0);
    expect(listed).toBeLessThanOrEqual(64);
    expect(queued).toBeLessThanOrEqual(64);
  }, 30_000);

  it('at most maxPollGroupBytes over all groups: past it a group keeps fewer, and a poll further behind takes the ordinary path, missing nothing', async () => {
    const max = 100 * 1024;
    const { gw, broker } = await gateway({ maxPollGroupBytes: max, namespaces: { '': { historySize: 100 } } });
    const channels = ['a', 'b', 'c', 'd'];
    const starts = new Map<string, Position>();
    for (const ch of channels) starts.set(ch, await startGroup(gw, ch));
    const big = 'h'.repeat(8 * 1024);
    const positions = new Map<string, Position[]>(channels.map((ch) => [ch, []]));
    let most = 0;
    for (let n = 1; n <= 20; n++) {
      for (const ch of channels) {
        positions.get(ch)?.push((await gw.publish(ch, { n, big })).position);
        most = Math.max(most, gw.gateway.stats().polls.bytes);
      }
    }
    // Four channels of 20 x 8 KB each: 640 KB held without the bound.
    expect(most).toBeGreaterThan(max / 2);
    expect(most).toBeLessThanOrEqual(max);
    const before = { ...broker.calls };
    for (const ch of channels) {
      // One behind: from the group, with no broker call.
      const oneBehind = await poll(gw, `channel=${ch}&${cursorOf(ch, positions.get(ch)?.[18] as Position)}`).answer;
      expect(oneBehind.body.messages.map((m) => (m.data as { n: number }).n)).toEqual([20]);
      expect(gw.gateway.stats().polls.bytes).toBeLessThanOrEqual(max);
    }
    expect(broker.calls).toEqual(before);
    for (const ch of channels) {
      // From the start: further behind than the group keeps, so from history, every one in order.
      const all = await poll(gw, `channel=${ch}&${cursorOf(ch, starts.get(ch) as Position)}`).answer;
      expect(all.body.gaps).toEqual([]);
      expect(all.body.messages.map((m) => (m.data as { n: number }).n)).toEqual(Array.from({ length: 20 }, (_, k) => k + 1));
    }
    expect(broker.calls.history).toBeGreaterThanOrEqual(before.history + channels.length);
    expect(gw.gateway.stats().polls.bytes).toBeLessThanOrEqual(max);
    // Ended groups hold nothing.
    await gw.close();
    expect(gw.gateway.stats().polls).toMatchObject({ groups: 0, bytes: 0 });
  });

  it('at 0, a group keeps no recent publication: polls at the latest position are still parked and answered with the same bytes', async () => {
    const { gw, broker } = await gateway({ maxPollGroupBytes: 0 });
    const at = await startGroup(gw, 'news');
    const before = { ...broker.calls };
    const polls = Array.from({ length: 20 }, () => poll(gw, `channel=news&${cursorOf('news', at)}`));
    await until(() => gw.gateway.stats().polls.parked === 20, 'all parked');
    await gw.publish('news', 1);
    const answers = await Promise.all(polls.map((p) => p.answer));
    expect(new Set(answers.map((a) => a.raw)).size).toBe(1);
    expect(answers[0]?.body.messages.map((m) => m.data)).toEqual([1]);
    expect(broker.calls).toEqual(before);
    expect(gw.gateway.stats().polls.bytes).toBe(0);
    // Behind: the ordinary path.
    const behind = await poll(gw, `channel=news&${cursorOf('news', at)}`).answer;
    expect(behind.body.messages.map((m) => m.data)).toEqual([1]);
    expect(broker.calls.history).toBe(before.history + 1);
  });
});

describe('parked polls with credentials that expire', () => {
  const bearer = async (seconds: number, channels = ['user:alice']): Promise<Record<string, string>> => {
    const token = await signToken({ sub: 'alice', channels }, { expiresIn: seconds });
    return { authorization: `Bearer ${token}` };
  };
  const jwtGateway = (): Promise<{ gw: TestGateway }> => gateway({ auth: { jwt: { secret: TEST_SECRET } }, namespaces: { user: {} } });

  it('holds a poll whose token is valid for weeks for its whole hold (no timer beyond 2^31 ms firing at once)', async () => {
    const { gw } = await jwtGateway();
    const headers = await bearer(30 * 24 * 3600);
    const at = await startGroup(gw, 'user:alice', headers);
    const started = Date.now();
    const p = poll(gw, `channel=user:alice&${cursorOf('user:alice', at)}&timeout=600`, headers);
    await until(() => gw.gateway.stats().polls.parked === 1, 'parked');
    const a = await p.answer;
    expect(Date.now() - started).toBeGreaterThanOrEqual(550);
    expect(a.status).toBe(200);
    expect(a.body.messages).toEqual([]);
    expect(a.body.cursor).toBe(formatCursorEntry('user:alice', at));
  });

  it('answers a parked poll at its token\'s expiry, within the hold, with the cursor unchanged', async () => {
    const { gw } = await jwtGateway();
    const headers = await bearer(2);
    const at = await startGroup(gw, 'user:alice', headers);
    const p = poll(gw, `channel=user:alice&${cursorOf('user:alice', at)}&timeout=20000`, headers);
    await until(() => gw.gateway.stats().polls.parked === 1, 'parked');
    const started = Date.now();
    const a = await p.answer;
    // `exp` has whole seconds: expiry comes within about two seconds, long before the hold of 20.
    expect(Date.now() - started).toBeLessThan(4000);
    expect(a.status).toBe(200);
    expect(a.body.messages).toEqual([]);
    expect(a.body.cursor).toBe(formatCursorEntry('user:alice', at));
  }, 10_000);

  it('answers a parked poll of several channels at its token\'s expiry once, with every cursor unchanged', async () => {
    const { gw } = await jwtGateway();
    const headers = await bearer(2, ['user:alice', 'user:team']);
    const at = await startGroup(gw, 'user:alice', headers);
    const team = await startGroup(gw, 'user:team', headers);
    const cursor = `${formatCursorEntry('user:alice', at)},${formatCursorEntry('user:team', team)}`;
    const p = poll(gw, `channel=user:alice,user:team&cursor=${encodeURIComponent(cursor)}&timeout=20000`, headers);
    await until(() => gw.gateway.stats().polls.places === 2, 'parked in both groups');
    expect(gw.gateway.stats().polls.parked).toBe(1);
    expect(gw.gateway.stats().sessions).toBe(0);
    const started = Date.now();
    const a = await p.answer;
    // `exp` has whole seconds: expiry comes within about two seconds, long before the hold of 20.
    expect(Date.now() - started).toBeLessThan(4000);
    expect(a.status).toBe(200);
    expect(a.body.messages).toEqual([]);
    expect(a.body.cursor).toBe(cursor);
    expect(gw.gateway.stats().polls.parked).toBe(0);
  }, 10_000);
});

describe('polls of several channels through poll groups', () => {
  const cursorText = (positions: ReadonlyMap<string, Position>): string => [...positions].map(([ch, p]) => formatCursorEntry(ch, p)).join(',');
  async function groups(gw: TestGateway, channels: readonly string[]): Promise<Map<string, Position>> {
    const at = new Map<string, Position>();
    for (const ch of channels) at.set(ch, await startGroup(gw, ch));
    return at;
  }

  it('held ones are no new connections: 40 pollers of two channels follow 10 publications at a connect rate of 5 per second, none refused', async () => {
    const { gw } = await gateway({ maxConnectRate: 5 });
    const at = await groups(gw, ['news', 'other']);
    await fortyFollow(gw, 'news,other', cursorText(at));
  });

  it('a forged cursor (ahead, another epoch) is not the groups\' to answer: the ordinary path refuses or reports it, as for any poll', async () => {
    const { gw, broker } = await gateway();
    const at = await groups(gw, ['a', 'b']);
    const b = at.get('b') as Position;
    const before = { ...broker.calls };
    const ahead = await poll(gw, `channel=a,b&cursor=${encodeURIComponent(cursorText(new Map([...at, ['b', { ...b, seq: b.seq + 5 }]])))}&timeout=0`).answer;
    expect(ahead.status).toBe(400);
    expect(ahead.body).toMatchObject({ error: { code: 'bad_position' } });
    const other = await poll(gw, `channel=a,b&cursor=${encodeURIComponent(cursorText(new Map([...at, ['b', { epoch: 'zzzzzzzz', seq: 3 }]])))}&timeout=0`).answer;
    expect(other.status).toBe(200);
    expect(other.body.gaps.map((g) => [(g as unknown as { channel: string }).channel, g.reason])).toEqual([['b', 'epoch']]);
    // Both went the ordinary path: history was read for them.
    expect(broker.calls.history).toBeGreaterThan(before.history);
  });

  it('more channels than maxSubscriptions are refused whether or not their groups are ready', async () => {
    const { gw } = await gateway({ maxSubscriptions: 2 });
    const refused = async (): Promise<void> => {
      const a = await poll(gw, 'channel=a,b,c&timeout=0').answer;
      expect(a.status).toBe(429);
      expect(a.body).toMatchObject({ error: { code: 'limit_exceeded' } });
    };
    await refused();
    await groups(gw, ['a', 'b', 'c']);
    await refused();
    await refused();
  });

  it('the first takes the ordinary path and starts a group for each of its channels', async () => {
    const { gw } = await gateway();
    const a = await poll(gw, 'channel=x,y,z&timeout=0').answer;
    expect(a.status).toBe(200);
    await until(() => gw.gateway.stats().polls.groups === 3, 'three groups');
  });

  it('holds 100 polls of three channels in every group, with no session or broker call, and answers them with the same bytes at the first news; the other groups let them go', async () => {
    const { gw, broker } = await gateway();
    const at = await groups(gw, ['a', 'b', 'c']);
    const before = { ...broker.calls };
    const polls = Array.from({ length: 100 }, () => poll(gw, `channel=a,b,c&cursor=${encodeURIComponent(cursorText(at))}`));
    await until(() => gw.gateway.stats().polls.places === 300, 'held in three groups');
    expect(gw.gateway.stats().polls.parked).toBe(100);
    expect(gw.gateway.stats().sessions).toBe(0);
    const published = await gw.publish('b', { n: 1 });
    const answers = await Promise.all(polls.map((p) => p.answer));
    expect(new Set(answers.map((a) => a.raw)).size).toBe(1);
    expect(answers[0]?.status).toBe(200);
    expect(answers[0]?.body.messages.map((m) => m.data)).toEqual([{ n: 1 }]);
    expect(answers[0]?.body.cursor).toBe(cursorText(new Map([...at, ['b', published.position]])));
    expect(gw.gateway.stats().polls).toMatchObject({ parked: 0 });
    expect(broker.calls).toEqual(before);
  });

  it('answers with the news of every channel in the turn: one answer with every message, each cursor moved', async () => {
    const { gw, broker } = await gateway();
    const at = await groups(gw, ['a', 'b', 'c']);
    const polls = Array.from({ length: 20 }, () => poll(gw, `channel=a,b,c&cursor=${encodeURIComponent(cursorText(at))}`));
    await until(() => gw.gateway.stats().polls.places === 60, 'held in three groups');
    // Both in one turn (the memory broker fans out as it publishes).
    const [pa, pb] = await Promise.all(['a', 'b'].map((channel) => broker.publish({ channel, data: JSON.stringify(channel), type: undefined, idempotencyKey: undefined })));
    const answers = await Promise.all(polls.map((p) => p.answer));
    expect(new Set(answers.map((a) => a.raw)).size).toBe(1);
    expect(answers[0]?.body.messages.map((m) => m.data).sort()).toEqual(['a', 'b']);
    expect(answers[0]?.body.cursor).toBe(cursorText(new Map([...at, ['a', pa?.position as Position], ['b', pb?.position as Position]])));
    expect(gw.gateway.stats().polls).toMatchObject({ parked: 0, places: 0 });
  });

  it('a catch-up answer made anew costs the poll a token of the connect rate; one already made for the same cursor, while the groups are unchanged, costs nothing', async () => {
    const { gw } = await gateway({ maxConnectRate: 3 });
    const at = await groups(gw, ['a', 'b']);
    for (let n = 1; n <= 20; n++) await gw.publish('a', n);
    // The bucket (3, and 3 a second) is full again.
    await new Promise((r) => setTimeout(r, 1100));
    const behind = (seq: number): Promise<Answer> => poll(gw, `channel=a,b&cursor=${encodeURIComponent(cursorText(new Map([...at, ['a', { ...(at.get('a') as Position), seq }]])))}&timeout=0`).answer;
    const a0 = (at.get('a') as Position).seq;
    const same = await Promise.all(Array.from({ length: 12 }, () => behind(a0)));
    expect(same.map((x) => x.status)).toEqual(Array.from({ length: 12 }, () => 200));
    expect(new Set(same.map((x) => x.raw)).size).toBe(1);
    expect(same[0]?.body.messages.map((m) => m.data)).toEqual(Array.from({ length: 20 }, (_, k) => k + 1));
    // A publication to one of the channels changes what the answer is: it is made anew.
    await gw.publish('b', 'x');
    const after = await behind(a0);
    expect(after.body.messages.map((m) => m.data)).toEqual([...Array.from({ length: 20 }, (_, k) => k + 1), 'x']);
    const distinct = await Promise.all(Array.from({ length: 12 }, (_, i) => behind(a0 + 1 + i)));
    const refused = distinct.filter((x) => x.status === 503);
    expect(refused.length).toBeGreaterThanOrEqual(8);
  });

  it('answers a poll behind on some channels at once from the groups, within the answer limits; following the cursor gets each channel\'s publications once, in order, with no broker call', async () => {
    const bound = 32 * 1024;
    const { gw, broker } = await gateway({ maxBufferedBytes: bound, namespaces: { '': { historySize: 100 } } });
    let at = await groups(gw, ['a', 'b', 'c']);
    const big = 'j'.repeat(4 * 1024);
    for (let n = 1; n <= 12; n++) {
      await gw.publish('a', { n, big });
      await gw.publish('c', { n, big });
    }
    const before = { ...broker.calls };
    const got = new Map<string, number[]>([['a', []], ['b', []], ['c', []]]);
    for (let round = 0; round < 20 && (got.get('a')?.length !== 12 || got.get('c')?.length !== 12); round++) {
      const { status, raw, body } = await poll(gw, `channel=a,b,c&cursor=${encodeURIComponent(cursorText(at))}&timeout=0`).answer;
      expect(status).toBe(200);
      if (body.messages.length > 1) expect(raw.length).toBeLessThanOrEqual(bound + 1024);
      for (const m of body.messages) got.get((m as unknown as { channel: string }).channel)?.push((m.data as { n: number }).n);
      at = new Map(body.cursor.split(',').map((entry) => {
        const ch = entry.slice(0, entry.indexOf('='));
        return [ch, body.messages.filter((m) => (m as unknown as { channel: string }).channel === ch).at(-1)?.position ?? (at.get(ch) as Position)];
      }));
      expect([...at.keys()]).toEqual(['a', 'b', 'c']);
    }
    const all = Array.from({ length: 12 }, (_, k) => k + 1);
    expect(Object.fromEntries(got)).toEqual({ a: all, b: [], c: all });
    expect(broker.calls).toEqual(before);
  });

  it('times out with every cursor unchanged, lets go of a poll whose client left in every group, and answers held polls on close', async () => {
    const { gw } = await gateway();
    const at = await groups(gw, ['a', 'b']);
    const cursor = encodeURIComponent(cursorText(at));
    const timed = await poll(gw, `channel=a,b&cursor=${cursor}&timeout=200`).answer;
    expect(timed.body).toEqual({ messages: [], gaps: [], cursor: cursorText(at) });
    const left = poll(gw, `channel=a,b&cursor=${cursor}`);
    left.answer.catch(() => undefined);
    await until(() => gw.gateway.stats().polls.places === 2, 'held');
    left.abort();
    await until(() => gw.gateway.stats().polls.parked === 0, 'let go in both groups');
    const held = Array.from({ length: 5 }, () => poll(gw, `channel=a,b&cursor=${cursor}`));
    await until(() => gw.gateway.stats().polls.places === 10, 'held');
    await gw.close();
    for (const a of await Promise.all(held.map((p) => p.answer))) expect(a.body).toEqual({ messages: [], gaps: [], cursor: cursorText(at) });
  });
});

describe('a gap that comes after publications, in one turn', () => {
  /**
   * Publishes 'a', then 'b', 'c', 'd' (lost live, 'b' and 'c' trimmed from history too), then 'e', all
   * in one turn: the node's feed delivers 'a', then (repairing the hole from history) the gap b..c, 'd' and 'e'.
   */
  async function setup(parts: { authorize?: AuthorizeHooks } = {}): Promise<{ gw: TestGateway; at: Position; broker: Broker }> {
    const lost = new Set(['"b"', '"c"', '"d"']);
    const broker = faultyBroker(new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 100 }), { dropLive: (pub) => lost.has(pub.data) });
    const gw = await startGateway({ channelLinger: 60_000, namespaces: { '': { historySize: 2 } } }, { broker, ...parts });
    open.push(gw);
    return { gw, at: parts.authorize === undefined ? await startGroup(gw, 'news') : { epoch: '', seq: 0 }, broker };
  }
  const burst = (broker: Broker, channel: string): Promise<unknown> =>
    Promise.all(['a', 'b', 'c', 'd', 'e'].map((x) => broker.publish({ channel, data: JSON.stringify(x), type: undefined, idempotencyKey: undefined })));

  it('a parked poll gets the publications before the gap alone; the next poll gets the gap, then what followed', async () => {
    const { gw, at, broker } = await setup();
    const p = poll(gw, `channel=news&${cursorOf('news', at)}`);
    await until(() => gw.gateway.stats().polls.parked === 1, 'parked');
    await burst(broker, 'news');
    const first = await p.answer;
    // Gaps come before messages in an answer: 'a' with the gap after it would read as given up.
    expect(first.body.messages.map((m) => m.data)).toEqual(['a']);
    expect(first.body.gaps).toEqual([]);
    const second = await poll(gw, `channel=news&cursor=${encodeURIComponent(first.body.cursor)}`).answer;
    expect(second.body.gaps.map((g) => [g.reason, g.from.seq, g.to.seq])).toEqual([['trimmed', at.seq + 1, at.seq + 3]]);
    expect(second.body.messages.map((m) => m.data)).toEqual(['d', 'e']);
  });

  it.each([
    ['held in both channels\' groups', {}],
    // A subscribe hook is asked on the ordinary path only: no poll group takes these polls.
    ['a session of its own', { authorize: { subscribe: () => true } }],
  ])('a poll of several channels (%s) is answered the same way', async (_path, parts: { authorize?: AuthorizeHooks }) => {
    const { gw, broker } = await setup(parts);
    if (parts.authorize === undefined) await startGroup(gw, 'other');
    const start = await poll(gw, 'channel=news,other&timeout=0').answer;
    const p = poll(gw, `channel=news,other&cursor=${encodeURIComponent(start.body.cursor)}`);
    if (parts.authorize === undefined) await until(() => gw.gateway.stats().polls.places === 2 && gw.gateway.stats().sessions === 0, 'held');
    else await until(() => gw.gateway.stats().sessions === 1 && gw.gateway.stats().hub.channels === 2, 'subscribed');
    await burst(broker, 'news');
    const first = await p.answer;
    expect(first.body.messages.map((m) => m.data)).toEqual(['a']);
    expect(first.body.gaps).toEqual([]);
    const second = await poll(gw, `channel=news,other&cursor=${encodeURIComponent(first.body.cursor)}`).answer;
    expect(second.body.gaps.map((g) => g.reason)).toEqual(['trimmed']);
    expect(second.body.messages.map((m) => m.data)).toEqual(['d', 'e']);
  });
});
