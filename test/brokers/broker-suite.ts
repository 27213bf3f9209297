/**
 * The broker contract suite: every Broker implementation must pass it unchanged. It uses only the
 * Broker interface, gives every test fresh channels (so a shared backing store is fine), and
 * waits for delivery instead of assuming it is synchronous.
 *
 * Usage (in a *.test.ts file):
 * `brokerSuite('memory', async () => new MemoryBroker({...}), (b) => b.close(), async (limits) => new MemoryBroker({...limits}))`.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { positionProblem, TidingsError, type Position } from '@tidings/protocol';
import type { Broker, Publication, PublishCommand } from '@tidings/server';
import { publishCommand, until } from '@tidings/testing';

/** A publish command with a roomy default policy; override per test. */
export const command = publishCommand;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const seqs = (pubs: readonly Publication[]): number[] => pubs.map((p) => p.position.seq);
const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

/**
 * Small storage bounds for the retention rules. A broker maps them to its own settings; the broker it
 * returns must start over an empty store (no streams of other tests count against the bounds).
 */
export interface SuiteLimits {
  /** Channel streams the broker may hold. */
  readonly maxChannels: number;
  /** Bytes of retained history, idempotency keys and streams, as the broker counts them. */
  readonly maxHistoryBytes: number;
}

