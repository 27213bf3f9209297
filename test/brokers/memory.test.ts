/**
 * The in-memory broker: the shared contract suite, plus what only the memory broker promises
 * (bounds on streams, bytes and idempotency keys, derived epochs, the expiry sweep, an injectable
 * clock, compaction of its history ring).
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { positionProblem, TidingsError, type Position } from '@tidings/protocol';
import {
  MemoryBroker,
  planResume,
  type BrokerHandlers,
  type BrokerSettings,
  type EvictionReason,
  type PresenceEvent,
  type Publication,
  type PublishOutcome,
  type Retention,
} from '@tidings/server';
import { brokerSettings } from '@tidings/testing';
import {
  bucketOf,
  deriveEpoch,
  ENTRY_OVERHEAD,
  EVICTION_SCAN,
  GENERATION_BUCKETS,
  KEY_OVERHEAD,
  newEpoch,
  STREAM_OVERHEAD,
  type MemoryBrokerOptions,
} from '../../packages/server/src/brokers/memory.js';
import { brokerSuite, command } from './broker-suite.js';

// The sweep runs every 100 ms, so presence leaves of expired entries come within ttl + 100 ms.
brokerSuite('memory', (limits) => Promise.resolve(new MemoryBroker({ maxChannels: limits?.maxChannels ?? 10_000, dedupMaxKeys: 1000, sweepInterval: 100 })), {
  presenceSweep: 100,
});

const seqs = (pubs: readonly Publication[]): number[] => pubs.map((p) => p.position.seq);
const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
const utf8 = (s: string): number => Buffer.byteLength(s, 'utf8');
const sum = (xs: Iterable<{ bytes: number }>): number => [...xs].reduce((n, x) => n + x.bytes, 0);

/** What the memory broker counts against maxHistoryBytes, as documented. */
const entryBytes = (channel: string, data: string, type?: string): number => utf8(data) + utf8(type ?? '') + utf8(channel) + ENTRY_OVERHEAD;
const streamBytes = (channel: string): number => utf8(channel) + STREAM_OVERHEAD;
const keyBytes = (key: string): number => utf8(key) + KEY_OVERHEAD;

const retention = (historySize: number, historyTtl: number, ephemeral = false): Retention => ({ historySize, historyTtl, ephemeral });
/** Settings whose default namespace ("") has this retention; `more` adds namespaces. */
const keep = (historySize: number, historyTtl: number, dedupWindow = 60_000, more: BrokerSettings['namespaces'] = {}): BrokerSettings =>
  brokerSettings({ '': retention(historySize, historyTtl), ...more }, dedupWindow);

/** Handlers collecting what a broker reports. */
function collect(): { handlers: BrokerHandlers; got: Publication[]; presence: PresenceEvent[] } {
  const got: Publication[] = [];
  const presence: PresenceEvent[] = [];
  return { handlers: { publication: (p) => got.push(p), presence: (e) => presence.push(e), status: () => undefined }, got, presence };
}

/** A memory broker, started with `settings` (default: brokerSettings()). */
async function started(opts: MemoryBrokerOptions, settings: BrokerSettings = brokerSettings()): Promise<MemoryBroker> {
  const broker = new MemoryBroker(opts);
  await broker.start(collect().handlers, settings);
  return broker;
}

/** A memory broker on a hand-driven clock (no periodic sweep unless asked), started with `settings`. */
async function clocked(
  opts: Partial<MemoryBrokerOptions> = {},
  settings: BrokerSettings = brokerSettings(),
): Promise<{ broker: MemoryBroker; clock: { t: number }; got: Publication[]; presence: PresenceEvent[] }> {
  const clock = { t: 1_000_000 };
  const broker = new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 1000, sweepInterval: 0, now: () => clock.t, ...opts });
  const { handlers, got, presence } = collect();
  await broker.start(handlers, settings);
  return { broker, clock, got, presence };
}

/** `count` channel names that share one generation bucket (`prefix` followed by a number, or made by `prefix`). */
function namesInOneBucket(count: number, prefix: string | ((i: number) => string)): string[] {
  const byBucket = new Map<number, string[]>();
  for (let i = 0; ; i++) {
    const name = typeof prefix === 'string' ? `${prefix}${i}` : prefix(i);
    const list = byBucket.get(bucketOf(name)) ?? [];
    list.push(name);
    byBucket.set(bucketOf(name), list);
    if (list.length === count) return list;
  }
}

