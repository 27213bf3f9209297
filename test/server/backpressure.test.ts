/**
 * Per-namespace backpressure for slow consumers (`backpressure: 'drop' | 'conflate' | 'disconnect'`).
 *
 * Over real sockets, with clients that stop reading: a slow consumer never holds up a fast one; a
 * `drop` namespace leaves publications out for the slow one and keeps it connected; a `conflate`
 * namespace delivers the latest value per channel and `type` once the slow one reads again (in
 * order, no gap); a `disconnect` namespace closes the slow one 4001 and it resumes through `since`
 * without losing anything. In the session, without a network: the order and bound of what is held
 * back, partial flushes under the bound, which policy a namespace gets, and (fast-check) a resume's
 * replay handed over at most half the bound ahead of the sink, once, in order, live ones after, over
 * random histories, drains, residues and live publications. At start-up: `drop` and
 * `conflate` are refused where the namespace keeps history.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CloseCode, formatCursorEntry, type CloseName, type Gap, type Message, type Position, type RequestId, type SubscribeResult } from '@tidings/protocol';
import { CounterMetrics, MemoryBroker, openAuth, resolveOptions, type GatewayConfig } from '@tidings/server';
import { brokerSettings, cleanupAfterEach, configProblems, publishCommand, RawSseClient, RawWsClient, startGateway, TEST_API_KEY, until, type TestGateway } from '@tidings/testing';
import type { EncodedPublication } from '../../packages/server/src/encoded.js';
import { Hub } from '../../packages/server/src/hub.js';
import { Presence } from '../../packages/server/src/presence.js';
import { CONFLATE_KEYS_PER_SUBSCRIPTION, Session } from '../../packages/server/src/session.js';
import type { Sink } from '../../packages/server/src/sink.js';

const cleanup = cleanupAfterEach();

const problemsOf = configProblems;

describe('configuration', () => {
  it('defaults to drop in ephemeral namespaces and disconnect elsewhere; an explicit value wins', () => {
    const o = resolveOptions({
      demo: true,
      namespaces: {
        chat: {},
        cursors: { ephemeral: true },
        ticks: { ephemeral: true, backpressure: 'conflate' },
        strict: { ephemeral: true, backpressure: 'disconnect' },
        '': { ephemeral: true },
        typing: { ephemeral: false, historySize: 10 },
      },
    });
    expect(o.namespaces.chat?.backpressure).toBe('disconnect');
    expect(o.namespaces.cursors?.backpressure).toBe('drop');
    expect(o.namespaces.ticks?.backpressure).toBe('conflate');
    expect(o.namespaces.strict?.backpressure).toBe('disconnect');
    // Overriding a namespace that had a default: the default follows the new `ephemeral`.
    expect(o.namespaces['']?.backpressure).toBe('drop');
    expect(o.namespaces.typing?.backpressure).toBe('disconnect');
    expect(o.namespaces.demo?.backpressure).toBe('disconnect');
    expect(resolveOptions({ demo: true }).namespaces.typing?.backpressure).toBe('drop');
    expect(resolveOptions().namespaces['']?.backpressure).toBe('disconnect');
  });

  it('refuses drop and conflate on a namespace with history, saying why, and unknown policies', () => {
    const problems = problemsOf(() =>
      resolveOptions({
        namespaces: {
          chat: { backpressure: 'drop' },
          feed: { historySize: 10, backpressure: 'conflate' },
          '': { backpressure: 'drop' },
          odd: { ephemeral: true, backpressure: 'latest' as never },
          fine: { ephemeral: true, backpressure: 'drop' },
        },
      }),
    );
    expect(problems).toHaveLength(4);
    expect(problems[0]).toMatch(/^namespaces\.chat\.backpressure 'drop' needs ephemeral: true: .*history.*silent loss/);
    expect(problems[1]).toMatch(/^namespaces\.feed\.backpressure 'conflate' needs ephemeral: true: .*silent loss/);
    expect(problems[2]).toMatch(/^namespaces\.\.backpressure 'drop' needs ephemeral: true/);
    expect(problems[3]).toBe('namespaces.odd.backpressure must be one of drop, conflate, disconnect (got "latest")');
  });
});

// ---------------------------------------------------------------------------------------------
// Over real sockets

const PAD = 'x'.repeat(2000);
/** Publications per HTTP batch (about 400 KB). */
const BATCH = 200;
/** Most batches published to get a paused reader behind (the kernel buffers of both ends hold a few MiB first). */
const MAX_ROUNDS = 60;

