/**
 * The broker contract suite: every Broker implementation must pass it unchanged. It uses only the
 * Broker interface, gives every test fresh channels (so a shared backing store is fine), and
 * waits for delivery instead of assuming it is synchronous.
 *
 * Usage (in a *.test.ts file): `brokerSuite('memory', async () => new MemoryBroker({...}), (b) => b.close())`.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { positionProblem, type Position } from '@tidings/protocol';
import type { Broker, Publication, PublishCommand } from '@tidings/server';
import { publishCommand, until } from '@tidings/testing';

/** A publish command with a roomy default policy; override per test. */
export const command = publishCommand;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const seqs = (pubs: readonly Publication[]): number[] => pubs.map((p) => p.position.seq);
const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

export function brokerSuite(name: string, makeBroker: () => Promise<Broker>, cleanup: (broker: Broker) => Promise<void>): void {
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
  });
}
