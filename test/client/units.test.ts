/**
 * The client's pure parts: the state machine as a transition table, full-jitter backoff, the
 * sequencer under shuffled and duplicated input, the SSE parser, and type routing patterns.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_BACKOFF, Sequencer, SseParser, Subscription, transition, typeMatches, type ClientEvent, type ClientState } from '@tidings/client';
import type { Message } from '@tidings/protocol';

const E = 'epoch001';
const msg = (seq: number, epoch = E): Message => ({ channel: 'c', position: { epoch, seq }, data: seq });

describe('state machine', () => {
  const idle: ClientState = { status: 'idle' };
  const connecting: ClientState = { status: 'connecting', attempt: 2 };
  const connected: ClientState = { status: 'connected', transport: 'sse', attempt: 2 };
  const waiting: ClientState = { status: 'waiting', attempt: 3, retry: 'backoff' };
  const failed: ClientState = { status: 'failed', reason: 'bad token' };
  const closed: ClientState = { status: 'closed' };
  const ALL = [idle, connecting, connected, waiting, failed, closed];
  const drop: ClientEvent = { type: 'drop', retry: 'backoff', reason: 'x' };
  const stableDrop: ClientEvent = { type: 'drop', retry: 'backoff', reason: 'x', stable: true };

  it.each<[ClientState, ClientEvent, ClientState | undefined]>([
    [idle, { type: 'start' }, { status: 'connecting', attempt: 0 }],
    [connecting, { type: 'start' }, undefined],
    [waiting, { type: 'retry' }, { status: 'connecting', attempt: 3 }],
    [connected, { type: 'retry' }, undefined],
    [connecting, { type: 'open', transport: 'poll' }, { status: 'connected', transport: 'poll', attempt: 2 }],
    [waiting, { type: 'open', transport: 'poll' }, undefined],
    [connecting, drop, { status: 'waiting', attempt: 3, retry: 'backoff' }],
    [connecting, stableDrop, { status: 'waiting', attempt: 3, retry: 'backoff' }],
    // A connection lost before it proved stable is one more failed attempt: quick cycles back off.
    [connected, drop, { status: 'waiting', attempt: 3, retry: 'backoff' }],
    [{ status: 'connected', transport: 'websocket', attempt: 0 }, drop, { status: 'waiting', attempt: 1, retry: 'backoff' }],
    // A stable one starts the backoff afresh.
    [connected, stableDrop, { status: 'waiting', attempt: 0, retry: 'backoff' }],
    [connected, { type: 'drop', retry: 'now', reason: 'restart', stable: true }, { status: 'waiting', attempt: 0, retry: 'now' }],
    [connected, { type: 'drop', retry: 'now', reason: 'restart' }, { status: 'waiting', attempt: 3, retry: 'now' }],
    [waiting, drop, undefined],
    [connecting, { type: 'reject', reason: 'bad token' }, { status: 'failed', reason: 'bad token' }],
    [waiting, { type: 'reject', reason: 'bad token' }, undefined],
    [failed, { type: 'start' }, undefined],
    [failed, { type: 'close' }, closed],
    [closed, { type: 'close' }, undefined],
  ])('%o + %o -> %o', (state, event, next) => {
    expect(transition(state, event)).toEqual(next);
  });

  it('closed and failed are terminal for everything but close', () => {
    const event = fc.constantFrom<ClientEvent>(
      { type: 'start' },
      { type: 'retry' },
      { type: 'open', transport: 'websocket' },
      drop,
      { type: 'reject', reason: 'r' },
    );
    fc.assert(
      fc.property(event, (e) => {
        expect(transition(closed, e)).toBeUndefined();
        expect(transition(failed, e)).toBeUndefined();
      }),
    );
  });

  it('every sequence of events keeps the attempt count honest: failures since the last stable connection', () => {
    const events = fc.array(
      fc.constantFrom<ClientEvent>({ type: 'start' }, { type: 'retry' }, { type: 'open', transport: 'websocket' }, drop, stableDrop, { type: 'close' }),
      { maxLength: 60 },
    );
    fc.assert(
      fc.property(events, (list) => {
        let s: ClientState = { status: 'idle' };
        let failures = 0;
        for (const e of list) {
          const next = transition(s, e);
          if (next === undefined) continue;
          if (e.type === 'drop') {
            // Only the loss of a stable connection forgives earlier failures; everything else adds one.
            failures = s.status === 'connected' && e.stable === true ? 0 : failures + 1;
          }
          s = next;
          if (s.status === 'waiting' || s.status === 'connecting' || s.status === 'connected') expect(s.attempt).toBe(failures);
        }
        expect(ALL.map((x) => x.status)).toContain(s.status);
      }),
    );
  });

  it('quick connect/drop cycles never bring the attempt count back to 0', () => {
    let s: ClientState = { status: 'idle' };
    const attempts: number[] = [];
    for (const e of [{ type: 'start' }, ...Array.from({ length: 5 }, () => [{ type: 'open', transport: 'sse' }, drop, { type: 'retry' }]).flat()] as ClientEvent[]) {
      s = transition(s, e) ?? s;
      if (s.status === 'waiting') attempts.push(s.attempt);
    }
    expect(attempts).toEqual([1, 2, 3, 4, 5]);
  });
});

describe('backoff', () => {
  it('is uniform below an exponential cap bounded by max', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 60 }), fc.double({ min: 0, max: 0.999999, noNaN: true }), (attempt, r) => {
        const cap = Math.min(DEFAULT_BACKOFF.max, DEFAULT_BACKOFF.min * 2 ** attempt);
        const d = backoffDelay(DEFAULT_BACKOFF, attempt, () => r);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(cap);
        expect(d).toBe(Math.floor(r * cap));
      }),
    );
    expect(backoffDelay({ min: 100, max: 1000, factor: 3 }, 2, () => 0.5)).toBe(450);
    expect(backoffDelay({ min: 100, max: 1000, factor: 3 }, 10, () => 0.5)).toBe(500);
  });
});

describe('sequencer', () => {
  it('delivers 1..N exactly once and in order from any shuffled input with duplicates', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 60 }).chain((n) =>
          fc.tuple(fc.constant(n), fc.shuffledSubarray([...Array.from({ length: n }, (_, i) => i + 1), ...Array.from({ length: n }, (_, i) => i + 1)], { minLength: 2 * n })),
        ),
        ([n, input]) => {
          const s = new Sequencer({ epoch: E, seq: 0 });
          const out: number[] = [];
          for (const seq of input) out.push(...(s.push(msg(seq)) ?? []).map((m) => m.position.seq));
          expect(out).toEqual(Array.from({ length: n }, (_, i) => i + 1));
          expect(s.waiting).toBe(0);
          expect(s.position).toEqual({ epoch: E, seq: n });
        },
      ),
    );
  });

  it('releases what waits behind a gap, and refuses another epoch', () => {
    const s = new Sequencer({ epoch: E, seq: 1 });
    expect(s.push(msg(5))).toEqual([]);
    expect(s.push(msg(6))).toEqual([]);
    expect(s.skip({ channel: 'c', from: { epoch: E, seq: 1 }, to: { epoch: E, seq: 4 }, reason: 'trimmed' }).map((m) => m.position.seq)).toEqual([5, 6]);
    expect(s.push(msg(6))).toEqual([]);
    expect(s.push(msg(1, 'other'))).toBeUndefined();
  });

  it('ignores a gap that neither starts nor ends in its epoch: a stale one would move the position back', () => {
    const s = new Sequencer({ epoch: 'new', seq: 5 });
    expect(s.skip({ channel: 'c', from: { epoch: 'old', seq: 3 }, to: { epoch: 'old', seq: 9 }, reason: 'trimmed' })).toEqual([]);
    expect(s.position).toEqual({ epoch: 'new', seq: 5 });
    // A change of epoch starts where the client is.
    s.skip({ channel: 'c', from: { epoch: 'new', seq: 5 }, to: { epoch: 'newer', seq: 0 }, reason: 'epoch' });
    expect(s.position).toEqual({ epoch: 'newer', seq: 0 });
  });

  it('refuses to buffer without bound', () => {
    const s = new Sequencer({ epoch: E, seq: 0 }, 3);
    for (const seq of [3, 4, 5]) expect(s.push(msg(seq))).toEqual([]);
    expect(s.push(msg(6))).toBeUndefined();
  });
});

describe('a subscription\'s position', () => {
  it('is the message being handled, in its handler, whatever order messages and gaps arrived in', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }).chain((n) => fc.tuple(fc.constant(n), fc.shuffledSubarray(Array.from({ length: n }, (_, i) => i + 1), { minLength: n }), fc.integer({ min: 0, max: n }))),
        ([n, order, lost]) => {
          const owner = { remove: () => undefined, routed: () => undefined, presence: () => Promise.resolve([]), listenerError: (err: unknown) => { throw err; } };
          const sub = new Subscription('c', { epoch: E, seq: 0 }, owner, 100);
          const seen: Array<[number, number | undefined]> = [];
          sub.on('message', (m) => seen.push([m.position.seq, sub.position?.seq]));
          sub.on('gap', (g) => seen.push([-g.to.seq, sub.position?.seq]));
          // The first `lost` never come: a gap says so, wherever it falls among the others.
          const arrivals = order.filter((seq) => seq > lost);
          const gapAt = Math.floor(arrivals.length / 2);
          arrivals.forEach((seq, i) => {
            if (i === gapAt && lost > 0) sub.gap({ channel: 'c', from: { epoch: E, seq: 0 }, to: { epoch: E, seq: lost }, reason: 'trimmed' });
            sub.accept(msg(seq));
          });
          if (lost > 0 && gapAt >= arrivals.length) sub.gap({ channel: 'c', from: { epoch: E, seq: 0 }, to: { epoch: E, seq: lost }, reason: 'trimmed' });
          for (const [at, position] of seen) expect(position).toBe(Math.abs(at));
          expect(seen.filter(([at]) => at > 0).map(([at]) => at)).toEqual(Array.from({ length: n - lost }, (_, i) => lost + i + 1));
          expect(sub.position).toEqual({ epoch: E, seq: n });
        },
      ),
    );
  });
});

describe('a subscription iterated too slowly', () => {
  it('ends with limit_exceeded and is let go by the client, as an unsubscribe is', async () => {
    const removed: Subscription[] = [];
    const owner = { remove: (s: Subscription) => void removed.push(s), routed: () => undefined, presence: () => Promise.resolve([]), listenerError: () => undefined };
    const sub = new Subscription('c', { epoch: E, seq: 0 }, owner, 3);
    const it = sub[Symbol.asyncIterator]();
    for (let seq = 1; seq <= 4; seq++) sub.accept(msg(seq));
    expect(sub.active).toBe(false);
    expect(removed).toEqual([sub]);
    for (let seq = 1; seq <= 3; seq++) expect((await it.next()).value).toMatchObject({ position: { seq } });
    await expect(it.next()).rejects.toMatchObject({ code: 'limit_exceeded' });
  });
});

describe('sequencer on ephemeral channels', () => {
  const eph = (seq: number, epoch = E): Message => ({ channel: 'c', position: { epoch, seq }, data: seq, ephemeral: true });
  const seqs = (out: Message[] | undefined): number[] | undefined => out?.map((m) => m.position.seq);

  it('delivers at once across missed seqs, drops duplicates and stale ones, adopts a new epoch', () => {
    const s = new Sequencer({ epoch: E, seq: 2 });
    expect(seqs(s.push(eph(5)))).toEqual([5]);
    expect(seqs(s.push(eph(5)))).toEqual([]);
    expect(seqs(s.push(eph(4)))).toEqual([]);
    expect(seqs(s.push(eph(9)))).toEqual([9]);
    expect(s.waiting).toBe(0);
    expect(s.position).toEqual({ epoch: E, seq: 9 });
    // A new epoch (the stream was recreated) is taken as is: no resubscribe.
    expect(seqs(s.push(eph(1, 'epoch002')))).toEqual([1]);
    expect(s.position).toEqual({ epoch: 'epoch002', seq: 1 });
    // A straggler from the epoch left behind is stale.
    expect(seqs(s.push(eph(10)))).toEqual([]);
  });

  it("follows the server's start position after a resubscribe, since nothing before it can come", () => {
    const s = new Sequencer({ epoch: E, seq: 2 });
    s.start({ epoch: E, seq: 7 });
    expect(s.position).toEqual({ epoch: E, seq: 2 });
    expect(seqs(s.push(eph(3)))).toEqual([3]);
    s.start({ epoch: E, seq: 7 });
    expect(s.position).toEqual({ epoch: E, seq: 7 });
    s.start({ epoch: E, seq: 5 });
    expect(s.position).toEqual({ epoch: E, seq: 7 });
    expect(seqs(s.push(eph(6)))).toEqual([]);
    expect(seqs(s.push(eph(8)))).toEqual([8]);
  });

  it('hands over durable messages that were waiting when the channel turned ephemeral, in order', () => {
    const s = new Sequencer({ epoch: E, seq: 1 });
    for (const seq of [3, 4, 7]) expect(s.push(msg(seq))).toEqual([]);
    expect(seqs(s.push(eph(6)))).toEqual([3, 4, 6, 7]);
    expect(s.waiting).toBe(0);
    expect(s.position).toEqual({ epoch: E, seq: 7 });
  });

  it('for any interleaving: nothing held back, never a resubscribe, strictly increasing seqs per epoch, no duplicates', () => {
    const epochs = ['epochAAA', 'epochBBB', 'epochCCC'];
    const input = fc.array(fc.record({ epoch: fc.constantFrom(...epochs), seq: fc.integer({ min: 1, max: 40 }) }), { maxLength: 120 });
    const since = fc.option(fc.record({ epoch: fc.constantFrom(...epochs), seq: fc.integer({ min: 0, max: 40 }) }), { nil: undefined });
    fc.assert(
      fc.property(since, input, (start, list) => {
        const s = new Sequencer(start);
        const lastPerEpoch = new Map<string, number>();
        const delivered = new Set<string>();
        let position = start;
        const left: string[] = [];
        for (const { epoch, seq } of list) {
          const out = s.push(eph(seq, epoch));
          // The model: stale means at or below the position in its epoch, or from an epoch left behind.
          const stale = position !== undefined && (position.epoch === epoch ? seq <= position.seq : left.includes(epoch));
          expect(out).toBeDefined();
          expect(seqs(out)).toEqual(stale ? [] : [seq]);
          expect(s.waiting).toBe(0);
          if (!stale) {
            if (position !== undefined && position.epoch !== epoch) left.push(position.epoch);
            position = { epoch, seq };
            expect(seq).toBeGreaterThan(lastPerEpoch.get(epoch) ?? 0);
            lastPerEpoch.set(epoch, seq);
            expect(delivered.has(`${epoch}.${seq}`)).toBe(false);
            delivered.add(`${epoch}.${seq}`);
          }
          expect(s.position).toEqual(position);
        }
      }),
    );
  });

  it('leaves durable channels exactly as they were: another epoch still asks for a resubscribe', () => {
    const s = new Sequencer({ epoch: E, seq: 1 });
    expect(s.push(msg(3))).toEqual([]);
    expect(s.push(msg(1, 'other'))).toBeUndefined();
    s.start({ epoch: E, seq: 9 });
    expect(s.position).toEqual({ epoch: E, seq: 1 });
  });
});

describe('SSE parser', () => {
  it('parses events across arbitrary chunk boundaries and line endings', () => {
    const wire = 'retry: 1500\n: hb\n\nevent: chat.message\nid: c=e.1\ndata: {"a":1}\r\n\r\ndata: x\rdata: y\r\r';
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: wire.length - 1 }), { maxLength: 8 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        const p = new SseParser();
        const events = [];
        let at = 0;
        for (const cut of [...points, wire.length]) {
          events.push(...p.feed(wire.slice(at, cut)));
          at = cut;
        }
        events.push(...p.feed('\n'));
        expect(events).toEqual([
          { event: 'chat.message', data: '{"a":1}', id: 'c=e.1' },
          { event: 'message', data: 'x\ny', id: 'c=e.1' },
        ]);
        expect(p.retry).toBe(1500);
        expect(p.comments).toBe(1);
      }),
    );
  });
});

describe('type routing', () => {
  it.each([
    ['chat.*', 'chat.message', true],
    ['chat.*', 'chat.typing.start', true],
    ['chat.*', 'chat', false],
    ['chat.*', 'chatter.x', false],
    ['chat.message', 'chat.message', true],
    ['*', 'anything', true],
    ['news', 'news.x', false],
  ])('%s matches %s: %s', (pattern, type, expected) => {
    expect(typeMatches(pattern, type)).toBe(expected);
  });
});