async function gateway(config: GatewayConfig): Promise<TestGateway> {
  // Heartbeats far off: a reader that stays behind for a whole heartbeat interval is shed by it (the
  // WebSocket misses a pong; the SSE heartbeat finds the stream over the bound), whatever the policy.
  const gw = await startGateway({ maxBufferedBytes: 64 * 1024, pingInterval: 600_000, sseHeartbeat: 600_000, ...config });
  cleanup.push(() => gw.close());
  return gw;
}
async function ws(gw: TestGateway): Promise<RawWsClient> {
  const c = await RawWsClient.connect(gw.wsUrl);
  cleanup.push(() => c.terminate());
  return c;
}
async function subscribe(c: RawWsClient, channel: string, since?: Position): Promise<SubscribeResult> {
  const reply = await c.request(since === undefined ? { type: 'subscribe', channel } : { type: 'subscribe', channel, since });
  if (reply.type !== 'reply') throw new Error(`subscribe ${channel} failed: ${JSON.stringify(reply)}`);
  return reply.result as SubscribeResult;
}
async function publishBatch(gw: TestGateway, batch: ReadonlyArray<{ channel: string; data: unknown; type?: string }>): Promise<void> {
  const res = await fetch(`${gw.url}/api/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` },
    body: JSON.stringify(batch),
  });
  expect(res.status).toBe(200);
}
const metricsOf = (gw: TestGateway): CounterMetrics => gw.gateway.metrics as CounterMetrics;
const messagesOf = (c: RawWsClient, channel: string): Message[] => c.ofType('message').map((f) => f.message).filter((m) => m.channel === channel);
const seqsOf = (messages: readonly Message[]): number[] => messages.map((m) => m.position.seq);
const increasing = (seqs: readonly number[]): boolean => seqs.every((s, i) => i === 0 || s > (seqs[i - 1] as number));
const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

