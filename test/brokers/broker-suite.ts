/**
 * The broker contract suite: every Broker implementation must pass it unchanged. It uses only the
 * Broker interface, gives every test fresh channels (so a shared backing store is fine), and
 * waits for delivery instead of assuming it is synchronous.
 *
 * Usage (in a `*.test.ts` file):
 *
 * ```ts
 * brokerSuite('redis', async (limits) => new RedisBroker({ url, maxChannels: limits?.maxChannels }), {
 *   cleanup: (broker) => broker.close(), // the default
 *   presenceSweep: 1000, // the broker's presence sweep period, in ms
 * });
 * ```
 *
 * The factory returns a broker that is **not yet started**: the suite starts every broker itself,
 * with {@link SUITE_SETTINGS} (or, for a few tests, the same namespaces with another `dedupWindow`),
 * so the retention of every channel it uses is known to the test. Channels are named
 * `<namespace>:<unique>`, the namespace being one of {@link SUITE_NAMESPACES}; the default namespace
 * ("") is configured too. Every broker the factory made is cleaned up after its test.
 *
 * Where brokers legitimately differ, tests read `broker.capabilities` and skip with the reason
 * (`boundedStreams`: the stream-bound tests; `shared`: the two-node tests). Byte-budget tests are
 * broker-specific and live in each broker's own test file.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { positionProblem, TidingsError, type Position } from '@tidings/protocol';
import type { Broker, BrokerSettings, BrokerStatus, PresenceEntry, PresenceEvent, Publication, Retention } from '@tidings/server';
import { brokerSettings, publishCommand, until } from '@tidings/testing';
import { Presence } from '../../packages/server/src/presence.js';

/** A publish command (retention comes from the channel's namespace); override type or idempotencyKey per test. */
export const command = publishCommand;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const seqs = (pubs: readonly Publication[]): number[] => pubs.map((p) => p.position.seq);
const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
const retention = (historySize: number, historyTtl: number, ephemeral = false): Retention => ({ historySize, historyTtl, ephemeral });

/** How long `brief` keeps publications, in ms (the expiry tests wait about twice this). */
export const BRIEF_TTL = 300;

/** The namespaces every broker the suite starts is configured with (plus the default one, "": 100 for a minute). */
export const SUITE_NAMESPACES: Readonly<Record<string, Retention>> = {
  /** Roomy: 1000 publications for a minute. */
  big: retention(1000, 60_000),
  /** Keeps the last 3. */
  small: retention(3, 60_000),
  /** Keeps publications for BRIEF_TTL ms. */
  brief: retention(100, BRIEF_TTL),
  /** Ephemeral: positions and delivery, no history (whatever the size says). */
  eph: retention(100, 60_000, true),
  /** Stores nothing: historySize 0. */
  none: retention(0, 60_000),
};

/** What the suite starts its brokers with: {@link SUITE_NAMESPACES}, and idempotency keys kept for a minute. */
export const SUITE_SETTINGS: BrokerSettings = brokerSettings(SUITE_NAMESPACES, 60_000);

/**
 * Small storage bounds, asked for only from a broker whose `capabilities.boundedStreams` is true. The
 * broker the factory returns for them must start over an empty store (no streams of other tests
 * count against the bounds).
 */
export interface SuiteLimits {
  /** Channel streams the broker may hold. */
  readonly maxChannels: number;
}

/** Makes a broker, not yet started. `limits` is given only by the stream-bound tests (see {@link SuiteLimits}). */
export type BrokerFactory = (limits?: SuiteLimits) => Promise<Broker>;

export interface BrokerSuiteOptions {
  /** Ends a broker the factory made, started or not (default: `broker.close()`). */
  readonly cleanup?: (broker: Broker) => Promise<void>;
  /**
   * The broker's presence sweep period in ms: a presence entry not touched within its ttl has its
   * leave announced within ttl + this (default 1000).
   */
  readonly presenceSweep?: number;
}

/** A started broker and everything it reported. */
interface Node {
  readonly broker: Broker;
  readonly publications: Publication[];
  readonly presence: PresenceEvent[];
  readonly statuses: Array<[BrokerStatus, string]>;
}