export function brokerSuite(
  name: string,
  makeBroker: () => Promise<Broker>,
  cleanup: (broker: Broker) => Promise<void>,
  makeLimited: (limits: SuiteLimits) => Promise<Broker>,
): void {
  describe(`broker contract: ${name}`, () => {
    let broker: Broker;
    let received: Publication[];
    const run = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
    let n = 0;
    /** A channel no other test (or earlier run against a shared store) has used. */
    const fresh = (label: string): string => `suite:${run}-${++n}-${label}`;
    const deliveredTo = (channel: string): Publication[] => received.filter((p) => p.channel === channel);
    const publishAll = async (channel: string, count: number, over: Partial<PublishCommand> = {}): Promise<Position[]> => {
      const out: Position[] = [];
      for (let i = 1; i <= count; i++) {
        const outcome = await broker.publish(command(channel, `{"i":${i}}`, over));
        expect(outcome.duplicate).toBe(false);
        out.push(outcome.position);
      }
      return out;
    };
    /** Publishes to a subscribed marker channel and waits for it: everything published before has been routed. */
    const barrier = async (): Promise<void> => {
      const marker = fresh('marker');
      await broker.subscribe(marker);
      await broker.publish(command(marker, '"marker"'));
      await until(() => deliveredTo(marker).length === 1, 2000, 'the marker publication');
      await broker.unsubscribe(marker);
      // A little extra time for anything that would (wrongly) arrive late.
      await sleep(20);
    };

    beforeEach(async () => {
      broker = await makeBroker();
      received = [];
      await broker.start((pub) => received.push(pub));
    });

    afterEach(async () => {
      await cleanup(broker);
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

      it('keeps the last historySize publications and reports the rest as trimmed', async () => {
        const c = fresh('trim');
        const positions = await publishAll(c, 12, { historySize: 5 });
        const epoch = positions[0]?.epoch ?? '';
        const page = await broker.history(c, undefined, 100);
        expect(page.top).toEqual({ epoch, seq: 12 });
        expect(seqs(page.publications)).toEqual([8, 9, 10, 11, 12]);
        expect(page.publications.map((p) => p.data)).toEqual(range(8, 12).map((i) => `{"i":${i}}`));
        expect(page.evicted).toBe('trimmed');
        expect(seqs((await broker.history(c, { epoch, seq: 2 }, 100)).publications)).toEqual([8, 9, 10, 11, 12]);
        expect(seqs((await broker.history(c, { epoch, seq: 9 }, 100)).publications)).toEqual([10, 11, 12]);
        expect(seqs((await broker.history(c, { epoch, seq: 9 }, 2)).publications)).toEqual([10, 11]);
      });

      it('drops publications older than historyTtl and reports them as expired', async () => {
        const c = fresh('ttl');
        const positions = await publishAll(c, 3, { historyTtl: 200 });
        const epoch = positions[0]?.epoch ?? '';
        const before = await broker.history(c, undefined, 100);
        expect(seqs(before.publications)).toEqual([1, 2, 3]);
        expect(before.evicted).toBeUndefined();
        await sleep(500);
        const after = await broker.history(c, undefined, 100);
        expect(after.publications).toEqual([]);
        expect(after.top).toEqual({ epoch, seq: 3 });
        expect(after.evicted).toBe('expired');
        // Positions continue; a later publication with a long TTL is retained alone.
        const [fourth] = await publishAll(c, 1, { historyTtl: 60_000 });
        expect(fourth).toEqual({ epoch, seq: 4 });
        const last = await broker.history(c, { epoch, seq: 0 }, 100);
        expect(seqs(last.publications)).toEqual([4]);
        expect(last.evicted).toBe('expired');
      });

      it('gives ephemeral publications positions and delivery but no history', async () => {
        const c = fresh('ephemeral');
        await broker.subscribe(c);
        const viaZero = await publishAll(c, 2, { ephemeral: true, historySize: 0, historyTtl: 0 });
        // The flag alone keeps a publication out of history, whatever the size says.
        const viaFlag = await publishAll(c, 2, { ephemeral: true });
        const epoch = viaZero[0]?.epoch ?? '';
        expect([...viaZero, ...viaFlag]).toEqual(range(1, 4).map((seq) => ({ epoch, seq })));
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

      it('publishes again once the window has passed', async () => {
        const c = fresh('dedup-window');
        const first = await broker.publish(command(c, '1', { idempotencyKey: 'k', dedupWindow: 200 }));
        expect((await broker.publish(command(c, '2', { idempotencyKey: 'k', dedupWindow: 200 }))).duplicate).toBe(true);
        await sleep(500);
        const later = await broker.publish(command(c, '3', { idempotencyKey: 'k', dedupWindow: 200 }));
        expect(later).toEqual({ position: { epoch: first.position.epoch, seq: 2 }, duplicate: false });
        // The new publication starts a new window for the key.
        expect(await broker.publish(command(c, '4', { idempotencyKey: 'k', dedupWindow: 200 }))).toEqual({ position: later.position, duplicate: true });
        expect(seqs((await broker.history(c, undefined, 100)).publications)).toEqual([1, 2]);
      });

      it('never deduplicates with a window of 0', async () => {
        const c = fresh('dedup-off');
        const a = await broker.publish(command(c, '1', { idempotencyKey: 'k', dedupWindow: 0 }));
        const b = await broker.publish(command(c, '2', { idempotencyKey: 'k', dedupWindow: 0 }));
        expect([a.duplicate, b.duplicate]).toEqual([false, false]);
        expect([a.position.seq, b.position.seq]).toEqual([1, 2]);
      });
    });

    describe('streams and storage', () => {
      /** A broker with small bounds, started and cleaned up by the test itself. */
      const limited = async (limits: Partial<SuiteLimits>): Promise<{ small: Broker; got: Publication[] }> => {
        const small = await makeLimited({ maxChannels: 1000, maxHistoryBytes: 1024 * 1024, ...limits });
        const got: Publication[] = [];
        await small.start((pub) => got.push(pub));
        return { small, got };
      };
      const storageFull = async (promise: Promise<unknown>): Promise<TidingsError> => {
        const err: unknown = await promise.then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(TidingsError);
        expect((err as TidingsError).code).toBe('storage_full');
        return err as TidingsError;
      };

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
        const { small } = await limited({ maxChannels: 4 });
        try {
          const kept = [fresh('kept-a'), fresh('kept-b'), fresh('kept-c')];
          const before = new Map<string, Position[]>();
          for (const c of kept) {
            const out: Position[] = [];
            for (let i = 1; i <= 3; i++) out.push((await small.publish(command(c, `{"i":${i}}`))).position);
            before.set(c, out);
          }
          // Many times the stream bound of fresh names: what a subscribe/poll flood looks like to the broker.
          for (let i = 0; i < 200; i++) {
            const f = fresh('flood');
            await small.subscribe(f);
            const page = await small.history(f, undefined, 0);
            expect(page.top.seq).toBe(0);
            await small.history(f, page.top, 10);
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
        } finally {
          await cleanup(small);
        }
      });

      it('keeps the epoch of a channel read empty while many other channels are read, so its first publications continue from it', async () => {
        const { small, got } = await limited({ maxChannels: 2 });
        try {
          const c = fresh('waiting');
          await small.subscribe(c);
          const empty = (await small.history(c, undefined, 0)).top;
          for (let i = 0; i < 50; i++) await small.history(fresh('other'), undefined, 0);
          const positions: Position[] = [];
          for (let i = 1; i <= 3; i++) positions.push((await small.publish(command(c, String(i)))).position);
          expect(positions).toEqual(range(1, 3).map((seq) => ({ epoch: empty.epoch, seq })));
          await until(() => got.length === 3, 2000, 'three deliveries');
          expect(got.map((p) => p.position)).toEqual(positions);
          expect(seqs((await small.history(c, empty, 100)).publications)).toEqual([1, 2, 3]);
        } finally {
          await cleanup(small);
        }
      });

      it('refuses a publish needing a new stream with storage_full while every stream is protected, changing nothing', async () => {
        const { small, got } = await limited({ maxChannels: 3 });
        try {
          const withHistory = fresh('protected-history');
          const withSubscriber = fresh('protected-subscriber');
          const withKey = fresh('protected-key');
          const h = [(await small.publish(command(withHistory, '1'))).position, (await small.publish(command(withHistory, '2'))).position];
          await small.subscribe(withSubscriber);
          const s1 = (await small.publish(command(withSubscriber, '1', { ephemeral: true, historySize: 0, historyTtl: 0 }))).position;
          const k1 = (await small.publish(command(withKey, '1', { ephemeral: true, historySize: 0, historyTtl: 0, idempotencyKey: 'once' }))).position;

          const newcomer = fresh('newcomer');
          await storageFull(small.publish(command(newcomer, '1')));
          expect((await small.history(newcomer, undefined, 0)).top.seq).toBe(0);
          // Each protected stream is intact and continues.
          const hPage = await small.history(withHistory, undefined, 100);
          expect(hPage.publications.map((p) => p.position)).toEqual(h);
          expect(hPage.evicted).toBeUndefined();
          const s2 = (await small.publish(command(withSubscriber, '2', { ephemeral: true, historySize: 0, historyTtl: 0 }))).position;
          expect(s2).toEqual({ epoch: s1.epoch, seq: 2 });
          await until(() => got.length === 2, 2000, 'two deliveries');
          expect(got.map((p) => p.position)).toEqual([s1, s2]);
          expect(await small.publish(command(withKey, '2', { ephemeral: true, historySize: 0, historyTtl: 0, idempotencyKey: 'once' }))).toEqual({
            position: k1,
            duplicate: true,
          });

          // Unsubscribed, holding no history and no key: the only stream that may go to make room.
          await small.unsubscribe(withSubscriber);
          expect((await small.publish(command(newcomer, '1'))).position.seq).toBe(1);
          const dropped = await small.history(withSubscriber, s2, 100);
          expect(dropped.top.seq).toBe(0);
          // Its positions are never reused: a client at s2 is in another epoch (an explicit epoch gap).
          expect(dropped.top.epoch).not.toBe(s1.epoch);
          expect(dropped.publications).toEqual([]);
          // Now every stream is protected again.
          await storageFull(small.publish(command(withSubscriber, '3')));
          expect(await small.history(withSubscriber, undefined, 0)).toEqual(dropped);
        } finally {
          await cleanup(small);
        }
      });

      it('refuses a publish past the byte budget with storage_full, keeping unexpired history, and takes publishes again once history expires', async () => {
        const { small } = await limited({ maxHistoryBytes: 16 * 1024 });
        try {
          const kilobyte = JSON.stringify('x'.repeat(1000));
          const accepted: { channel: string; position: Position }[] = [];
          let refused: string | undefined;
          for (let i = 0; i < 100 && refused === undefined; i++) {
            const c = fresh('budget');
            try {
              accepted.push({ channel: c, position: (await small.publish(command(c, kilobyte, { historyTtl: 300 }))).position });
            } catch (err) {
              expect(err).toBeInstanceOf(TidingsError);
              expect((err as TidingsError).code).toBe('storage_full');
              refused = c;
            }
          }
          expect(refused).toBeDefined();
          expect(accepted.length).toBeGreaterThanOrEqual(4);
          // Refused: no position consumed. Accepted: all still there.
          expect((await small.history(refused as string, undefined, 0)).top.seq).toBe(0);
          for (const { channel, position } of accepted) {
            const page = await small.history(channel, undefined, 10);
            expect(page.publications.map((p) => [p.position, p.data])).toEqual([[position, kilobyte]]);
          }
          // A second kilobyte on a channel that already holds one is refused too: nothing is evicted for it.
          const first = accepted[0] as { channel: string; position: Position };
          await storageFull(small.publish(command(first.channel, kilobyte, { historyTtl: 300 })));
          expect((await small.history(first.channel, undefined, 0)).top).toEqual(first.position);
          await sleep(500);
          // Expired history is released (nobody needs to read those channels) and makes room.
          for (let i = 0; i < accepted.length; i++) {
            expect((await small.publish(command(fresh('after-expiry'), kilobyte, { historyTtl: 300 }))).position.seq).toBe(1);
          }
        } finally {
          await cleanup(small);
        }
      });
    });
  });
}