describe('slow consumers beside fast ones', () => {
  it('drop: the fast reader gets everything promptly; the paused one misses some, stays connected and catches up', async () => {
    const gw = await gateway({ namespaces: { feed: { ephemeral: true, backpressure: 'drop' } } });
    const fast = await ws(gw);
    const slow = await ws(gw);
    await subscribe(fast, 'feed:a');
    await subscribe(slow, 'feed:a');
    slow.ws.pause();
    let published = 0;
    for (let round = 0; round < MAX_ROUNDS && metricsOf(gw).drops.ephemeral_backpressure === 0; round++) {
      await publishBatch(gw, range(1, BATCH).map((j) => ({ channel: 'feed:a', data: { i: published + j, pad: PAD } })));
      published += BATCH;
      // The fast reader keeps up with every batch while the slow one is behind.
      await fast.until((c) => messagesOf(c, 'feed:a').length === published, 3000);
    }
    expect(metricsOf(gw).drops.ephemeral_backpressure).toBeGreaterThan(0);
    expect(seqsOf(messagesOf(fast, 'feed:a'))).toEqual(range(1, published));
    expect(metricsOf(gw).drops.slow_consumer).toBe(0);
    expect(gw.gateway.connections().websocket).toBe(2);

    slow.ws.resume();
    // Once it has read its backlog it is live again: new publications reach it.
    const afterOne = (): boolean => messagesOf(slow, 'feed:a').some((m) => (m.data as { after?: boolean }).after === true);
    for (let i = 0; i < 50 && !afterOne(); i++) {
      await gw.publish('feed:a', { after: true });
      published += 1;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(afterOne()).toBe(true);
    const got = seqsOf(messagesOf(slow, 'feed:a'));
    expect(got.length).toBeLessThan(published);
    expect(increasing(got)).toBe(true);
    expect(slow.ofType('gap')).toEqual([]);
    expect(slow.closed).toBe(false);
    await fast.until((c) => messagesOf(c, 'feed:a').length === published);
    expect(seqsOf(messagesOf(fast, 'feed:a'))).toEqual(range(1, published));
  }, 60_000);

  it.each(['websocket', 'sse'] as const)(
    'conflate (%s): the paused reader gets the latest value per channel and type, in order, once it reads again',
    async (transport) => {
      const KEYS = ['k0', 'k1', 'k2', 'k3'];
      const gw = await gateway({ namespaces: { ticks: { ephemeral: true, backpressure: 'conflate' } } });
      const fast = await ws(gw);
      await subscribe(fast, 'ticks:a');
      let slowMessages: () => Message[];
      let slowGaps: () => number;
      let resume: () => void;
      if (transport === 'websocket') {
        const slow = await ws(gw);
        await subscribe(slow, 'ticks:a');
        slow.ws.pause();
        slowMessages = () => messagesOf(slow, 'ticks:a');
        slowGaps = () => slow.ofType('gap').length;
        resume = () => slow.ws.resume();
      } else {
        const slow = await RawSseClient.open(`${gw.url}/sse?channel=ticks:a`);
        cleanup.push(() => slow.close());
        await slow.until((x) => x.named('tidings:welcome').length === 1);
        slow.pause();
        slowMessages = () => slow.events.filter((e) => KEYS.includes(e.event)).map((e) => JSON.parse(e.data) as Message);
        slowGaps = () => slow.named('tidings:gap').length;
        resume = () => slow.resume();
      }
      let published = 0;
      // Behind, then well past it: many values of each key are replaced while it does not read.
      let extra = 3;
      for (let round = 0; round < MAX_ROUNDS && extra > 0; round++) {
        await publishBatch(gw, range(1, BATCH).map((j) => ({ channel: 'ticks:a', type: KEYS[(published + j) % KEYS.length], data: { i: published + j, pad: PAD } })));
        published += BATCH;
        if (metricsOf(gw).drops.conflated > 0) extra -= 1;
      }
      expect(metricsOf(gw).drops.conflated).toBeGreaterThan(0);
      const finals = KEYS.map((type, j) => ({ channel: 'ticks:a', type, data: { i: published + j + 1, final: type } }));
      await publishBatch(gw, finals);
      published += finals.length;
      // The fast reader got every publication while the slow one was behind.
      await fast.until((c) => messagesOf(c, 'ticks:a').length === published, 5000);
      expect(seqsOf(messagesOf(fast, 'ticks:a'))).toEqual(range(1, published));
      expect(slowMessages().some((m) => (m.data as { final?: string }).final !== undefined)).toBe(false);

      resume();
      const finalOf = (type: string): string | undefined => (slowMessages().filter((m) => m.type === type).at(-1)?.data as { final?: string } | undefined)?.final;
      await until(() => KEYS.every((k) => finalOf(k) === k), 10_000, 'the latest value of every key reached the slow reader');
      const got = slowMessages();
      // In order (what was held back never overtakes or is overtaken), with positions skipped on
      // purpose: no gap is reported for them.
      expect(increasing(seqsOf(got))).toBe(true);
      // Every publication reached it or was replaced by a later one of its key: none silently lost.
      expect(got.length).toBe(published - metricsOf(gw).drops.conflated);
      expect(got.length).toBeLessThan(published);
      expect(slowGaps()).toBe(0);
      expect(seqsOf(got).slice(-KEYS.length)).toEqual(range(published - KEYS.length + 1, published));
      expect(metricsOf(gw).drops.slow_consumer).toBe(0);
      // Drained: live again.
      await gw.publish('ticks:a', { after: true }, { type: 'k0' });
      await until(() => slowMessages().some((m) => (m.data as { after?: boolean }).after === true), 5000, 'a live publication after the drain');
    },
    60_000,
  );

  it('disconnect: the paused reader is closed 4001 while the fast one keeps up, and resumes through since without loss', async () => {
    const gw = await gateway({ namespaces: { bulk: { historySize: 20_000, backpressure: 'disconnect' } } });
    const fast = await ws(gw);
    const slow = await ws(gw);
    await subscribe(fast, 'bulk:a');
    const start = (await subscribe(slow, 'bulk:a')).position;
    slow.ws.pause();
    let published = 0;
    for (let round = 0; round < MAX_ROUNDS && metricsOf(gw).drops.slow_consumer === 0; round++) {
      await publishBatch(gw, range(1, BATCH).map((j) => ({ channel: 'bulk:a', data: { i: published + j, pad: PAD } })));
      published += BATCH;
      await fast.until((c) => messagesOf(c, 'bulk:a').length === published, 3000);
    }
    expect(metricsOf(gw).drops.slow_consumer).toBe(1);
    // More goes on while the shed client is away.
    await publishBatch(gw, range(1, 50).map((j) => ({ channel: 'bulk:a', data: { i: published + j } })));
    published += 50;
    await fast.until((c) => messagesOf(c, 'bulk:a').length === published, 3000);
    expect(seqsOf(messagesOf(fast, 'bulk:a'))).toEqual(range(1, published));
    expect(fast.closed).toBe(false);

    slow.ws.resume();
    await slow.until((c) => c.closed, 10_000);
    expect(slow.closeCode).toBe(CloseCode.slow_consumer.code);
    const before = messagesOf(slow, 'bulk:a');
    expect(seqsOf(before)).toEqual(range(1, before.length));
    expect(before.length).toBeLessThan(published);

    const again = await ws(gw);
    const last = before.at(-1)?.position ?? start;
    const result = await subscribe(again, 'bulk:a', last);
    expect(result.recovered).toBe(true);
    await again.until((c) => messagesOf(c, 'bulk:a').length === published - before.length, 5000);
    expect([...seqsOf(before), ...seqsOf(messagesOf(again, 'bulk:a'))]).toEqual(range(1, published));
    expect(again.ofType('gap')).toEqual([]);
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------
// In the session, without a network

class FakeSink implements Sink {
  bufferedBytes = 0;
  readonly messages: EncodedPublication[] = [];
  readonly gaps: Gap[] = [];
  closed: CloseName | undefined;
  /** The listener waiting for the next drain. */
  onDrained: (() => void) | undefined;
  subscribed(_result: SubscribeResult, _id: RequestId | undefined): void {}
  message(enc: EncodedPublication): void {
    this.messages.push(enc);
  }
  gap(gap: Gap): void {
    this.gaps.push(gap);
  }
  whenDrained(listener: () => void): void {
    this.onDrained = listener;
  }
  close(name: CloseName): void {
    this.closed = name;
  }
  /** The backlog empties: the waiting listener runs. */
  drain(): void {
    this.bufferedBytes = 0;
    const listener = this.onDrained;
    this.onDrained = undefined;
    listener?.();
  }
  /** `type@seq` of each delivered publication. */
  get delivered(): string[] {
    return this.messages.map((e) => `${e.pub.type ?? ''}@${e.pub.position.seq}`);
  }
}

async function sessions(config: GatewayConfig = {}) {
  const options = resolveOptions({
    maxBufferedBytes: 1024,
    nodeId: 'n1',
    ...config,
    namespaces: {
      ticks: { ephemeral: true, backpressure: 'conflate' },
      feed: { ephemeral: true },
      strict: { ephemeral: true, backpressure: 'disconnect' },
      chat: { historySize: 100 },
      ...config.namespaces,
    },
  });
  const broker = new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 10 });
  const hub = new Hub(broker, { repairLimit: 100, maxRepairQueue: 100 }, () => undefined);
  const presence = new Presence(broker, 1000, () => undefined);
  const eph = { historySize: 0, historyTtl: 0, ephemeral: true };
  await broker.start(
    { publication: hub.onPublication, presence: hub.onPresence, status: () => undefined },
    brokerSettings({ ticks: eph, feed: eph, strict: eph, chat: { historySize: 100, historyTtl: 60_000, ephemeral: false } }),
  );
  cleanup.push(() => broker.close());
  const metrics = new CounterMetrics();
  const ctx = { hub, broker, options, auth: openAuth, authorize: { hooks: undefined }, metrics, nodeId: 'n1', idPrefix: 'n1-', presence };
  const publish = async (channel: string, type: string | undefined, data = '1'): Promise<void> => {
    await broker.publish(publishCommand(channel, data, { type }));
    await new Promise((r) => setImmediate(r));
  };
  return { metrics, publish, broker, options, open: (sink: Sink) => new Session(ctx, sink, { user: 'me', anonymous: false }) };
}

describe('backpressure in the session', () => {
  it('conflate holds back the latest per type in position order, keeps later ones behind them, and sends them at the drain', async () => {
    const { metrics, publish, open } = await sessions();
    const sink = new FakeSink();
    const s = open(sink);
    await s.subscribe('ticks:a', undefined);
    await s.subscribe('ticks:b', undefined);
    await publish('ticks:a', 'a');
    expect(sink.delivered).toEqual(['a@1']);

    sink.bufferedBytes = 4096;
    for (const type of ['a', 'b', 'a', 'c', 'b']) await publish('ticks:a', type);
    await publish('ticks:b', undefined);
    expect(sink.delivered).toEqual(['a@1']);
    expect(metrics.drops.conflated).toBe(2);
    expect(sink.onDrained).toBeDefined();
    // Below the bound again but not drained yet: a later publication waits behind the held-back ones.
    sink.bufferedBytes = 0;
    await publish('ticks:a', 'd');
    expect(sink.delivered).toEqual(['a@1']);

    sink.drain();
    expect(sink.delivered).toEqual(['a@1', 'a@4', 'c@5', 'b@6', 'd@7', '@1']);
    expect(sink.messages.map((e) => e.pub.channel)).toEqual(['ticks:a', 'ticks:a', 'ticks:a', 'ticks:a', 'ticks:a', 'ticks:b']);
    expect(sink.gaps).toEqual([]);
    expect(sink.onDrained).toBeUndefined();
    // Live again.
    await publish('ticks:a', 'a');
    expect(sink.delivered.at(-1)).toBe('a@8');
    expect(sink.closed).toBeUndefined();
  });

  it('a drain sends what fits under the bound and waits for the next drain for the rest', async () => {
    const { publish, open } = await sessions();
    const sink = new FakeSink();
    const s = open(sink);
    await s.subscribe('ticks:a', undefined);
    sink.bufferedBytes = 4096;
    // About 600 bytes each against a 1024-byte bound: two per drain.
    for (const type of ['a', 'b', 'c', 'd', 'e']) await publish('ticks:a', type, JSON.stringify('y'.repeat(550)));
    sink.drain();
    expect(sink.delivered).toEqual(['a@1', 'b@2']);
    expect(sink.onDrained).toBeDefined();
    sink.drain();
    expect(sink.delivered).toEqual(['a@1', 'b@2', 'c@3', 'd@4']);
    sink.drain();
    expect(sink.delivered).toEqual(['a@1', 'b@2', 'c@3', 'd@4', 'e@5']);
    expect(sink.onDrained).toBeUndefined();
  });

  it(`closes slow_consumer past maxSubscriptions x ${CONFLATE_KEYS_PER_SUBSCRIPTION} keys held back`, async () => {
    const { metrics, publish, open } = await sessions({ maxSubscriptions: 1 });
    const sink = new FakeSink();
    const s = open(sink);
    await s.subscribe('ticks:a', undefined);
    sink.bufferedBytes = 4096;
    for (let k = 0; k < CONFLATE_KEYS_PER_SUBSCRIPTION; k++) await publish('ticks:a', `k${k}`);
    // Replacing a held key costs nothing.
    await publish('ticks:a', 'k0');
    expect(sink.closed).toBeUndefined();
    await publish('ticks:a', 'one-too-many');
    expect(sink.closed).toBe('slow_consumer');
    expect(s.closed).toBe(true);
    expect(metrics.drops.slow_consumer).toBe(1);
    sink.drain();
    expect(sink.messages).toEqual([]);
  });

  it('forgets what a channel held back when it is unsubscribed', async () => {
    const { publish, open } = await sessions();
    const sink = new FakeSink();
    const s = open(sink);
    await s.subscribe('ticks:a', undefined);
    await s.subscribe('ticks:b', undefined);
    sink.bufferedBytes = 4096;
    await publish('ticks:a', 'a');
    await publish('ticks:b', 'b');
    s.unsubscribe('ticks:a');
    sink.drain();
    expect(sink.messages.map((e) => e.pub.channel)).toEqual(['ticks:b']);
    // Nothing held back any more: a publication goes straight out.
    await publish('ticks:b', 'b');
    expect(sink.delivered).toEqual(['b@1', 'b@2']);
  });

  it.each([
    ['feed (ephemeral, default drop)', 'feed:a', 'drop'],
    ['strict (ephemeral, explicit disconnect)', 'strict:a', 'disconnect'],
    ['chat (history, default disconnect)', 'chat:a', 'disconnect'],
  ] as const)('%s: a publication past the bound is handled by the namespace policy', async (_what, channel, policy) => {
    const { metrics, publish, open } = await sessions();
    const sink = new FakeSink();
    const s = open(sink);
    await s.subscribe(channel, undefined);
    sink.bufferedBytes = 4096;
    await publish(channel, undefined);
    expect(sink.messages).toEqual([]);
    if (policy === 'drop') {
      expect(metrics.drops.ephemeral_backpressure).toBe(1);
      expect(sink.closed).toBeUndefined();
      sink.bufferedBytes = 0;
      await publish(channel, undefined);
      expect(sink.delivered).toEqual(['@2']);
    } else {
      expect(metrics.drops.ephemeral_backpressure).toBe(0);
      expect(sink.closed).toBe('slow_consumer');
    }
    expect(sink.onDrained).toBeUndefined();
  });
});

/**
 * A sink whose backlog is what it was given since the last drain, as a socket that takes nothing
 * meanwhile; a drain leaves `residue` bytes (what a socket below its high-water mark still holds).
 */
class BacklogSink extends FakeSink {
  /** The most it held at once. */
  peak = 0;
  constructor(private readonly residue: number) {
    super();
  }
  override drain(): void {
    super.drain();
    this.bufferedBytes = this.residue;
  }
  override message(enc: EncodedPublication): void {
    this.bufferedBytes += enc.json.length;
    this.peak = Math.max(this.peak, this.bufferedBytes);
    super.message(enc);
  }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A script after subscribing: drain the sink, or publish live to one of the channels. */
type Step = { readonly drain: true } | { readonly live: number; readonly size: number };

describe('replay in the session', () => {
  it('hands every replayed publication over once, in order, at most half the bound ahead of the sink, with live ones after', async () => {
    const histories = fc.array(fc.array(fc.integer({ min: 1, max: 300 }), { maxLength: 30 }), { minLength: 1, maxLength: 4 });
    const script = (channels: number): fc.Arbitrary<Step[]> =>
      fc.array(fc.oneof(fc.constant<Step>({ drain: true }), fc.record({ live: fc.nat({ max: channels - 1 }), size: fc.integer({ min: 1, max: 300 }) })), { maxLength: 30 });
    await fc.assert(
      fc.asyncProperty(
        histories.chain((h) => fc.tuple(fc.constant(h), script(h.length), fc.integer({ min: 0, max: 700 }))),
        async ([sizes, steps, residue]) => {
          const { publish, broker, options, open } = await sessions({ maxBufferedBytes: 1024 });
          const channels = sizes.map((_, i) => `chat:p${i}`);
          const owed = sizes.map((s) => s.length);
          for (const [i, channel] of channels.entries()) for (const size of sizes[i] ?? []) await publish(channel, undefined, JSON.stringify('h'.repeat(size)));
          const sink = new BacklogSink(residue);
          const session = open(sink);
          for (const channel of channels) {
            const { top } = await broker.history(channel, undefined, 0);
            await session.subscribe(channel, { epoch: top.epoch, seq: 0 });
          }
          // Replays only, so far: never more than half the bound ahead, plus the one that may go after a
          // drain (however much the sink still holds), and never a reason to shed the session.
          const largest = Math.max(0, ...sink.messages.map((e) => e.json.length));
          expect(sink.peak).toBeLessThanOrEqual(options.maxBufferedBytes / 2 + largest);
          expect(session.closed).toBe(false);
          for (const step of steps) {
            if ('drain' in step) sink.drain();
            else {
              await publish(channels[step.live] ?? '', undefined, JSON.stringify('l'.repeat(step.size)));
              owed[step.live] = (owed[step.live] ?? 0) + 1;
            }
            await tick();
          }
          for (let i = 0; i < 10_000 && sink.onDrained !== undefined && !session.closed; i++) {
            sink.drain();
            await tick();
          }
          expect(sink.gaps).toEqual([]);
          for (const [i, channel] of channels.entries()) {
            const seqs = sink.messages.filter((e) => e.pub.channel === channel).map((e) => e.pub.position.seq);
            // In order and once each; all of it unless a live publication found the sink over its bound.
            expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, k) => k + 1));
            if (!session.closed) expect(seqs.length).toBe(owed[i]);
          }
          if (session.closed) expect(sink.closed).toBe('slow_consumer');
          session.close('normal', 'done');
          await broker.close();
        },
      ),
      { numRuns: 100 },
    );
  }, 60_000);
});

describe('an SSE stream whose later channels are still subscribing', () => {
  it('holds at most maxBufferedBytes of a channel already live: past it the stream is shed, and a resume misses nothing', async () => {
    let release = (): void => undefined;
    const slow = new Promise<void>((resolve) => (release = resolve));
    const gw = await startGateway(
      { maxBufferedBytes: 64 * 1024, namespaces: { h: { historySize: 1000 } }, channelLinger: 0 },
      { authorize: { subscribe: async (_identity, channel) => (channel === 'h:slow' ? slow.then(() => true) : true) } },
    );
    cleanup.push(() => gw.close());
    // The stream opens once both channels are subscribed; `h:fast` is live while `h:slow` waits.
    const opening = RawSseClient.open(`${gw.url}/sse?channel=h:fast&channel=h:slow`);
    await until(() => gw.gateway.stats().hub.subscribers === 1, 8000, 'h:fast live');
    let published = 0;
    for (; published < 100 && metricsOf(gw).drops.slow_consumer === 0; published += 10) {
      await publishBatch(gw, range(published + 1, published + 10).map((i) => ({ channel: 'h:fast', data: { i, pad: PAD } })));
    }
    // Shed within the bound: 2 KB publications, 64 KB, long before the hundredth.
    expect(metricsOf(gw).drops.slow_consumer).toBe(1);
    expect(published).toBeLessThanOrEqual(50);
    release();
    const client = await opening;
    cleanup.push(() => client.close());
    await client.until((c) => c.ended);
    expect(client.named('tidings:error').map((e) => (JSON.parse(e.data) as { code: string }).code)).toEqual(['slow_consumer']);
    // A resume from the start gets every publication once, in order.
    const last = await gw.publish('h:fast', { i: published + 1 });
    const again = await RawSseClient.open(`${gw.url}/sse?channel=h:fast`, formatCursorEntry('h:fast', { epoch: last.position.epoch, seq: 0 }));
    cleanup.push(() => again.close());
    await again.until((c) => c.named('message').length >= last.position.seq);
    expect(again.named('message').map((e) => (JSON.parse(e.data) as { data: { i: number } }).data.i)).toEqual(range(1, published + 1));
  });
});