const isStorageFull = (err: unknown): boolean => err instanceof TidingsError && err.code === 'storage_full';

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
      const { broker, clock } = await clocked({}, keep(100, 1000));
      const start = clock.t;
      await broker.publish(command('c', '1'));
      clock.t = start + 500;
      await broker.publish(command('c', '2'));
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
      const { broker, clock } = await clocked({}, keep(100, 60_000, 1000));
      const start = clock.t;
      const first = await broker.publish(command('c', '1', { idempotencyKey: 'k' }));
      clock.t = start + 999;
      expect(await broker.publish(command('c', '2', { idempotencyKey: 'k' }))).toEqual({ position: first.position, duplicate: true });
      clock.t = start + 1000;
      expect(await broker.publish(command('c', '3', { idempotencyKey: 'k' }))).toEqual({
        position: { epoch: first.position.epoch, seq: 2 },
        duplicate: false,
      });
    });

    it('reports the latest eviction reason: trimmed after expired', async () => {
      const { broker, clock } = await clocked({}, keep(2, 100));
      await broker.publish(command('c', '1'));
      clock.t += 100;
      expect((await broker.history('c', undefined, 10)).evicted).toBe('expired');
      for (let i = 0; i < 3; i++) await broker.publish(command('c', '1'));
      const page = await broker.history('c', undefined, 10);
      expect(seqs(page.publications)).toEqual([3, 4]);
      expect(page.evicted).toBe('trimmed');
    });
  });

  describe('streams: only a publish creates one', () => {
    it("survives the review's flood: 110k subscribe/read/unsubscribe of fresh channels store nothing and disturb nothing", async () => {
      const broker = await started({ maxChannels: 100_000, dedupMaxKeys: 10 });
      const kept = ['a', 'b', 'c'];
      const positions: Position[] = [];
      for (const c of kept) positions.push((await broker.publish(command(c, `"${c}"`))).position);
      for (let i = 0; i < 110_000; i++) {
        const f = `flood:${i}`;
        await broker.subscribe(f);
        const page = await broker.history(f, undefined, 0);
        await broker.history(f, page.top, 100);
        await broker.unsubscribe(f);
      }
      for (const [i, c] of kept.entries()) {
        const page = await broker.history(c, undefined, 10);
        expect(page.publications.map((p) => p.position)).toEqual([positions[i]]);
        expect(page.evicted).toBeUndefined();
      }
      expect(broker.stats()).toEqual({
        streams: 3,
        subscribed: 0,
        historyBytes: kept.reduce((n, c) => n + streamBytes(c) + entryBytes(c, `"${c}"`), 0),
      });
      await broker.close();
    });

    it('counts node subscriptions while they last, and nothing once they end', async () => {
      const broker = new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 });
      for (let i = 0; i < 1000; i++) await broker.subscribe(`s${i}`);
      for (let i = 0; i < 1000; i++) await broker.history(`s${i}`, undefined, 0);
      expect(broker.stats()).toEqual({ streams: 0, subscribed: 1000, historyBytes: 0 });
      for (let i = 0; i < 1000; i++) await broker.unsubscribe(`s${i}`);
      expect(broker.stats()).toEqual({ streams: 0, subscribed: 0, historyBytes: 0 });
      expect(broker.size).toBe(0);
    });
  });

  describe('maxChannels', () => {
    it('drops the least recently used droppable stream; the channel comes back in a new epoch', async () => {
      const { broker, clock } = await clocked({ maxChannels: 3 }, keep(100, 100));
      const a1 = await broker.publish(command('a', '1'));
      await broker.publish(command('b', '1'));
      const c1 = await broker.publish(command('c', '1'));
      clock.t += 100; // every history expired: all three droppable
      // Touch a (a publish, which protects it again) and b (a history read): c is now the least recently used.
      expect((await broker.publish(command('a', '2'))).position).toEqual({ epoch: a1.position.epoch, seq: 2 });
      const bTop = (await broker.history('b', undefined, 10)).top;
      expect((await broker.publish(command('d', '1'))).position.seq).toBe(1);
      expect(broker.size).toBe(3);
      expect((await broker.history('b', undefined, 10)).top).toEqual(bTop); // b survived
      const cNow = await broker.history('c', undefined, 10);
      expect(cNow.top.seq).toBe(0);
      expect(cNow.top.epoch).not.toBe(c1.position.epoch);
      expect(cNow.publications).toEqual([]);
      expect(broker.size).toBe(3); // reading it created nothing
    });

    it('gives positions of a dropped stream an explicit epoch gap, and continues a re-created one from its empty read', async () => {
      const { broker, clock } = await clocked({ maxChannels: 1 }, keep(100, 100));
      const xs: Position[] = [];
      for (let i = 1; i <= 3; i++) xs.push((await broker.publish(command('x', String(i)))).position);
      const held = xs[1] as Position; // a client that saw x up to seq 2
      clock.t += 100;
      await broker.publish(command('y', '1')); // x holds nothing unexpired: dropped for y
      const page = await broker.history('x', held, 100);
      expect(page.top.seq).toBe(0);
      expect(page.top.epoch).not.toBe(held.epoch);
      expect(page.publications).toEqual([]);
      expect(planResume('x', held, page, [], false)).toEqual({
        steps: [{ gap: { channel: 'x', from: held, to: page.top, reason: 'epoch' } }],
        last: page.top,
        recovered: false,
      });
      // y holds unexpired history: x cannot come back yet, and trying changes nothing.
      await expect(broker.publish(command('x', '4'))).rejects.toMatchObject({ code: 'storage_full' });
      expect((await broker.history('x', undefined, 0)).top).toEqual(page.top);
      clock.t += 100;
      // Dropping y moves y's bucket on, not x's: x still starts in the epoch its empty read gave.
      expect(bucketOf('x')).not.toBe(bucketOf('y'));
      const again = await broker.publish(command('x', '4'));
      expect(again.position).toEqual({ epoch: page.top.epoch, seq: 1 }); // continuous with the empty read
      const resumed = await broker.history('x', page.top, 100);
      expect(planResume('x', page.top, resumed, [], false)).toEqual({ steps: [{ pub: resumed.publications[0] }], last: again.position, recovered: true });
    });

    it('protects a stream holding only an unexpired idempotency key until the key expires', async () => {
      // The default namespace is ephemeral here: no history protects anything, only the key.
      const { broker, clock } = await clocked({ maxChannels: 1 }, brokerSettings({ '': retention(0, 0, true) }, 1000));
      const k = await broker.publish(command('k', '1', { idempotencyKey: 'once' }));
      clock.t += 999;
      await expect(broker.publish(command('n', '1'))).rejects.toMatchObject({ code: 'storage_full' });
      expect(await broker.publish(command('k', '2', { idempotencyKey: 'once' }))).toEqual({ position: k.position, duplicate: true });
      clock.t += 1;
      expect((await broker.publish(command('n', '1'))).position.seq).toBe(1);
      expect((await broker.history('k', undefined, 0)).top.seq).toBe(0);
    });

    it('examines at most EVICTION_SCAN streams per attempt, moving protected ones to the back', async () => {
      const max = EVICTION_SCAN + 8;
      const { broker, clock } = await clocked({ maxChannels: max }, keep(100, 60_000, 60_000, { short: retention(100, 100) }));
      for (let i = 0; i < max - 1; i++) await broker.publish(command(`p${i}`, '1'));
      const spare = await broker.publish(command('short:spare', '1'));
      clock.t += 100; // spare is droppable, but the most recently used
      await expect(broker.publish(command('new', '1'))).rejects.toMatchObject({ code: 'storage_full' });
      expect(broker.size).toBe(max);
      // The examined streams moved to the back: the next attempt reaches spare.
      expect((await broker.publish(command('new', '1'))).position.seq).toBe(1);
      expect(broker.size).toBe(max);
      const spareNow = (await broker.history('short:spare', undefined, 0)).top;
      expect(spareNow.seq).toBe(0);
      expect(spareNow.epoch).not.toBe(spare.position.epoch);
      for (let i = 0; i < max - 1; i++) expect((await broker.history(`p${i}`, undefined, 10)).publications).toHaveLength(1);
    });
  });

  describe('derived epochs', () => {
    const manual = (life: string, generation: number, channel: string): string =>
      createHash('sha256').update(`${life}:${generation}:${channel}`).digest().readUIntBE(0, 6).toString(36).padStart(8, '0').slice(-8);

    it('follow the documented formula: sha256 of life:generation:channel, 6 bytes big-endian, base 36, last 8 digits', () => {
      // Pinned, so another implementation (a Redis script, another language) can be checked against them.
      expect(deriveEpoch('0123456789abcdef', 0, 'chat:room')).toBe('k8k8hc7o');
      expect(deriveEpoch('0123456789abcdef', 1, 'chat:room')).toBe('tlrgcc6y');
      for (const [life, gen, channel] of [['l', 0, 'a'], ['life', 7, 'ns:x/y@z'], ['é', 123456, 'a:b:c']] as const) {
        expect(deriveEpoch(life, gen, channel)).toBe(manual(life, gen, channel));
      }
    });

    it('bucket channels by FNV-1a 32-bit of their UTF-8 bytes, modulo GENERATION_BUCKETS', () => {
      const fnv = (bytes: Uint8Array): number => {
        let h = 0x811c9dc5;
        for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
        return h;
      };
      expect(GENERATION_BUCKETS).toBe(1024);
      // FNV-1a test vectors.
      expect(bucketOf('')).toBe(0x811c9dc5 % 1024);
      expect(bucketOf('a')).toBe(0xe40c292c % 1024);
      expect(bucketOf('foobar')).toBe(0xbf9cf968 % 1024);
      for (const c of ['chat:room', 'é😀', 'x'.repeat(200)]) expect(bucketOf(c)).toBe(fnv(Buffer.from(c, 'utf8')) % 1024);
    });

    it('are always 8 base-36 characters: a valid epoch (1-16 letters or digits) (property)', () => {
      fc.assert(
        fc.property(fc.string(), fc.nat(), fc.string({ unit: 'grapheme' }), (life, generation, channel) => {
          const e = deriveEpoch(life, generation, channel);
          expect(e).toMatch(/^[0-9a-z]{8}$/);
          expect(positionProblem({ epoch: e, seq: 0 })).toBeUndefined();
          expect(bucketOf(channel)).toBeGreaterThanOrEqual(0);
          expect(bucketOf(channel)).toBeLessThan(GENERATION_BUCKETS);
        }),
        { numRuns: 500 },
      );
    });

    it('give an empty channel the epoch of its first publication, the same on every broker sharing the life', async () => {
      const a = await started({ maxChannels: 10, dedupMaxKeys: 10, life: 'shared-life' });
      const b = await started({ maxChannels: 10, dedupMaxKeys: 10, life: 'shared-life' });
      const empty = (await a.history('c', undefined, 0)).top;
      expect(empty).toEqual({ epoch: deriveEpoch('shared-life', 0, 'c'), seq: 0 });
      expect((await b.history('c', undefined, 0)).top).toEqual(empty);
      expect((await b.publish(command('c', '1'))).position).toEqual({ epoch: empty.epoch, seq: 1 });
      expect((await a.publish(command('c', '1'))).position).toEqual({ epoch: empty.epoch, seq: 1 });
      // A broker of another life (the default: random) gives every channel other epochs.
      const other = new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 });
      for (const c of ['c', 'd', 'e']) expect((await other.history(c, undefined, 0)).top.epoch).not.toBe((await a.history(c, undefined, 0)).top.epoch);
    });

    it("move only the dropped stream's bucket to a new generation", async () => {
      const [victim, mate] = namesInOneBucket(2, 'v') as [string, string];
      const stranger = ['s0', 's1', 's2'].find((n) => bucketOf(n) !== bucketOf(victim)) as string;
      const { broker, clock } = await clocked({ maxChannels: 1, life: 'L' }, keep(100, 100));
      const v = await broker.publish(command(victim, '1'));
      expect(v.position).toEqual({ epoch: deriveEpoch('L', 0, victim), seq: 1 });
      const mateBefore = (await broker.history(mate, undefined, 0)).top;
      expect(mateBefore).toEqual({ epoch: deriveEpoch('L', 0, mate), seq: 0 });
      clock.t += 100;
      const s = await broker.publish(command(stranger, '1')); // drops victim (its history expired)
      expect(s.position).toEqual({ epoch: deriveEpoch('L', 0, stranger), seq: 1 });
      expect((await broker.history(victim, undefined, 0)).top).toEqual({ epoch: deriveEpoch('L', 1, victim), seq: 0 });
      // The mate never had a stream, yet moves too: a client holding mateBefore gets an explicit epoch gap.
      const mateAfter = await broker.history(mate, mateBefore, 10);
      expect(mateAfter.top).toEqual({ epoch: deriveEpoch('L', 1, mate), seq: 0 });
      expect(planResume(mate, mateBefore, mateAfter, [], false).steps).toEqual([
        { gap: { channel: mate, from: mateBefore, to: mateAfter.top, reason: 'epoch' } },
      ]);
    });

    it('change with every life: close() starts a new one', async () => {
      const broker = new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10, life: 'first' });
      const before = (await broker.history('c', undefined, 0)).top;
      await broker.close();
      const after = (await broker.history('c', undefined, 0)).top;
      expect(after.seq).toBe(0);
      expect(after.epoch).not.toBe(before.epoch);
    });
  });

  describe('maxHistoryBytes', () => {
    it('counts each retained entry (UTF-8), key and stream in historyBytes, and releases them on trim, expiry and close', async () => {
      const { broker, clock } = await clocked({}, brokerSettings({ chat: retention(2, 1000), typing: retention(0, 0, true) }, 500));
      expect(broker.stats()).toEqual({ streams: 0, subscribed: 0, historyBytes: 0 });
      const data = JSON.stringify('é😀 x');
      expect([data.length, utf8(data)]).toEqual([7, 10]);
      await broker.publish(command('chat:room', data, { type: 'chat.message', idempotencyKey: 'ключ' }));
      let want = streamBytes('chat:room') + entryBytes('chat:room', data, 'chat.message') + keyBytes('ключ');
      expect(broker.stats()).toEqual({ streams: 1, subscribed: 0, historyBytes: want });
      // Ephemeral, no key: the stream alone.
      await broker.publish(command('typing:x', '1'));
      want += streamBytes('typing:x');
      expect(broker.stats().historyBytes).toBe(want);
      // Two more with historySize 2: the first is trimmed and released.
      await broker.publish(command('chat:room', '1'));
      await broker.publish(command('chat:room', '22'));
      want += entryBytes('chat:room', '1') + entryBytes('chat:room', '22') - entryBytes('chat:room', data, 'chat.message');
      expect(broker.stats().historyBytes).toBe(want);
      // The key's window ends first; nobody publishes with it again: the sweep releases it.
      clock.t += 500;
      expect(broker.sweep()).toBe(keyBytes('ключ'));
      // Then the entries expire; a read releases them.
      clock.t += 500;
      expect((await broker.history('chat:room', undefined, 10)).evicted).toBe('expired');
      expect(broker.stats()).toEqual({ streams: 2, subscribed: 0, historyBytes: streamBytes('chat:room') + streamBytes('typing:x') });
      await broker.close();
      expect(broker.stats()).toEqual({ streams: 0, subscribed: 0, historyBytes: 0 });
    });

    it('refuses a publish over the budget with storage_full naming it, consuming no position and evicting nothing', async () => {
      // o: one publication kept per channel; e: ephemeral. Names of one length, so every stream costs the same.
      const per = streamBytes('o:c0') + entryBytes('o:c0', '"x"');
      const budget = streamBytes('e:c9') + 3 * per;
      const { broker, got } = await clocked({ maxHistoryBytes: budget }, brokerSettings({ o: retention(1, 60_000), e: retention(100, 60_000, true) }));
      await broker.subscribe('e:c9'); // protected, though it holds nothing
      expect((await broker.publish(command('e:c9', '1'))).position.seq).toBe(1); // the stream's bytes alone
      const kept: Position[] = [];
      for (let i = 0; i < 3; i++) kept.push((await broker.publish(command(`o:c${i}`, '"x"'))).position);
      await broker.subscribe('o:c3');
      const err: unknown = await broker.publish(command('o:c3', '"x"')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TidingsError);
      expect(err).toMatchObject({ code: 'storage_full' });
      expect((err as Error).message).toContain(`${budget} bytes (maxHistoryBytes)`);
      expect(got.filter((p) => p.channel === 'o:c3')).toEqual([]);
      expect((await broker.history('o:c3', undefined, 0)).top.seq).toBe(0);
      for (let i = 0; i < 3; i++) expect((await broker.history(`o:c${i}`, undefined, 10)).publications.map((p) => p.position)).toEqual([kept[i]]);
      expect(broker.stats()).toEqual({ streams: 4, subscribed: 2, historyBytes: budget });
      // Replacing the channel's own oldest entry (historySize 1) with one of the same size fits: trimming counts.
      expect((await broker.publish(command('o:c0', '"y"'))).position.seq).toBe(2);
      expect(broker.stats().historyBytes).toBe(budget);
      // A larger one does not, though it would trim too.
      await expect(broker.publish(command('o:c0', '"yy"'))).rejects.toMatchObject({ code: 'storage_full' });
      expect((await broker.history('o:c0', undefined, 10)).publications.map((p) => p.data)).toEqual(['"y"']);
      // Ephemeral publications to an existing stream need no bytes.
      expect((await broker.publish(command('e:c9', '2'))).position.seq).toBe(2);
      // A publication larger than the whole budget is refused outright.
      await expect(broker.publish(command('o:c1', JSON.stringify('x'.repeat(budget))))).rejects.toMatchObject({ code: 'storage_full' });
    });

    it('reclaims expired entries and keys of channels nobody reads, and droppable streams, before refusing', async () => {
      const { broker, clock } = await clocked({ maxHistoryBytes: 3 * (streamBytes('c0') + entryBytes('c0', '"x"') + keyBytes('k0')) }, keep(100, 100, 200));
      const withKey = (i: number): ReturnType<typeof command> => command(`c${i}`, '"x"', { idempotencyKey: `k${i}` });
      const kept: Position[] = [];
      for (let i = 0; i < 3; i++) kept.push((await broker.publish(withKey(i))).position);
      await expect(broker.publish(command('c3', '"x"'))).rejects.toMatchObject({ code: 'storage_full' });
      // The entries expire; the keys (and so the streams) stay. Three entries' bytes make room for a stream and an entry.
      clock.t += 100;
      expect(3 * entryBytes('c0', '"x"')).toBeGreaterThanOrEqual(streamBytes('c3') + entryBytes('c3', '"x"'));
      const c3 = (await broker.publish(command('c3', '"x"'))).position;
      expect(c3.seq).toBe(1);
      expect(broker.stats().streams).toBe(4);
      for (let i = 0; i < 3; i++) expect(await broker.publish(withKey(i))).toEqual({ position: kept[i], duplicate: true });
      // The keys expire too. Now nothing is protected; room comes from releasing the expired keys and
      // entries, then dropping the least recently used droppable stream: c3 (the duplicates touched c0-c2).
      clock.t += 100;
      expect((await broker.publish(withKey(4))).position.seq).toBe(1);
      const c3Now = (await broker.history('c3', undefined, 0)).top;
      expect(c3Now.seq).toBe(0);
      expect(c3Now.epoch).not.toBe(c3.epoch);
      for (let i = 0; i < 3; i++) expect((await broker.history(`c${i}`, undefined, 0)).top).toEqual(kept[i]);
      expect(broker.stats()).toEqual({
        streams: 4,
        subscribed: 0,
        historyBytes: 3 * streamBytes('c0') + streamBytes('c4') + entryBytes('c4', '"x"') + keyBytes('k4'),
      });
    });

    // Moved from the contract suite: a small byte budget is the memory broker's own bound.
    it('refuses a publish past the byte budget with storage_full, keeping unexpired history, and takes publishes again once history expires', async () => {
      const { broker, clock } = await clocked({ maxHistoryBytes: 16 * 1024 }, keep(100, 300));
      const kilobyte = JSON.stringify('x'.repeat(1000));
      const accepted: { channel: string; position: Position }[] = [];
      let refused: string | undefined;
      for (let i = 0; i < 100 && refused === undefined; i++) {
        const c = `budget-${i}`;
        try {
          accepted.push({ channel: c, position: (await broker.publish(command(c, kilobyte))).position });
        } catch (err) {
          expect(isStorageFull(err)).toBe(true);
          refused = c;
        }
      }
      expect(refused).toBeDefined();
      expect(accepted.length).toBeGreaterThanOrEqual(4);
      // Refused: no position consumed. Accepted: all still there.
      expect((await broker.history(refused as string, undefined, 0)).top.seq).toBe(0);
      for (const { channel, position } of accepted) {
        const page = await broker.history(channel, undefined, 10);
        expect(page.publications.map((p) => [p.position, p.data])).toEqual([[position, kilobyte]]);
      }
      // A second kilobyte on a channel that already holds one is refused too: nothing is evicted for it.
      const first = accepted[0] as { channel: string; position: Position };
      await expect(broker.publish(command(first.channel, kilobyte))).rejects.toMatchObject({ code: 'storage_full' });
      expect((await broker.history(first.channel, undefined, 0)).top).toEqual(first.position);
      clock.t += 300;
      // Expired history is released (nobody needs to read those channels) and makes room.
      for (let i = 0; i < accepted.length; i++) expect((await broker.publish(command(`after-expiry-${i}`, kilobyte))).position.seq).toBe(1);
    });
  });

  describe('expiry sweep', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    it('runs between start() and close(), releasing expired history and keys of untouched channels a bounded batch per run', async () => {
      vi.useFakeTimers();
      const clock = { t: 1_000_000 };
      const broker = new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 1000, sweepInterval: 1000, sweepBatch: 2, now: () => clock.t });
      expect(vi.getTimerCount()).toBe(0);
      await broker.start(collect().handlers, keep(100, 100, 100));
      expect(vi.getTimerCount()).toBe(1);
      for (let i = 0; i < 5; i++) await broker.publish(command(`c${i}`, '"x"', { idempotencyKey: 'k' }));
      const full = broker.stats().historyBytes;
      const perChannel = entryBytes('c0', '"x"') + keyBytes('k');
      vi.advanceTimersByTime(1000);
      expect(broker.stats().historyBytes).toBe(full); // nothing expired yet
      clock.t += 100;
      vi.advanceTimersByTime(1000);
      expect(broker.stats().historyBytes).toBe(full - 2 * perChannel);
      vi.advanceTimersByTime(1000);
      expect(broker.stats().historyBytes).toBe(full - 4 * perChannel);
      vi.advanceTimersByTime(1000);
      // Only the streams remain: the sweep releases, it never drops a stream.
      expect(broker.stats()).toEqual({ streams: 5, subscribed: 0, historyBytes: 5 * streamBytes('c0') });
      await broker.close();
      expect(vi.getTimerCount()).toBe(0);
    });

    it('does not keep the process alive', async () => {
      const timeouts = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
      const before = timeouts();
      const broker = new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10, sweepInterval: 50 });
      await broker.start(collect().handlers, brokerSettings());
      expect(timeouts()).toBe(before);
      await broker.close();
    });

    it('reaches every stream even while publishes keep reordering them', async () => {
      const { broker, clock } = await clocked({ sweepBatch: 3 }, keep(100, 100, 60_000, { hot: retention(100, 1000) }));
      for (let i = 0; i < 10; i++) await broker.publish(command(`c${i}`, '"x"'));
      clock.t += 100;
      for (let run = 0; run < 4; run++) {
        broker.sweep();
        // A hot channel keeps moving to the back of the order the sweep walks.
        await broker.publish(command('hot:h', '1'));
      }
      expect(broker.stats().historyBytes).toBe(10 * streamBytes('c0') + streamBytes('hot:h') + 4 * entryBytes('hot:h', '1'));
    });
  });

  describe('model: protection, accounting and the budget', () => {
    interface Held {
      readonly seq: number;
      readonly expires: number;
      readonly bytes: number;
    }
    interface ModelStream {
      readonly epoch: string;
      readonly seq: number;
      entries: Held[];
      readonly keys: Map<string, Held>;
    }
    interface ModelChannel {
      readonly name: string;
      stream: ModelStream | undefined;
      subscribed: boolean;
      /** Epochs of its dropped streams. */
      readonly past: Set<string>;
      /** In the ephemeral namespace `e`. */
      readonly ephemeral: boolean;
    }
    const payloads = ['1', '"x"', JSON.stringify('é😀'.repeat(5)), JSON.stringify('x'.repeat(120))];
    const op = fc.oneof(
      {
        arbitrary: fc.record({
          kind: fc.constant('publish' as const),
          ch: fc.nat(5),
          payload: fc.nat(payloads.length - 1),
          key: fc.option(fc.nat(3), { nil: undefined }),
          typed: fc.boolean(),
        }),
        weight: 8,
      },
      { arbitrary: fc.record({ kind: fc.constant('read' as const), ch: fc.nat(5) }), weight: 2 },
      { arbitrary: fc.record({ kind: fc.constant('subscribe' as const), ch: fc.nat(5) }), weight: 1 },
      { arbitrary: fc.record({ kind: fc.constant('unsubscribe' as const), ch: fc.nat(5) }), weight: 1 },
      { arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.nat(150) }), weight: 2 },
      { arbitrary: fc.record({ kind: fc.constant('check' as const) }), weight: 1 },
    );
    const policy = fc.record({
      maxChannels: fc.integer({ min: 1, max: 4 }),
      budget: fc.integer({ min: 300, max: 3000 }),
      historySize: fc.integer({ min: 1, max: 3 }),
      historyTtl: fc.integer({ min: 20, max: 200 }),
      dedupWindow: fc.integer({ min: 0, max: 200 }),
      dedupMaxKeys: fc.integer({ min: 0, max: 3 }),
    });

    it('never drops a protected stream, counts historyBytes exactly and never exceeds the budget (model-based)', async () => {
      // Three channels share a generation bucket, so drops move their neighbours' empty epochs too.
      // Channels of namespace `e` are ephemeral; the others (default namespace) store history.
      const names = [...namesInOneBucket(3, (i) => (i % 2 === 0 ? `b${i}` : `e:b${i}`)), 'x', 'e:y', 'z'];
      const life = 'model-life';
      const seen = { refused: 0, dropped: 0, duplicates: 0, accepted: 0 };
      await fc.assert(
        fc.asyncProperty(policy, fc.array(op, { maxLength: 120, size: 'max' }), async (pol, ops) => {
          const clock = { t: 1_000_000 };
          const broker = new MemoryBroker({
            maxChannels: pol.maxChannels,
            dedupMaxKeys: pol.dedupMaxKeys,
            maxHistoryBytes: pol.budget,
            sweepInterval: 0,
            life,
            now: () => clock.t,
          });
          const { handlers, got: received } = collect();
          await broker.start(
            handlers,
            brokerSettings({ '': retention(pol.historySize, pol.historyTtl), e: retention(pol.historySize, pol.historyTtl, true) }, pol.dedupWindow),
          );
          const generations = new Map<number, number>();
          const emptyEpoch = (name: string): string => deriveEpoch(life, generations.get(bucketOf(name)) ?? 0, name);
          const chans: ModelChannel[] = names.map((name) => ({ name, stream: undefined, subscribed: false, past: new Set(), ephemeral: name.startsWith('e:') }));
          const expire = (): void => {
            for (const c of chans) {
              if (c.stream === undefined) continue;
              c.stream.entries = c.stream.entries.filter((e) => e.expires > clock.t);
              for (const [k, v] of c.stream.keys) if (v.expires <= clock.t) c.stream.keys.delete(k);
            }
          };
          const isProtected = (c: ModelChannel): boolean =>
            c.subscribed || (c.stream !== undefined && (c.stream.entries.length > 0 || c.stream.keys.size > 0));
          const bytesOf = (c: ModelChannel): number =>
            c.stream === undefined ? 0 : streamBytes(c.name) + sum(c.stream.entries) + sum(c.stream.keys.values());
          const topOf = (c: ModelChannel): Position =>
            c.stream === undefined ? { epoch: emptyEpoch(c.name), seq: 0 } : { epoch: c.stream.epoch, seq: c.stream.seq };

          for (const o of ops) {
            expire();
            if (o.kind === 'advance') {
              clock.t += o.ms;
            } else if (o.kind === 'subscribe' || o.kind === 'unsubscribe') {
              const c = chans[o.ch] as ModelChannel;
              await (o.kind === 'subscribe' ? broker.subscribe(c.name) : broker.unsubscribe(c.name));
              c.subscribed = o.kind === 'subscribe';
            } else if (o.kind === 'read') {
              const c = chans[o.ch] as ModelChannel;
              const page = await broker.history(c.name, undefined, 10);
              expect(page.top).toEqual(topOf(c));
              expect(seqs(page.publications)).toEqual(c.stream?.entries.map((e) => e.seq) ?? []);
            } else if (o.kind === 'check') {
              for (const c of chans) {
                const page = await broker.history(c.name, undefined, 10);
                expect(page.top).toEqual(topOf(c));
                expect(seqs(page.publications)).toEqual(c.stream?.entries.map((e) => e.seq) ?? []);
              }
              broker.sweep(1000);
              expect(broker.stats()).toEqual({
                streams: chans.filter((c) => c.stream !== undefined).length,
                subscribed: chans.filter((c) => c.subscribed).length,
                historyBytes: chans.reduce((n, c) => n + bytesOf(c), 0),
              });
            } else {
              const c = chans[o.ch] as ModelChannel;
              const data = payloads[o.payload] as string;
              const type = o.typed ? 'chat.message' : undefined;
              const key = o.key === undefined ? undefined : `key-${o.key}`;
              const cmd = command(c.name, data, { type, idempotencyKey: key });
              const s = c.stream;
              const dup = key === undefined ? undefined : s?.keys.get(key);
              const others = chans.filter((x) => x !== c && x.stream !== undefined);
              const protectedOthers = others.filter(isProtected);
              const deliveredBefore = received.length;
              let outcome: PublishOutcome | undefined;
              let error: unknown;
              try {
                outcome = await broker.publish(cmd);
              } catch (err) {
                error = err;
              }
              if (s !== undefined && dup !== undefined) {
                seen.duplicates++;
                expect(error).toBeUndefined();
                expect(outcome).toEqual({ position: { epoch: s.epoch, seq: dup.seq }, duplicate: true });
                expect(received.length).toBe(deliveredBefore);
              } else {
                // What the channel would hold afterwards, and the least the others must keep.
                const seq = (s?.seq ?? 0) + 1;
                const entries = [...(s?.entries ?? [])];
                const keys = new Map(s?.keys ?? []);
                if (!c.ephemeral) {
                  entries.push({ seq, expires: clock.t + pol.historyTtl, bytes: entryBytes(c.name, data, type) });
                  while (entries.length > pol.historySize) entries.shift();
                }
                if (key !== undefined && pol.dedupWindow > 0 && pol.dedupMaxKeys > 0) {
                  if (keys.size >= pol.dedupMaxKeys) keys.delete(keys.keys().next().value as string);
                  keys.set(key, { seq, expires: clock.t + pol.dedupWindow, bytes: keyBytes(key) });
                }
                const least = protectedOthers.reduce((n, x) => n + bytesOf(x), 0) + streamBytes(c.name) + sum(entries) + sum(keys.values());
                const fits = least <= pol.budget && (s !== undefined || protectedOthers.length < pol.maxChannels);
                // Any unprotected stream may have been dropped to make room; a protected one never.
                const dropped: ModelChannel[] = [];
                for (const x of others) {
                  const top = (await broker.history(x.name, undefined, 0)).top;
                  const held = x.stream as ModelStream;
                  if (top.seq === 0 && !isProtected(x)) {
                    x.past.add(held.epoch);
                    x.stream = undefined;
                    generations.set(bucketOf(x.name), (generations.get(bucketOf(x.name)) ?? 0) + 1);
                    dropped.push(x);
                  } else {
                    expect(top).toEqual({ epoch: held.epoch, seq: held.seq });
                  }
                }
                seen.dropped += dropped.length;
                for (const x of dropped) {
                  const top = (await broker.history(x.name, undefined, 0)).top;
                  expect(top).toEqual({ epoch: emptyEpoch(x.name), seq: 0 });
                  expect(x.past.has(top.epoch)).toBe(false);
                }
                if (fits) {
                  seen.accepted++;
                  expect(error).toBeUndefined();
                  const position = outcome?.position as Position;
                  expect(outcome?.duplicate).toBe(false);
                  if (s !== undefined) {
                    expect(position).toEqual({ epoch: s.epoch, seq });
                  } else {
                    // A new stream: exactly the epoch an empty read gave, never one of the channel's past.
                    expect(position).toEqual({ epoch: emptyEpoch(c.name), seq: 1 });
                    expect(c.past.has(position.epoch)).toBe(false);
                  }
                  c.stream = { epoch: position.epoch, seq, entries, keys };
                  expect(received.slice(deliveredBefore).map((p) => p.position)).toEqual(c.subscribed ? [position] : []);
                } else {
                  seen.refused++;
                  expect(isStorageFull(error)).toBe(true);
                  expect(received.length).toBe(deliveredBefore);
                }
              }
            }
            expect(broker.stats().historyBytes).toBeLessThanOrEqual(pol.budget);
          }
          await broker.close();
        }),
        { numRuns: 300 },
      );
      // The runs exercised every branch.
      expect(seen.accepted).toBeGreaterThan(1000);
      expect(seen.refused).toBeGreaterThan(100);
      expect(seen.dropped).toBeGreaterThan(100);
      expect(seen.duplicates).toBeGreaterThan(50);
    });
  });

  describe('dedupMaxKeys', () => {
    /** Publishes to `c` with an idempotency key: the seq it got, and whether it was a duplicate. */
    const keyedPublish =
      (broker: MemoryBroker) =>
      (key: string): Promise<[number, boolean]> =>
        broker.publish(command('c', '1', { idempotencyKey: key })).then((o) => [o.position.seq, o.duplicate]);

    it('remembers at most dedupMaxKeys keys per channel, forgetting the oldest', async () => {
      const pub = keyedPublish(await started({ maxChannels: 10, dedupMaxKeys: 2 }));
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

    it("keeps the server side's keys apart: no number of clients' keys pushes one out", async () => {
      const pub = keyedPublish(await started({ maxChannels: 10, dedupMaxKeys: 2 }));
      expect(await pub('api:order-42')).toEqual([1, false]);
      expect(await pub('admin:note-1')).toEqual([2, false]);
      for (let i = 0; i < 50; i++) await pub(`user:5:alice:k${i}`);
      expect(await pub('anon:k')).toEqual([53, false]);
      // The server's retries are still duplicates; clients' keys pushed out only clients' keys.
      expect(await pub('api:order-42')).toEqual([1, true]);
      expect(await pub('admin:note-1')).toEqual([2, true]);
      expect(await pub('user:5:alice:k49')).toEqual([52, true]);
      expect(await pub('user:5:alice:k0')).toEqual([54, false]);
      // The server side's own keys are bounded the same way.
      expect(await pub('api:order-43')).toEqual([55, false]);
      expect(await pub('api:order-42')).toEqual([56, false]);
    });

    it('remembers no key at all with dedupMaxKeys 0', async () => {
      const broker = await started({ maxChannels: 10, dedupMaxKeys: 0 });
      expect((await broker.publish(command('c', '1', { idempotencyKey: 'k' }))).duplicate).toBe(false);
      expect(await broker.publish(command('c', '1', { idempotencyKey: 'k' }))).toMatchObject({ position: { seq: 2 }, duplicate: false });
    });
  });

  describe('history ring', () => {
    it('returns exactly the last 100 after 10,000 publishes with historySize 100', async () => {
      const broker = await started({ maxChannels: 10, dedupMaxKeys: 10 }, keep(100, 60_000));
      for (let i = 1; i <= 10_000; i++) await broker.publish(command('c', String(i)));
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
          const { broker, clock } = await clocked({}, keep(historySize, historyTtl));
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
              const outcome = await broker.publish(command('c', `${top}`));
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
      const { handlers, got: received, presence } = collect();
      await broker.start(handlers, brokerSettings());
      await broker.subscribe('c');
      await broker.presenceAdd('c', { client: 'c1', user: 'u', info: undefined, node: 'n' }, 60_000);
      const first = await broker.publish(command('c', '1'));
      expect(received).toHaveLength(1);
      await broker.close();
      expect(broker.size).toBe(0);
      expect(await broker.presence('c')).toEqual([]);
      const after = await broker.publish(command('c', '2'));
      expect(after.position.seq).toBe(1);
      expect(after.position.epoch).not.toBe(first.position.epoch);
      expect(received).toHaveLength(1);
      expect(presence.map((e) => e.kind)).toEqual(['join']);
    });
  });

  // Ephemeral is now a namespace's retention, so one channel can no longer mix ephemeral and stored
  // publications (the holes the old regression covered cannot arise).
  describe('namespaces side by side', () => {
    it('stores history by the namespace of each channel, and counts an ephemeral stream by its stream bytes alone', async () => {
      const { broker } = await clocked({}, brokerSettings({ e: retention(100, 60_000, true), s: retention(2, 60_000) }));
      for (const d of ['1', '2', '3']) {
        await broker.publish(command('e:c', d));
        await broker.publish(command('s:c', d));
        await broker.publish(command('c', d));
      }
      expect(seqs((await broker.history('e:c', undefined, 10)).publications)).toEqual([]);
      expect(seqs((await broker.history('s:c', undefined, 10)).publications)).toEqual([2, 3]);
      const plain = await broker.history('c', undefined, 10);
      expect(seqs(plain.publications)).toEqual([1, 2, 3]);
      expect(seqs((await broker.history('c', { epoch: plain.top.epoch, seq: 1 }, 10)).publications)).toEqual([2, 3]);
      expect(broker.stats().historyBytes).toBe(
        streamBytes('e:c') + streamBytes('s:c') + entryBytes('s:c', '2') + entryBytes('s:c', '3') + streamBytes('c') + 3 * entryBytes('c', '1'),
      );
    });

    it('refuses a publish to an unconfigured namespace before touching anything, and applies the settings of the latest start', async () => {
      const { broker } = await clocked({}, brokerSettings({ s: retention(2, 60_000) }));
      await expect(broker.publish(command('x:c', '1'))).rejects.toMatchObject({ code: 'unknown_namespace' });
      expect(broker.stats()).toEqual({ streams: 0, subscribed: 0, historyBytes: 0 });
      await broker.start(collect().handlers, brokerSettings({ x: retention(1, 60_000) }));
      await expect(broker.publish(command('s:c', '1'))).rejects.toMatchObject({ code: 'unknown_namespace' });
      await broker.publish(command('x:c', '1'));
      await broker.publish(command('x:c', '2'));
      expect(seqs((await broker.history('x:c', undefined, 10)).publications)).toEqual([2]);
    });
  });

  describe('presence', () => {
    const ann = { client: 'c1', user: 'u1', info: '{"name":"Ann"}', node: 'n1' };

    it('expires an entry exactly ttl ms after its last add or touch, and announces its leave once (sweep or presence())', async () => {
      const { broker, clock, presence } = await clocked();
      await broker.subscribe('room');
      await broker.presenceAdd('room', ann, 1000);
      clock.t += 600;
      await broker.presenceTouch([{ channel: 'room', client: 'c1' }], 1000);
      clock.t += 999;
      broker.sweep();
      expect(await broker.presence('room')).toEqual([ann]);
      expect(presence).toEqual([{ kind: 'join', channel: 'room', entry: ann }]);
      clock.t += 1;
      broker.sweep();
      expect(presence).toEqual([
        { kind: 'join', channel: 'room', entry: ann },
        { kind: 'leave', channel: 'room', entry: ann },
      ]);
      expect(await broker.presence('room')).toEqual([]);
      broker.sweep();
      expect(presence).toHaveLength(2);
      // Without a sweep, presence() finds the expiry itself.
      await broker.presenceAdd('room', ann, 100);
      clock.t += 100;
      expect(await broker.presence('room')).toEqual([]);
      broker.sweep();
      expect(presence.map((e) => e.kind)).toEqual(['join', 'leave', 'join', 'leave']);
    });

    it('announces a join once per client: adding again refreshes the entry, removing an absent one announces nothing', async () => {
      const { broker, clock, presence } = await clocked();
      await broker.subscribe('room');
      await broker.presenceAdd('room', ann, 100);
      clock.t += 50;
      const changed = { ...ann, info: '{"name":"Ann B"}' };
      await broker.presenceAdd('room', changed, 100);
      clock.t += 99;
      expect(await broker.presence('room')).toEqual([changed]);
      await broker.presenceRemove('room', { ...ann, client: 'nobody' });
      expect(presence.map((e) => e.kind)).toEqual(['join']);
    });
  });
});
