/**
 * Interoperability with the `eventsource` npm package (v4, a WHATWG-conformant EventSource for
 * Node): event order and ids, named events, and the package's own reconnect with `Last-Event-ID`
 * after the server drops the stream.
 */
import { EventSource } from 'eventsource';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseCursor, type Message, type Position } from '@tidings/protocol';
import { startGateway, type TestGateway } from '@tidings/testing';
import { entry, range, recordSseRequests, waitUntil } from './support.js';

/** What a listener saw: the event type, its data and `lastEventId`, and `readyState` at that moment. */
interface Seen {
  readonly type: string;
  readonly data: string;
  readonly lastEventId: string;
  readonly readyState: number;
  readonly at: number;
}

/** An EventSource from the package plus everything its listeners saw, in dispatch order. */
class Recorder {
  readonly seen: Seen[] = [];
  readonly es: EventSource;

  constructor(url: string, names: readonly string[]) {
    this.es = new EventSource(url);
    for (const name of ['open', 'error', 'tidings:welcome', 'tidings:gap', 'tidings:error', 'message', ...names]) {
      this.es.addEventListener(name, (e: Event) => {
        const m = e instanceof MessageEvent ? (e as MessageEvent<string>) : undefined;
        this.seen.push({ type: e.type, data: m?.data ?? '', lastEventId: m?.lastEventId ?? '', readyState: this.es.readyState, at: Date.now() });
      });
    }
  }

  named(type: string): Seen[] {
    return this.seen.filter((s) => s.type === type);
  }

  /** Publications received (any event whose data is a message), in order. */
  messages(): Message[] {
    return this.seen.filter((s) => !['open', 'error'].includes(s.type) && !s.type.startsWith('tidings:')).map((s) => JSON.parse(s.data) as Message);
  }

  until(predicate: (r: this) => boolean, timeoutMs = 5000): Promise<void> {
    return waitUntil(
      () => predicate(this),
      () => JSON.stringify(this.seen.map((s) => [s.type, s.lastEventId])).slice(0, 800),
      timeoutMs,
    );
  }
}