export function brokerSuite(name: string, factory: BrokerFactory, options: BrokerSuiteOptions = {}): void {
  const cleanup = options.cleanup ?? ((b: Broker): Promise<void> => b.close());
  const presenceSweep = options.presenceSweep ?? 1000;

  describe(`broker contract: ${name}`, () => {
    let made: Broker[] = [];
    /** The node most tests use, started with SUITE_SETTINGS. */
    let main: Node;
    let broker: Broker;
    const run = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
    let n = 0;
    /** A channel of namespace `ns` ("" for the default one) that no other test (or earlier run against a shared store) has used. */
    const fresh = (label: string, ns = 'big'): string => `${ns === '' ? '' : `${ns}:`}suite-${run}-${++n}-${label}`;

    /** Makes a broker with the factory and starts it; it is cleaned up after the test. */
    const node = async (settings: BrokerSettings = SUITE_SETTINGS, limits?: SuiteLimits): Promise<Node> => {
      const b = await factory(limits);
      made.push(b);
      const started: Node = { broker: b, publications: [], presence: [], statuses: [] };
      await b.start(
        {
          publication: (pub) => started.publications.push(pub),
          presence: (event) => started.presence.push(event),
          status: (status, reason) => started.statuses.push([status, reason]),
        },
        settings,
      );
      return started;
    };
    /** A node over an empty store holding at most `maxChannels` streams (boundedStreams only). */
    const bounded = (maxChannels: number): Promise<Node> => node(SUITE_SETTINGS, { maxChannels });

    const deliveredTo = (channel: string, to: Node = main): Publication[] => to.publications.filter((p) => p.channel === channel);
    const eventsOf = (channel: string, to: Node = main): PresenceEvent[] => to.presence.filter((e) => e.channel === channel);
    const publishAll = async (channel: string, count: number, on: Broker = broker): Promise<Position[]> => {
      const out: Position[] = [];
      for (let i = 1; i <= count; i++) {
        const outcome = await on.publish(command(channel, `{"i":${i}}`));
        expect(outcome.duplicate).toBe(false);
        out.push(outcome.position);
      }
      return out;
    };
    /** Publishes to a subscribed marker channel and waits for it: everything published before has been routed. */
    const barrier = async (to: Node = main): Promise<void> => {
      const marker = fresh('marker');
      await to.broker.subscribe(marker);
      await to.broker.publish(command(marker, '"marker"'));
      await until(() => deliveredTo(marker, to).length === 1, 2000, 'the marker publication');
      await to.broker.unsubscribe(marker);
      // A little extra time for anything that would (wrongly) arrive late.
      await sleep(20);
    };
    /** Adds a presence entry to a subscribed marker channel and waits for its join: every presence event before has been routed. */
    const presenceBarrier = async (to: Node = main): Promise<void> => {
      const marker = fresh('presence-marker');
      const entry: PresenceEntry = { client: `marker-${run}-${++n}`, user: 'marker', info: undefined, node: 'marker-node' };
      await to.broker.subscribe(marker);
      await to.broker.presenceAdd(marker, entry, 10_000);
      await until(() => eventsOf(marker, to).length === 1, 2000, 'the marker join');
      await to.broker.unsubscribe(marker);
      await to.broker.presenceRemove(marker, entry);
      await sleep(20);
    };
    const refusedWith = async (code: string, promise: Promise<unknown>): Promise<TidingsError> => {
      const err: unknown = await promise.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(TidingsError);
      expect((err as TidingsError).code).toBe(code);
      return err as TidingsError;
    };

    beforeEach(async () => {
      made = [];
      main = await node();
      broker = main.broker;
    });

    afterEach(async () => {
      for (const b of made.reverse()) await cleanup(b);
      made = [];
    });

    describe('start', () => {
      it("reports status 'up' once started, and nothing else while all is well", async () => {
        await until(() => main.statuses.length > 0, 2000, "status 'up'");
        expect(main.statuses[0]?.[0]).toBe('up');
        expect(typeof main.statuses[0]?.[1]).toBe('string');
        await barrier();
        // No down or reset without an outage (a repeated 'up' is harmless).
        expect(new Set(main.statuses.map(([s]) => s))).toEqual(new Set(['up']));
      });

      it('states its capabilities', () => {
        const { shared, boundedStreams, outages } = broker.capabilities;
        expect([typeof shared, typeof boundedStreams, typeof outages]).toEqual(['boolean', 'boolean', 'boolean']);
      });
    });

    describe('positions', () => {
      it('start at 1 and grow by exactly 1 per publish, per channel, independently', async () => {
        const a = fresh('a');
        const b = fresh('b');
        const order = ['a', 'a', 'b', 'a', 'b', 'b', 'b', 'a', 'a'];
        const got: Record<string, Position[]> = { a: [], b: [] };
        for (const which of order) {
          const outcome = await broker.publish(command(which === 'a' ? a : b, '1'));
          expect(outcome.duplicate).toBe(false);
          got[which]?.push(outcome.position);
        }
        expect(got.a?.map((p) => p.seq)).toEqual([1, 2, 3, 4, 5]);
        expect(got.b?.map((p) => p.seq)).toEqual([1, 2, 3, 4]);
        const epochA = got.a?.[0]?.epoch;
        expect(got.a?.every((p) => p.epoch === epochA)).toBe(true);
        expect(got.b?.every((p) => p.epoch === got.b?.[0]?.epoch)).toBe(true);
        expect((await broker.history(a, undefined, 0)).top).toEqual({ epoch: epochA, seq: 5 });
        expect((await broker.history(b, undefined, 0)).top).toEqual(got.b?.[3]);
      });

      it('use a valid, stable epoch: the same before the first publish, across publishes and reads', async () => {
        const c = fresh('epoch');
        const empty = await broker.history(c, undefined, 10);
        expect(empty.top.seq).toBe(0);
        expect(positionProblem(empty.top)).toBeUndefined();
        expect(empty.publications).toEqual([]);
        expect(empty.evicted).toBeUndefined();
        const positions = await publishAll(c, 5);
        expect(positions).toEqual(range(1, 5).map((seq) => ({ epoch: empty.top.epoch, seq })));
        const again = await broker.history(c, undefined, 10);
        expect(again.top).toEqual({ epoch: empty.top.epoch, seq: 5 });
        expect((await broker.history(c, undefined, 10)).top).toEqual(again.top);
      });

      it('assign distinct positions to concurrent publishes with no hole', async () => {
        const c = fresh('concurrent');
        const outcomes = await Promise.all(range(1, 50).map((i) => broker.publish(command(c, String(i)))));
        expect(outcomes.map((o) => o.position.seq).sort((x, y) => x - y)).toEqual(range(1, 50));
        const page = await broker.history(c, undefined, 100);
        expect(seqs(page.publications)).toEqual(range(1, 50));
        // History order is position order, and each stored payload is the one published at that position.
        outcomes.forEach((o, i) => {
          expect(page.publications[o.position.seq - 1]?.data).toBe(String(i + 1));
        });
      });
    });

    describe('delivery', () => {
      it('delivers to the handler only for subscribed channels, in order, with every field intact', async () => {
        const sub = fresh('sub');
        const other = fresh('other');
        await broker.subscribe(sub);
        await broker.publish(command(sub, '{"i":1}'));
        await broker.publish(command(other, '{"i":1}'));
        await broker.publish(command(sub, '"é😀\\n"', { type: 'chat.message' }));
        await broker.publish(command(other, '{"i":2}'));
        await broker.publish(command(sub, '[1,null,{"x":true}]'));
        await until(() => deliveredTo(sub).length >= 3, 2000, 'three deliveries');
        await barrier();
        const got = deliveredTo(sub);
        const epoch = got[0]?.position.epoch ?? '';
        expect(got).toEqual([
          { channel: sub, position: { epoch, seq: 1 }, type: undefined, data: '{"i":1}', ephemeral: false },
          { channel: sub, position: { epoch, seq: 2 }, type: 'chat.message', data: '"é😀\\n"', ephemeral: false },
          { channel: sub, position: { epoch, seq: 3 }, type: undefined, data: '[1,null,{"x":true}]', ephemeral: false },
        ]);
        expect(deliveredTo(other)).toEqual([]);
      });

      it('delivers many publications of one channel in position order', async () => {
        const c = fresh('order');
        await broker.subscribe(c);
        const positions = await publishAll(c, 200);
        await until(() => deliveredTo(c).length >= 200, 5000, '200 deliveries');
        await barrier();
        expect(deliveredTo(c).map((p) => p.position)).toEqual(positions);
      });

      it('stops delivering after unsubscribe, and resumes after subscribing again', async () => {
        const c = fresh('unsub');
        await broker.subscribe(c);
        await broker.publish(command(c, '1'));
        await until(() => deliveredTo(c).length === 1, 2000, 'the first delivery');
        await broker.unsubscribe(c);
        await broker.publish(command(c, '2'));
        await broker.publish(command(c, '3'));
        await barrier();
        expect(seqs(deliveredTo(c))).toEqual([1]);
        await broker.subscribe(c);
        await broker.publish(command(c, '4'));
        await until(() => deliveredTo(c).length === 2, 2000, 'delivery after resubscribing');
        expect(seqs(deliveredTo(c))).toEqual([1, 4]);
        expect(deliveredTo(c)[1]?.data).toBe('4');
      });
    });

    describe('history', () => {
      it('returns exactly the publications after since, in order, bounded by limit', async () => {
        const c = fresh('hist');
        const positions = await publishAll(c, 10);
        const epoch = positions[0]?.epoch ?? '';
        const at = (seq: number): Position => ({ epoch, seq });
        const all = await broker.history(c, undefined, 100);
        expect(all.top).toEqual(at(10));
        expect(all.evicted).toBeUndefined();
        expect(all.publications.map((p) => [p.channel, p.position, p.data, p.type, p.ephemeral])).toEqual(
          range(1, 10).map((i) => [c, at(i), `{"i":${i}}`, undefined, false]),
        );
        expect(seqs((await broker.history(c, at(0), 100)).publications)).toEqual(range(1, 10));
        expect(seqs((await broker.history(c, at(4), 100)).publications)).toEqual(range(5, 10));
        expect(seqs((await broker.history(c, at(4), 3)).publications)).toEqual([5, 6, 7]);
        expect(seqs((await broker.history(c, undefined, 2)).publications)).toEqual([1, 2]);
        expect(seqs((await broker.history(c, at(9), 100)).publications)).toEqual([10]);
        expect(seqs((await broker.history(c, at(10), 100)).publications)).toEqual([]);
        expect(seqs((await broker.history(c, at(4), 0)).publications)).toEqual([]);
        expect((await broker.history(c, at(4), 3)).top).toEqual(at(10));
      });

      it("keeps the last historySize publications of the channel's namespace and reports the rest as trimmed", async () => {
        const c = fresh('trim', 'small'); // historySize 3
        const positions = await publishAll(c, 12);
        const epoch = positions[0]?.epoch ?? '';
        const page = await broker.history(c, undefined, 100);
        expect(page.top).toEqual({ epoch, seq: 12 });
        expect(seqs(page.publications)).toEqual([10, 11, 12]);
        expect(page.publications.map((p) => p.data)).toEqual(range(10, 12).map((i) => `{"i":${i}}`));
        expect(page.evicted).toBe('trimmed');
        expect(seqs((await broker.history(c, { epoch, seq: 2 }, 100)).publications)).toEqual([10, 11, 12]);
        expect(seqs((await broker.history(c, { epoch, seq: 10 }, 100)).publications)).toEqual([11, 12]);
        expect(seqs((await broker.history(c, { epoch, seq: 10 }, 1)).publications)).toEqual([11]);
      });

      it("drops publications older than the namespace's historyTtl and reports them as expired", async () => {
        const c = fresh('ttl', 'brief'); // historyTtl BRIEF_TTL
        const kept = fresh('ttl-kept', 'big'); // historyTtl a minute
        const positions = await publishAll(c, 3);
        await publishAll(kept, 3);
        const epoch = positions[0]?.epoch ?? '';
        const before = await broker.history(c, undefined, 100);
        expect(seqs(before.publications)).toEqual([1, 2, 3]);
        expect(before.evicted).toBeUndefined();
        await sleep(2 * BRIEF_TTL);
        const after = await broker.history(c, undefined, 100);
        expect(after.publications).toEqual([]);
        expect(after.top).toEqual({ epoch, seq: 3 });
        expect(after.evicted).toBe('expired');
        // Another namespace's channel, published at the same time, keeps everything.
        const other = await broker.history(kept, undefined, 100);
        expect(seqs(other.publications)).toEqual([1, 2, 3]);
        expect(other.evicted).toBeUndefined();
        // Positions continue; a later publication is retained alone.
        const [fourth] = await publishAll(c, 1);
        expect(fourth).toEqual({ epoch, seq: 4 });
        const last = await broker.history(c, { epoch, seq: 0 }, 100);
        expect(seqs(last.publications)).toEqual([4]);
        expect(last.evicted).toBe('expired');
      });

      it('gives publications of an ephemeral namespace positions and delivery but no history, whatever its historySize', async () => {
        const c = fresh('ephemeral', 'eph'); // ephemeral, historySize 100
        await broker.subscribe(c);
        const positions = await publishAll(c, 4);
        const epoch = positions[0]?.epoch ?? '';
        expect(positions).toEqual(range(1, 4).map((seq) => ({ epoch, seq })));
        const page = await broker.history(c, undefined, 100);
        expect(page.publications).toEqual([]);
        expect(page.top).toEqual({ epoch, seq: 4 });
        expect((await broker.history(c, { epoch, seq: 1 }, 100)).publications).toEqual([]);
        await until(() => deliveredTo(c).length === 4, 2000, 'ephemeral deliveries');
        expect(deliveredTo(c).map((p) => [p.position.seq, p.ephemeral])).toEqual([
          [1, true],
          [2, true],
          [3, true],
          [4, true],
        ]);
      });

      it('answers a since in another epoch with no publications and the current top', async () => {
        const c = fresh('other-epoch');
        const positions = await publishAll(c, 3);
        const epoch = positions[0]?.epoch ?? '';
        const other = epoch === 'otherEpoch1' ? 'otherEpoch2' : 'otherEpoch1';
        for (const seq of [0, 1, 2, 3, 999]) {
          const page = await broker.history(c, { epoch: other, seq }, 100);
          expect(page.publications).toEqual([]);
          expect(page.top).toEqual({ epoch, seq: 3 });
        }
      });
    });

    describe('retention per namespace', () => {
      it('trims channels of namespaces with different historySize differently, set once at start', async () => {
        const small = fresh('same', 'small'); // 3
        const big = fresh('same', 'big'); // 1000
        const plain = fresh('same', ''); // the default namespace: 100
        for (let i = 1; i <= 6; i++) {
          for (const c of [small, big, plain]) expect((await broker.publish(command(c, `{"i":${i}}`))).position.seq).toBe(i);
        }
        const s = await broker.history(small, undefined, 100);
        expect(seqs(s.publications)).toEqual([4, 5, 6]);
        expect(s.evicted).toBe('trimmed');
        for (const c of [big, plain]) {
          const page = await broker.history(c, undefined, 100);
          expect(seqs(page.publications)).toEqual(range(1, 6));
          expect(page.evicted).toBeUndefined();
        }
      });

      it('assigns positions but keeps no history in a namespace with historySize 0', async () => {
        const c = fresh('none', 'none');
        await broker.subscribe(c);
        const positions = await publishAll(c, 3);
        expect(positions.map((p) => p.seq)).toEqual([1, 2, 3]);
        const page = await broker.history(c, undefined, 100);
        expect(page.top).toEqual(positions[2]);
        expect(page.publications).toEqual([]);
        await until(() => deliveredTo(c).length === 3, 2000, 'three deliveries');
        expect(deliveredTo(c).map((p) => p.position)).toEqual(positions);
      });

      it('refuses a publish to a namespace it was not started with (unknown_namespace), changing nothing', async () => {
        const stray = `nowhere${run}:x`;
        await broker.subscribe(stray);
        await refusedWith('unknown_namespace', broker.publish(command(stray, '1')));
        await refusedWith('unknown_namespace', broker.publish(command(stray, '2', { idempotencyKey: 'k' })));
        await barrier();
        expect(deliveredTo(stray)).toEqual([]);
        // Configured namespaces go on as usual.
        expect((await broker.publish(command(fresh('fine'), '1'))).position.seq).toBe(1);
        // Without "" in its settings, a broker refuses channels of the default namespace too.
        const strict = await node({ namespaces: { big: SUITE_NAMESPACES.big as Retention }, dedupWindow: 60_000 });
        await refusedWith('unknown_namespace', strict.broker.publish(command(fresh('plain', ''), '1')));
        await refusedWith('unknown_namespace', strict.broker.publish(command(fresh('small', 'small'), '1')));
        expect((await strict.broker.publish(command(fresh('big'), '1'))).position.seq).toBe(1);
      });
    });

    describe('idempotency', () => {
      it('returns the first position for a repeated key within the window and publishes nothing', async () => {
        const c = fresh('dedup');
        await broker.subscribe(c);
        const first = await broker.publish(command(c, '"first"', { idempotencyKey: 'k1' }));
        expect(first.duplicate).toBe(false);
        expect(first.position.seq).toBe(1);
        const again = await broker.publish(command(c, '"second"', { idempotencyKey: 'k1' }));
        expect(again).toEqual({ position: first.position, duplicate: true });
        await barrier();
        expect(deliveredTo(c).map((p) => p.data)).toEqual(['"first"']);
        const page = await broker.history(c, undefined, 100);
        expect(page.top).toEqual(first.position);
        expect(page.publications.map((p) => p.data)).toEqual(['"first"']);
        // Another key, and no key, publish as usual; the first key still deduplicates.
        expect(await broker.publish(command(c, '"k2"', { idempotencyKey: 'k2' }))).toEqual({ position: { epoch: first.position.epoch, seq: 2 }, duplicate: false });
        expect(await broker.publish(command(c, '"none"'))).toEqual({ position: { epoch: first.position.epoch, seq: 3 }, duplicate: false });
        expect(await broker.publish(command(c, '"k1 again"', { idempotencyKey: 'k1' }))).toEqual({ position: first.position, duplicate: true });
        expect(await broker.publish(command(c, '"k2 again"', { idempotencyKey: 'k2' }))).toEqual({ position: { epoch: first.position.epoch, seq: 2 }, duplicate: true });
        expect((await broker.history(c, undefined, 0)).top.seq).toBe(3);
      });

      it('scopes keys to the channel', async () => {
        const a = fresh('dedup-a');
        const b = fresh('dedup-b');
        const onA = await broker.publish(command(a, '1', { idempotencyKey: 'shared' }));
        await broker.publish(command(b, '1'));
        const onB = await broker.publish(command(b, '2', { idempotencyKey: 'shared' }));
        expect(onA.duplicate).toBe(false);
        expect(onB.duplicate).toBe(false);
        expect(onB.position.seq).toBe(2);
        expect((await broker.publish(command(b, '3', { idempotencyKey: 'shared' }))).position).toEqual(onB.position);
      });

      it('deduplicates in ephemeral namespaces too', async () => {
        const c = fresh('dedup-eph', 'eph');
        const first = await broker.publish(command(c, '1', { idempotencyKey: 'k' }));
        expect(await broker.publish(command(c, '2', { idempotencyKey: 'k' }))).toEqual({ position: first.position, duplicate: true });
        expect((await broker.history(c, undefined, 0)).top).toEqual(first.position);
      });

      it('publishes again once the dedupWindow it was started with has passed', async () => {
        const { broker: short } = await node(brokerSettings(SUITE_NAMESPACES, 300));
        const c = fresh('dedup-window');
        const first = await short.publish(command(c, '1', { idempotencyKey: 'k' }));
        expect((await short.publish(command(c, '2', { idempotencyKey: 'k' }))).duplicate).toBe(true);
        await sleep(600);
        const later = await short.publish(command(c, '3', { idempotencyKey: 'k' }));
        expect(later).toEqual({ position: { epoch: first.position.epoch, seq: 2 }, duplicate: false });
        // The new publication starts a new window for the key.
        expect(await short.publish(command(c, '4', { idempotencyKey: 'k' }))).toEqual({ position: later.position, duplicate: true });
        expect(seqs((await short.history(c, undefined, 100)).publications)).toEqual([1, 2]);
      });

      it('never deduplicates with a dedupWindow of 0', async () => {
        const { broker: off } = await node(brokerSettings(SUITE_NAMESPACES, 0));
        const c = fresh('dedup-off');
        const a = await off.publish(command(c, '1', { idempotencyKey: 'k' }));
        const b = await off.publish(command(c, '2', { idempotencyKey: 'k' }));
        expect([a.duplicate, b.duplicate]).toEqual([false, false]);
        expect([a.position.seq, b.position.seq]).toEqual([1, 2]);
      });
    });

    describe('tops', () => {
      it("answers every channel asked for, in one call, with what history() gives as top, published or not", async () => {
        const a = fresh('tops-a');
        const b = fresh('tops-b', 'small');
        const e = fresh('tops-e', 'eph');
        const never = fresh('tops-never');
        await publishAll(a, 3);
        await publishAll(b, 5); // trimmed to 3: the top is still 5
        await publishAll(e, 2);
        const many = range(1, 300).map((i) => fresh(`tops-${i}`));
        const asked = [a, never, b, ...many, e];
        const tops = await broker.tops(asked);
        expect(tops).toBeInstanceOf(Map);
        expect([...tops.keys()].sort()).toEqual([...asked].sort());
        for (const c of asked) expect(tops.get(c)).toEqual((await broker.history(c, undefined, 0)).top);
        expect(tops.get(a)?.seq).toBe(3);
        expect(tops.get(b)?.seq).toBe(5);
        expect(tops.get(e)?.seq).toBe(2);
        expect(tops.get(never)?.seq).toBe(0);
        expect(positionProblem(tops.get(never) as Position)).toBeUndefined();
        expect((await broker.tops([])).size).toBe(0);
      });

      it("creates no stream: a channel's first publish continues the epoch tops gave, and no other channel's epoch moves", async () => {
        const boundedStreams = broker.capabilities.boundedStreams;
        // With a stream bound, streams made by reads would have to be dropped to make room, moving epochs.
        const on = boundedStreams ? (await bounded(3)).broker : broker;
        const channels = range(1, 200).map((i) => fresh(`no-stream-${i}`));
        const first = await on.tops(channels);
        for (const c of channels) expect(first.get(c)?.seq).toBe(0);
        const p = [fresh('after-tops-1'), fresh('after-tops-2')];
        for (const c of p) expect((await on.publish(command(c, '1'))).position.seq).toBe(1);
        expect(await on.tops(channels)).toEqual(first);
        const c = channels[7] as string;
        expect((await on.publish(command(c, '1'))).position).toEqual({ epoch: first.get(c)?.epoch, seq: 1 });
      });
    });

    describe('streams and storage', () => {
      it('starts a channel first read empty at {E, 0} in epoch E: no gap, and resuming from {E, 0} recovers everything', async () => {
        const c = fresh('empty-then-publish');
        await broker.subscribe(c);
        const empty = await broker.history(c, undefined, 0);
        expect(empty.top.seq).toBe(0);
        expect(positionProblem(empty.top)).toBeUndefined();
        // Reading again, and reading from the empty position, changes nothing.
        expect((await broker.history(c, empty.top, 10)).top).toEqual(empty.top);
        const positions = await publishAll(c, 3);
        expect(positions).toEqual(range(1, 3).map((seq) => ({ epoch: empty.top.epoch, seq })));
        await until(() => deliveredTo(c).length === 3, 2000, 'three deliveries');
        expect(deliveredTo(c).map((p) => p.position)).toEqual(positions);
        const resumed = await broker.history(c, empty.top, 100);
        expect(seqs(resumed.publications)).toEqual([1, 2, 3]);
        expect(resumed.top).toEqual({ epoch: empty.top.epoch, seq: 3 });
        expect(resumed.evicted).toBeUndefined();
      });

      it('lets no number of reads, subscribes and unsubscribes of fresh channels disturb existing history', async () => {
        const boundedStreams = broker.capabilities.boundedStreams;
        // With a stream bound, the flood is many times the bound.
        const small = boundedStreams ? (await bounded(4)).broker : broker;
        const kept = [fresh('kept-a'), fresh('kept-b'), fresh('kept-c')];
        const before = new Map<string, Position[]>();
        for (const c of kept) before.set(c, await publishAll(c, 3, small));
        // What a subscribe/poll flood looks like to the broker.
        for (let i = 0; i < 200; i++) {
          const f = fresh('flood');
          await small.subscribe(f);
          const page = await small.history(f, undefined, 0);
          expect(page.top.seq).toBe(0);
          await small.history(f, page.top, 10);
          await small.tops([f]);
          await small.unsubscribe(f);
        }
        for (const c of kept) {
          const positions = before.get(c) ?? [];
          const page = await small.history(c, undefined, 100);
          expect(page.top).toEqual(positions[2]);
          expect(page.publications.map((p) => p.position)).toEqual(positions);
          expect(page.evicted).toBeUndefined();
        }
        // The bound still has room for one more stream: nothing was used up by the reads.
        expect((await small.publish(command(fresh('fourth'), '1'))).position.seq).toBe(1);
      });

      it('keeps the epoch of a channel read empty while many other channels are read, so its first publications continue from it', async () => {
        const boundedStreams = broker.capabilities.boundedStreams;
        const small = boundedStreams ? await bounded(2) : main;
        const c = fresh('waiting');
        await small.broker.subscribe(c);
        const empty = (await small.broker.history(c, undefined, 0)).top;
        for (let i = 0; i < 50; i++) await small.broker.history(fresh('other'), undefined, 0);
        const positions = await publishAll(c, 3, small.broker);
        expect(positions).toEqual(range(1, 3).map((seq) => ({ epoch: empty.epoch, seq })));
        await until(() => deliveredTo(c, small).length === 3, 2000, 'three deliveries');
        expect(deliveredTo(c, small).map((p) => p.position)).toEqual(positions);
        expect(seqs((await small.broker.history(c, empty, 100)).publications)).toEqual([1, 2, 3]);
      });

      it('refuses a publish needing a new stream with storage_full while every stream is protected, changing nothing', async (ctx) => {
        if (!broker.capabilities.boundedStreams) ctx.skip('the broker enforces no stream bound of its own (capabilities.boundedStreams is false)');
        const small = await bounded(3);
        const withHistory = fresh('protected-history');
        const withSubscriber = fresh('protected-subscriber', 'eph'); // no history
        const withKey = fresh('protected-key', 'eph'); // no history, a key
        const h = await publishAll(withHistory, 2, small.broker);
        await small.broker.subscribe(withSubscriber);
        const s1 = (await small.broker.publish(command(withSubscriber, '1'))).position;
        const k1 = (await small.broker.publish(command(withKey, '1', { idempotencyKey: 'once' }))).position;

        const newcomer = fresh('newcomer');
        await refusedWith('storage_full', small.broker.publish(command(newcomer, '1')));
        expect((await small.broker.history(newcomer, undefined, 0)).top.seq).toBe(0);
        // Each protected stream is intact and continues.
        const hPage = await small.broker.history(withHistory, undefined, 100);
        expect(hPage.publications.map((p) => p.position)).toEqual(h);
        expect(hPage.evicted).toBeUndefined();
        const s2 = (await small.broker.publish(command(withSubscriber, '2'))).position;
        expect(s2).toEqual({ epoch: s1.epoch, seq: 2 });
        await until(() => small.publications.length === 2, 2000, 'two deliveries');
        expect(small.publications.map((p) => p.position)).toEqual([s1, s2]);
        expect(await small.broker.publish(command(withKey, '2', { idempotencyKey: 'once' }))).toEqual({ position: k1, duplicate: true });

        // Unsubscribed, holding no history and no key: the only stream that may go to make room.
        await small.broker.unsubscribe(withSubscriber);
        expect((await small.broker.publish(command(newcomer, '1'))).position.seq).toBe(1);
        const dropped = await small.broker.history(withSubscriber, s2, 100);
        expect(dropped.top.seq).toBe(0);
        // Its positions are never reused: a client at s2 is in another epoch (an explicit epoch gap).
        expect(dropped.top.epoch).not.toBe(s1.epoch);
        expect(dropped.publications).toEqual([]);
        // Now every stream is protected again.
        await refusedWith('storage_full', small.broker.publish(command(withSubscriber, '3')));
        expect(await small.broker.history(withSubscriber, undefined, 0)).toEqual(dropped);
      });
    });

    describe('presence', () => {
      let clients = 0;
      const entry = (over: Partial<PresenceEntry> = {}): PresenceEntry => ({
        client: `client-${run}-${++clients}`,
        user: `user-${clients}`,
        info: JSON.stringify({ name: `Ann ${clients}`, emoji: 'é😀' }),
        node: 'node-a',
        ...over,
      });
      const byClient = (entries: readonly PresenceEntry[]): PresenceEntry[] => [...entries].sort((x, y) => (x.client < y.client ? -1 : x.client > y.client ? 1 : 0));
      /** Slack for delivery and timers on top of what the contract allows. */
      const slack = 1000;

      it('lists added entries as given and announces join, then leave on remove, to a node subscribed to the channel', async () => {
        const c = fresh('presence', 'eph');
        const ann = entry();
        const bob = entry({ info: undefined, node: 'node-b', user: ann.user }); // same user, another client
        await broker.subscribe(c);
        await broker.presenceAdd(c, ann, 10_000);
        await broker.presenceAdd(c, bob, 10_000);
        await until(() => eventsOf(c).length === 2, 2000, 'two joins');
        expect(eventsOf(c)).toEqual([
          { kind: 'join', channel: c, entry: ann },
          { kind: 'join', channel: c, entry: bob },
        ]);
        expect(byClient(await broker.presence(c))).toEqual(byClient([ann, bob]));
        await broker.presenceRemove(c, ann);
        await until(() => eventsOf(c).length === 3, 2000, 'a leave');
        expect(eventsOf(c)[2]).toEqual({ kind: 'leave', channel: c, entry: ann });
        expect(await broker.presence(c)).toEqual([bob]);
        await broker.presenceRemove(c, bob);
        await until(() => eventsOf(c).length === 4, 2000, 'the second leave');
        expect(eventsOf(c)[3]).toEqual({ kind: 'leave', channel: c, entry: bob });
        expect(await broker.presence(c)).toEqual([]);
        await presenceBarrier();
        expect(eventsOf(c)).toHaveLength(4);
      });

      it('announces nothing for channels the node does not subscribe to, yet lists their entries', async () => {
        const never = fresh('presence-unsubscribed', 'eph');
        const left = fresh('presence-left', 'eph');
        const ann = entry();
        await broker.presenceAdd(never, ann, 10_000);
        expect(await broker.presence(never)).toEqual([ann]);
        await broker.subscribe(left);
        await broker.unsubscribe(left);
        await broker.presenceAdd(left, ann, 10_000);
        await broker.presenceRemove(left, ann);
        await broker.presenceRemove(never, ann);
        await presenceBarrier();
        expect(eventsOf(never)).toEqual([]);
        expect(eventsOf(left)).toEqual([]);
        expect(await broker.presence(never)).toEqual([]);
        // And nothing for an empty channel.
        expect(await broker.presence(fresh('presence-empty', 'eph'))).toEqual([]);
      });

      it("never lists an entry past its ttl, even before it is swept", async () => {
        const c = fresh('presence-never-listed', 'eph');
        const ann = entry();
        const bob = entry();
        await broker.presenceAdd(c, ann, 200);
        await broker.presenceAdd(c, bob, 60_000);
        expect(byClient(await broker.presence(c))).toEqual(byClient([ann, bob]));
        await sleep(300);
        expect(await broker.presence(c)).toEqual([bob]);
        await broker.presenceRemove(c, bob);
      });

      it('expires an entry not touched within its ttl, announcing its leave within ttl + the sweep period', async () => {
        const c = fresh('presence-expiry', 'eph');
        const ttl = 300;
        const ann = entry();
        const bob = entry();
        await broker.subscribe(c);
        const t0 = Date.now();
        await broker.presenceAdd(c, ann, ttl);
        await broker.presenceAdd(c, bob, 60_000);
        await until(() => eventsOf(c).length === 2, 2000, 'two joins');
        // Nobody reads presence(): the broker itself must notice (its sweep).
        await until(() => eventsOf(c).length === 3, ttl + presenceSweep + slack, 'the leave of the expired entry');
        expect(Date.now() - t0).toBeGreaterThanOrEqual(ttl - 20);
        expect(eventsOf(c)[2]).toEqual({ kind: 'leave', channel: c, entry: ann });
        expect(await broker.presence(c)).toEqual([bob]);
        await broker.presenceRemove(c, bob);
      });

      it('keeps an entry that is touched within its ttl, batched across channels; touch adds nothing absent and reports it', async () => {
        const c = fresh('presence-touch', 'eph');
        const d = fresh('presence-touch-2', 'eph');
        const ttl = 400;
        const ann = entry();
        const bob = entry();
        const ghost = entry();
        await broker.subscribe(c);
        await broker.subscribe(d);
        await broker.presenceAdd(c, ann, ttl);
        await broker.presenceAdd(d, bob, ttl);
        await until(() => eventsOf(c).length === 1 && eventsOf(d).length === 1, 2000, 'two joins');
        const started = Date.now();
        while (Date.now() - started < 2 * ttl + presenceSweep) {
          await sleep(ttl / 4);
          const gone = await broker.presenceTouch(
            [
              { channel: c, client: ann.client },
              { channel: d, client: bob.client },
              { channel: c, client: ghost.client },
            ],
            ttl,
          );
          // What it did not find, it reports.
          expect(gone).toEqual([{ channel: c, client: ghost.client }]);
        }
        expect(await broker.presence(c)).toEqual([ann]);
        expect(await broker.presence(d)).toEqual([bob]);
        expect([...eventsOf(c), ...eventsOf(d)].map((e) => e.kind)).toEqual(['join', 'join']);
        // Touching stops: it goes.
        await until(() => eventsOf(c).length === 2 && eventsOf(d).length === 2, ttl + presenceSweep + slack, 'both leaves');
        expect(eventsOf(c)[1]).toEqual({ kind: 'leave', channel: c, entry: ann });
        expect(eventsOf(d)[1]).toEqual({ kind: 'leave', channel: d, entry: bob });
        expect(await broker.presence(c)).toEqual([]);
      });
    });

    describe('presence of a node that lives on', () => {
      /** Slack for delivery and timers on top of what the contract allows. */
      const slack = 1000;

      it('lists again, with a join, an entry swept while its node lived: the node\'s next refresh finds it gone and adds it', async () => {
        const c = fresh('presence-swept', 'eph');
        const ttl = 300;
        const ann: PresenceEntry = { client: `swept-${run}-${++n}`, user: 'ann', info: '{"name":"Ann"}', node: 'node-a' };
        const errors: unknown[] = [];
        // The node side: this node's entries, refreshed on demand here (the gateway runs it every ttl / 3).
        const presence = new Presence(broker, ttl, (err) => errors.push(err));
        await broker.subscribe(c);
        presence.add(c, ann);
        await until(() => eventsOf(c).length === 1, 2000, 'the join');
        // The node stalls past the ttl (or its refreshes time out) while it keeps its clients: the
        // broker's sweep takes the entry for dead.
        await until(() => eventsOf(c).length === 2, ttl + presenceSweep + slack, 'the leave of the swept entry');
        expect(eventsOf(c)[1]).toEqual({ kind: 'leave', channel: c, entry: ann });
        expect(await broker.presence(c)).toEqual([]);
        // The node goes on: its refresh finds the entry gone (the touch reports it) and adds it again, with a join.
        await presence.refresh();
        await until(() => eventsOf(c).length === 3, 2000, 'the join again');
        expect(eventsOf(c)[2]).toEqual({ kind: 'join', channel: c, entry: ann });
        expect(await broker.presence(c)).toEqual([ann]);
        // And it stays while refreshed.
        const started = Date.now();
        while (Date.now() - started < 2 * ttl + presenceSweep) {
          await sleep(ttl / 4);
          await presence.refresh();
        }
        expect(await broker.presence(c)).toEqual([ann]);
        expect(eventsOf(c)).toHaveLength(3);
        presence.remove(c, ann.client);
        await presence.settled(2000);
        await until(() => eventsOf(c).length === 4, 2000, 'the leave on remove');
        expect(eventsOf(c)[3]).toEqual({ kind: 'leave', channel: c, entry: ann });
        expect(errors).toEqual([]);
      });
    });

    describe('two nodes', () => {
      it('share positions, history and idempotency keys, and deliver across nodes', async (ctx) => {
        if (!broker.capabilities.shared) ctx.skip('the broker lives in one node (capabilities.shared is false)');
        const other = await node();
        const c = fresh('shared');
        await other.broker.subscribe(c);
        await broker.subscribe(c);
        const p1 = await broker.publish(command(c, '1', { idempotencyKey: 'k' }));
        expect(await other.broker.publish(command(c, '1', { idempotencyKey: 'k' }))).toEqual({ position: p1.position, duplicate: true });
        const p2 = await other.broker.publish(command(c, '2'));
        expect(p2.position).toEqual({ epoch: p1.position.epoch, seq: 2 });
        await until(() => deliveredTo(c).length === 2 && deliveredTo(c, other).length === 2, 2000, 'deliveries on both nodes');
        expect(deliveredTo(c).map((p) => p.position)).toEqual([p1.position, p2.position]);
        expect(deliveredTo(c, other)).toEqual(deliveredTo(c));
        expect((await other.broker.history(c, undefined, 10)).publications).toEqual((await broker.history(c, undefined, 10)).publications);
        const never = fresh('shared-never');
        expect(await other.broker.tops([c, never])).toEqual(await broker.tops([c, never]));
      });

      it('announce presence of one node to another subscribed node, and list it on both', async (ctx) => {
        if (!broker.capabilities.shared) ctx.skip('the broker lives in one node (capabilities.shared is false)');
        const other = await node();
        const c = fresh('shared-presence', 'eph');
        const ann: PresenceEntry = { client: `shared-${run}`, user: 'ann', info: '{"x":1}', node: 'node-a' };
        await other.broker.subscribe(c);
        await broker.presenceAdd(c, ann, 10_000);
        await until(() => eventsOf(c, other).length === 1, 2000, 'the join on the other node');
        expect(eventsOf(c, other)).toEqual([{ kind: 'join', channel: c, entry: ann }]);
        expect(await other.broker.presence(c)).toEqual([ann]);
        await broker.presenceRemove(c, ann);
        await until(() => eventsOf(c, other).length === 2, 2000, 'the leave on the other node');
        expect(eventsOf(c, other)[1]).toEqual({ kind: 'leave', channel: c, entry: ann });
        expect(eventsOf(c)).toEqual([]); // not subscribed here
      });
    });
  });
}
