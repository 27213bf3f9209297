/**
 * The in-memory broker: the shared contract suite, plus what only the memory broker promises
 * (bounds on channels and idempotency keys, an injectable clock, compaction of its history ring).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { positionProblem, type Position } from '@tidings/protocol';
import { MemoryBroker, type EvictionReason, type Publication } from '@tidings/server';
import { newEpoch } from '../../packages/server/src/brokers/memory.js';
import { brokerSuite, command } from './broker-suite.js';

brokerSuite(
  'memory',
  () => Promise.resolve(new MemoryBroker({ maxChannels: 10_000, dedupMaxKeys: 1000 })),
  (broker) => broker.close(),
);

const seqs = (pubs: readonly Publication[]): number[] => pubs.map((p) => p.position.seq);
const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

/** A memory broker on a hand-driven clock. */
function clocked(opts: { maxChannels?: number; dedupMaxKeys?: number } = {}): { broker: MemoryBroker; clock: { t: number } } {
  const clock = { t: 1_000_000 };
  const broker = new MemoryBroker({ maxChannels: opts.maxChannels ?? 1000, dedupMaxKeys: opts.dedupMaxKeys ?? 1000, now: () => clock.t });
  return { broker, clock };
}

describe('MemoryBroker', () => {
  describe('newEpoch', () => {
    it('makes 8 lower-case base-36 characters, valid as a position epoch, and does not repeat', () => {
      const epochs = new Set<string>();
      for (let i = 0; i < 2000; i++) {
        const e = newEpoch();
        expect(e).toMatch(/^[0-9a-z]{8}$/);
        expect(positionProblem({ epoch: e, seq: 0 })).toBeUndefined();
        epochs.add(e);
      }
      expect(epochs.size).toBe(2000);
    });
  });

  describe('clock', () => {
    it('expires a publication exactly historyTtl ms after it was published', async () => {
      const { broker, clock } = clocked();
      const start = clock.t;
      await broker.publish(command('c', '1', { historyTtl: 1000 }));
      clock.t = start + 500;
      await broker.publish(command('c', '2', { historyTtl: 1000 }));
      clock.t = start + 999;
      let page = await broker.history('c', undefined, 10);
      expect(seqs(page.publications)).toEqual([1, 2]);
      expect(page.evicted).toBeUndefined();
      clock.t = start + 1000;
      page = await broker.history('c', undefined, 10);
      expect(seqs(page.publications)).toEqual([2]);
      expect(page.evicted).toBe('expired');
      clock.t = start + 1499;
      expect(seqs((await broker.history('c', undefined, 10)).publications)).toEqual([2]);
      clock.t = start + 1500;
      page = await broker.history('c', undefined, 10);
      expect(page.publications).toEqual([]);
      expect(page.top.seq).toBe(2);
    });

    it('holds an idempotency key for exactly dedupWindow ms', async () => {
      const { broker, clock } = clocked();
      const start = clock.t;
      const first = await broker.publish(command('c', '1', { idempotencyKey: 'k', dedupWindow: 1000 }));
      clock.t = start + 999;
      expect(await broker.publish(command('c', '2', { idempotencyKey: 'k', dedupWindow: 1000 }))).toEqual({ position: first.position, duplicate: true });
      clock.t = start + 1000;
      expect(await broker.publish(command('c', '3', { idempotencyKey: 'k', dedupWindow: 1000 }))).toEqual({
        position: { epoch: first.position.epoch, seq: 2 },
        duplicate: false,
      });
    });

    it('reports the latest eviction reason: trimmed after expired', async () => {
      const { broker, clock } = clocked();
      await broker.publish(command('c', '1', { historySize: 2, historyTtl: 100 }));
      clock.t += 100;
      expect((await broker.history('c', undefined, 10)).evicted).toBe('expired');
      for (let i = 0; i < 3; i++) await broker.publish(command('c', '1', { historySize: 2, historyTtl: 100 }));
      const page = await broker.history('c', undefined, 10);
      expect(seqs(page.publications)).toEqual([3, 4]);
      expect(page.evicted).toBe('trimmed');
    });
  });

  describe('maxChannels', () => {
    it('drops the least recently used channel, which then starts a new epoch at seq 1', async () => {
      const broker = new MemoryBroker({ maxChannels: 3, dedupMaxKeys: 10 });
      const a1 = await broker.publish(command('a', '1'));
      await broker.publish(command('b', '1'));
      await broker.publish(command('c', '1'));
      expect(broker.size).toBe(3);
      // Touch a (publish) and b (history read): c is now the least recently used.
      expect((await broker.publish(command('a', '2'))).position).toEqual({ epoch: a1.position.epoch, seq: 2 });
      const bTop = (await broker.history('b', undefined, 10)).top;
      await broker.publish(command('d', '1'));
      expect(broker.size).toBe(3);
      const c2 = await broker.publish(command('c', '2')); // evicts a, the least recently used now
      expect(c2.position.seq).toBe(1);
      expect(broker.size).toBe(3);
      expect((await broker.history('b', undefined, 10)).top).toEqual(bTop); // b survived
      const aAgain = await broker.history('a', undefined, 10);
      expect(aAgain.top.seq).toBe(0);
      expect(aAgain.top.epoch).not.toBe(a1.position.epoch);
      expect(aAgain.publications).toEqual([]);
      expect(broker.size).toBe(3);
    });

    it('keeps at most maxChannels streams and evicts in LRU order (model-based)', async () => {
      const op = fc.record({ kind: fc.constantFrom('publish', 'history'), channel: fc.nat(6) });
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 1, max: 4 }), fc.array(op, { maxLength: 60, size: 'max' }), async (maxChannels, ops) => {
          const broker = new MemoryBroker({ maxChannels, dedupMaxKeys: 10 });
          /** Least recently used first. */
          const lru: string[] = [];
          const model = new Map<string, { epoch: string | undefined; seq: number }>();
          const pastEpochs = new Map<string, Set<string>>();
          for (const { kind, channel: i } of ops) {
            const channel = `ch${i}`;
            const idx = lru.indexOf(channel);
            if (idx !== -1) lru.splice(idx, 1);
            else {
              if (lru.length >= maxChannels) model.delete(lru.shift() as string);
              model.set(channel, { epoch: undefined, seq: 0 });
            }
            lru.push(channel);
            const state = model.get(channel) as { epoch: string | undefined; seq: number };
            let got: Position;
            if (kind === 'publish') {
              state.seq += 1;
              got = (await broker.publish(command(channel, '1'))).position;
            } else {
              got = (await broker.history(channel, undefined, 10)).top;
            }
            expect(got.seq).toBe(state.seq);
            if (state.epoch === undefined) {
              // A new stream: an epoch this channel never had before.
              const past = pastEpochs.get(channel) ?? new Set<string>();
              expect(past.has(got.epoch)).toBe(false);
              past.add(got.epoch);
              pastEpochs.set(channel, past);
              state.epoch = got.epoch;
            }
            expect(got.epoch).toBe(state.epoch);
            expect(broker.size).toBe(model.size);
            expect(broker.size).toBeLessThanOrEqual(maxChannels);
          }
        }),
        { numRuns: 300 },
      );
    });
  });

  describe('dedupMaxKeys', () => {
    it('remembers at most dedupMaxKeys keys per channel, forgetting the oldest', async () => {
      const broker = new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 2 });
      const pub = (key: string): Promise<[number, boolean]> =>
        broker.publish(command('c', '1', { idempotencyKey: key })).then((o) => [o.position.seq, o.duplicate]);
      expect(await pub('k1')).toEqual([1, false]);
      expect(await pub('k2')).toEqual([2, false]);
      expect(await pub('k3')).toEqual([3, false]); // forgets k1
      expect(await pub('k3')).toEqual([3, true]);
      expect(await pub('k2')).toEqual([2, true]);
      expect(await pub('k1')).toEqual([4, false]); // k1 is new again; forgets k2
      expect(await pub('k2')).toEqual([5, false]); // forgets k3
      expect(await pub('k1')).toEqual([4, true]);
      expect(await pub('k3')).toEqual([6, false]);
    });

    it('remembers no key at all with dedupMaxKeys 0', async () => {
      const broker = new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 0 });
      expect((await broker.publish(command('c', '1', { idempotencyKey: 'k' }))).duplicate).toBe(false);
      expect(await broker.publish(command('c', '1', { idempotencyKey: 'k' }))).toMatchObject({ position: { seq: 2 }, duplicate: false });
    });
  });

  describe('history ring', () => {
    it('returns exactly the last 100 after 10,000 publishes with historySize 100', async () => {
      const broker = new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 });
      for (let i = 1; i <= 10_000; i++) await broker.publish(command('c', String(i), { historySize: 100 }));
      const page = await broker.history('c', undefined, 1000);
      expect(page.top.seq).toBe(10_000);
      expect(seqs(page.publications)).toEqual(range(9901, 10_000));
      expect(page.publications.map((p) => p.data)).toEqual(range(9901, 10_000).map(String));
      expect(page.evicted).toBe('trimmed');
      const epoch = page.top.epoch;
      expect(seqs((await broker.history('c', { epoch, seq: 9950 }, 1000)).publications)).toEqual(range(9951, 10_000));
      expect(seqs((await broker.history('c', { epoch, seq: 5 }, 3)).publications)).toEqual([9901, 9902, 9903]);
      expect(seqs((await broker.history('c', { epoch, seq: 9999 }, 1000)).publications)).toEqual([10_000]);
    });

    it('matches a naive model of size and TTL eviction under any interleaving (model-based)', async () => {
      const op = fc.oneof(
        { arbitrary: fc.record({ kind: fc.constant('publish' as const), advance: fc.nat(20) }), weight: 6 },
        { arbitrary: fc.record({ kind: fc.constant('advance' as const), advance: fc.nat(200) }), weight: 1 },
        {
          arbitrary: fc.record({ kind: fc.constant('history' as const), since: fc.option(fc.nat(400), { nil: undefined }), limit: fc.nat(40) }),
          weight: 2,
        },
      );
      let compactionsLikely = 0;
      await fc.assert(
        fc.asyncProperty(fc.nat(20), fc.integer({ min: 1, max: 400 }), fc.array(op, { maxLength: 400, size: 'max' }), async (historySize, historyTtl, ops) => {
          const { broker, clock } = clocked();
          let top = 0;
          let retained: { seq: number; expires: number }[] = [];
          let evicted: EvictionReason | undefined;
          let dropped = 0;
          const expire = (): void => {
            const before = retained.length;
            retained = retained.filter((e) => e.expires > clock.t);
            dropped += before - retained.length;
            if (retained.length < before) evicted = 'expired';
          };
          for (const o of ops) {
            if (o.kind !== 'history') clock.t += o.advance;
            if (o.kind === 'publish') {
              top += 1;
              const outcome = await broker.publish(command('c', `${top}`, { historySize, historyTtl }));
              expect(outcome.position.seq).toBe(top);
              if (historySize > 0) {
                retained.push({ seq: top, expires: clock.t + historyTtl });
                if (retained.length > historySize) {
                  dropped += retained.length - historySize;
                  retained = retained.slice(-historySize);
                  evicted = 'trimmed';
                }
                expire();
              }
            } else if (o.kind === 'history') {
              const epoch = (await broker.history('c', undefined, 0)).top.epoch;
              const page = await broker.history('c', o.since === undefined ? undefined : { epoch, seq: o.since }, o.limit);
              expire();
              const after = o.since ?? 0;
              const want = retained.filter((e) => e.seq > after).slice(0, o.limit);
              expect(page.top).toEqual({ epoch, seq: top });
              expect(seqs(page.publications)).toEqual(want.map((e) => e.seq));
              expect(page.publications.map((p) => p.data)).toEqual(want.map((e) => String(e.seq)));
              expect(page.evicted).toBe(evicted);
            }
          }
          if (dropped > 64) compactionsLikely++;
        }),
        { numRuns: 300 },
      );
      // Enough runs evicted more than 64 entries for the ring to compact.
      expect(compactionsLikely).toBeGreaterThan(30);
    });
  });

  describe('close', () => {
    it('forgets every stream and subscription and stops delivering', async () => {
      const broker = new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 });
      const received: Publication[] = [];
      await broker.start((p) => received.push(p));
      await broker.subscribe('c');
      const first = await broker.publish(command('c', '1'));
      expect(received).toHaveLength(1);
      await broker.close();
      expect(broker.size).toBe(0);
      const after = await broker.publish(command('c', '2'));
      expect(after.position.seq).toBe(1);
      expect(after.position.epoch).not.toBe(first.position.epoch);
      expect(received).toHaveLength(1);
    });
  });

  describe('a channel mixing ephemeral and stored publications', () => {
    it('keeps only the stored ones in history', async () => {
      const broker = new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 });
      await broker.publish(command('c', '1'));
      await broker.publish(command('c', '2', { ephemeral: true }));
      await broker.publish(command('c', '3'));
      const page = await broker.history('c', undefined, 10);
      expect(seqs(page.publications)).toEqual([1, 3]);
      expect(seqs((await broker.history('c', { epoch: page.top.epoch, seq: 1 }, 10)).publications)).toEqual([3]);
    });

    // Regression: history once located `since` by arithmetic, assuming consecutive stored seqs;
    // ephemeral publications (not stored) leave holes.
    it('returns every stored publication after since when ephemeral ones left holes', async () => {
      const broker = new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 });
      await broker.publish(command('c', '1'));
      await broker.publish(command('c', '2', { ephemeral: true }));
      await broker.publish(command('c', '3', { ephemeral: true }));
      for (const d of ['4', '5', '6']) await broker.publish(command('c', d));
      const epoch = (await broker.history('c', undefined, 0)).top.epoch;
      const after3 = seqs((await broker.history('c', { epoch, seq: 3 }, 10)).publications);
      const other = new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 });
      await other.publish(command('c', '1'));
      await other.publish(command('c', '2', { ephemeral: true }));
      await other.publish(command('c', '3'));
      const after2 = seqs((await other.history('c', { epoch: (await other.history('c', undefined, 0)).top.epoch, seq: 2 }, 10)).publications);
      expect({ after3, after2 }).toEqual({ after3: [4, 5, 6], after2: [3] });
    });
  });
});