describe('eventsource npm package against /sse', () => {
  let gw: TestGateway;
  const open: Recorder[] = [];
  let n = 0;
  const channel = (): string => `es-pkg-${++n}`;
  const connect = (channels: string[], names: string[] = []): Recorder => {
    const r = new Recorder(`${gw.url}/sse?${channels.map((c) => `channel=${encodeURIComponent(c)}`).join('&')}`, names);
    open.push(r);
    return r;
  };
  /** Waits for the stream's welcome and returns the epoch of `channel` from its cursor. */
  const welcomed = async (r: Recorder, channel: string): Promise<string> => {
    await r.until((x) => x.named('tidings:welcome').length === 1);
    const welcome = r.named('tidings:welcome')[0] as Seen;
    const start = parseCursor(welcome.lastEventId).get(channel);
    expect(start?.seq).toBe(0);
    return (start as Position).epoch;
  };

  beforeAll(async () => {
    gw = await startGateway({ sseRetry: 100 });
  });
  afterEach(() => {
    for (const r of open.splice(0)) r.es.close();
  });
  afterAll(async () => {
    await gw.close();
  });

  it('receives publications in order, each with the cursor as lastEventId', async () => {
    const c = channel();
    const r = connect([c]);
    const epoch = await welcomed(r, c);
    const welcome = r.named('tidings:welcome')[0] as Seen;
    expect(welcome.lastEventId).toBe(`${c}=${epoch}.0`);
    expect(JSON.parse(welcome.data)).toEqual({ channels: [c], cursor: `${c}=${epoch}.0`, heartbeat: 15_000, session: expect.stringMatching(/^[0-9a-f]+-[0-9a-z]+$/) as unknown });

    // 40 publications: seqs 10 and up are written in base 36 ("a", ..., "10", "14").
    for (let i = 1; i <= 40; i++) {
      const result = await gw.publish(c, { i });
      expect(result).toEqual({ channel: c, position: { epoch, seq: i }, duplicate: false });
    }
    await r.until((x) => x.messages().length === 40);
    const events = r.named('message');
    expect(events.map((e) => e.lastEventId)).toEqual(range(1, 40).map((seq) => `${c}=${epoch}.${seq.toString(36)}`));
    expect(events[9]?.lastEventId).toBe(`${c}=${epoch}.a`);
    expect(events[35]?.lastEventId).toBe(`${c}=${epoch}.10`);
    expect(r.messages()).toEqual(range(1, 40).map((i) => ({ channel: c, position: { epoch, seq: i }, data: { i } })));
    expect(r.es.readyState).toBe(EventSource.OPEN);
    expect(r.named('error')).toEqual([]);
  });

  it('dispatches a typed publication as an event of that name, not to onmessage', async () => {
    const c = channel();
    const r = connect([c], ['chat.message', 'presence.join']);
    const onmessage: string[] = [];
    r.es.onmessage = (e: MessageEvent<string>) => onmessage.push(e.data);
    const epoch = await welcomed(r, c);

    await gw.publish(c, { text: 'hello' }, { type: 'chat.message' });
    await gw.publish(c, { plain: true });
    await gw.publish(c, { user: 'ada' }, { type: 'presence.join' });
    await r.until((x) => x.messages().length === 3);

    const delivered = r.seen.filter((s) => ['message', 'chat.message', 'presence.join'].includes(s.type));
    expect(delivered.map((s) => [s.type, s.lastEventId])).toEqual([
      ['chat.message', `${c}=${epoch}.1`],
      ['message', `${c}=${epoch}.2`],
      ['presence.join', `${c}=${epoch}.3`],
    ]);
    expect(r.messages()).toEqual([
      { channel: c, position: { epoch, seq: 1 }, type: 'chat.message', data: { text: 'hello' } },
      { channel: c, position: { epoch, seq: 2 }, data: { plain: true } },
      { channel: c, position: { epoch, seq: 3 }, type: 'presence.join', data: { user: 'ada' } },
    ]);
    // onmessage sees only the untyped publication.
    expect(onmessage.map((d) => (JSON.parse(d) as Message).position.seq)).toEqual([2]);
  });

  it('reconnects by itself after the server drops the stream, sends Last-Event-ID and gets exactly what it missed', async () => {
    const c = channel();
    const log = recordSseRequests(gw);
    try {
      const r = connect([c], ['chat.message']);
      const epoch = await welcomed(r, c);
      for (let i = 1; i <= 5; i++) await gw.publish(c, i, i % 2 === 0 ? { type: 'chat.message' } : {});
      await r.until((x) => x.messages().length === 5);
      const before = `${c}=${epoch}.5`;
      expect(r.seen.at(-1)?.lastEventId).toBe(before);

      const droppedAt = Date.now();
      gw.gateway.disconnectAll();
      // Published while the client is away, in one batch so it lands before the client is back.
      const batch = range(6, 12).map((i) => ({ channel: c, data: i, ...(i % 2 === 0 ? { type: 'chat.message' } : {}) }));
      const res = await fetch(`${gw.url}/api/publish`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer test-api-key-0123456789abcdef' },
        body: JSON.stringify(batch),
      });
      expect(res.status).toBe(200);
      const published = (await res.json()) as { results: { position: Position }[] };
      expect(published.results.map((x) => x.position.seq)).toEqual(range(6, 12));

      await r.until((x) => x.messages().length === 12);
      for (let i = 13; i <= 15; i++) await gw.publish(c, i);
      await r.until((x) => x.messages().length === 15);

      // Exactly once, in order, across the drop; types survive.
      expect(r.messages().map((m) => m.position.seq)).toEqual(range(1, 15));
      expect(r.messages().map((m) => m.data)).toEqual(range(1, 15));
      expect(r.messages().map((m) => m.type ?? 'message')).toEqual(range(1, 15).map((i) => (i % 2 === 0 && i <= 12 ? 'chat.message' : 'message')));
      expect(r.messages().every((m) => m.position.epoch === epoch)).toBe(true);

      // The event sequence: the server says why it closes, the package reports the drop, reconnects.
      const kinds = r.seen.map((s) => (s.type === 'chat.message' ? 'message' : s.type));
      expect(kinds).toEqual([
        'open',
        'tidings:welcome',
        ...Array<string>(5).fill('message'),
        'tidings:error',
        'error',
        'open',
        'tidings:welcome',
        ...Array<string>(10).fill('message'),
      ]);
      expect(JSON.parse(r.named('tidings:error')[0]?.data ?? '')).toEqual({ code: 'restart', reason: 'server restarting' });
      expect(r.named('error')[0]?.readyState).toBe(EventSource.CONNECTING);

      // The second request resumed from the last id, and its welcome restates that cursor.
      expect(log.requests.map((q) => q.lastEventId)).toEqual([undefined, before]);
      const rewelcome = r.named('tidings:welcome')[1] as Seen;
      expect(rewelcome.lastEventId).toBe(before);
      expect(JSON.parse(rewelcome.data)).toMatchObject({ channels: [c], cursor: before });
      expect(r.seen.at(-1)?.lastEventId).toBe(entry(c, { epoch, seq: 15 }));

      // The retry hint (100 ms + up to 50%) replaced the package's 3 s default.
      const delay = (log.requests[1]?.at ?? 0) - droppedAt;
      expect(delay).toBeGreaterThanOrEqual(90);
      expect(delay).toBeLessThan(2000);
    } finally {
      log.stop();
    }
  });
});
