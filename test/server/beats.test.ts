/**
 * Heartbeats spread over time: every member is first served between half an interval and one
 * interval after it joined, then exactly every interval, whatever joins and leaves in between, never
 * twice within an interval and never skipped; members that join together are spread over the ticks
 * of half an interval.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Beats } from '../../packages/server/src/beats.js';

type Op = { kind: 'add'; member: number } | { kind: 'delete'; member: number } | { kind: 'tick'; times: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('add' as const), member: fc.integer({ min: 0, max: 20 }) }),
  fc.record({ kind: fc.constant('delete' as const), member: fc.integer({ min: 0, max: 20 }) }),
  fc.record({ kind: fc.constant('tick' as const), times: fc.integer({ min: 1, max: 30 }) }),
);

describe('Beats', () => {
  it('ticks often enough for its interval, and never more often than every 10 ms', () => {
    expect(new Beats(25_000, () => undefined).tickMs).toBe(1000);
    expect(new Beats(15_000, () => undefined).tickMs).toBe(600);
    expect(new Beats(100, () => undefined).tickMs).toBe(10);
  });

  it('serves each member first within half an interval to one interval after it joined, then exactly every interval', () => {
    fc.assert(
      fc.property(fc.integer({ min: 100, max: 60_000 }), fc.array(op, { maxLength: 80 }), (interval, ops) => {
        const served: number[] = [];
        const beats = new Beats<number>(interval, (m) => served.push(m));
        const every = Math.max(1, Math.round(interval / beats.tickMs));
        const earliest = Math.ceil(every / 2);
        // The model: when each member joined, and when it was last served (undefined: not yet).
        const members = new Map<number, { joined: number; last: number | undefined }>();
        let now = 0;
        for (const o of ops) {
          if (o.kind === 'add') {
            beats.add(o.member);
            members.set(o.member, { joined: now, last: undefined });
          } else if (o.kind === 'delete') {
            expect(beats.delete(o.member)).toBe(members.delete(o.member));
          } else {
            for (let t = 0; t < o.times; t++) {
              now++;
              served.length = 0;
              beats.tick();
              expect(new Set(served).size).toBe(served.length);
              for (const [m, at] of members) {
                const due = served.includes(m);
                if (at.last === undefined) {
                  // First service: never before half an interval, never after one.
                  const since = now - at.joined;
                  expect(due ? since >= earliest && since <= every : since < every).toBe(true);
                } else expect(due).toBe(now - at.last === every);
                if (due) at.last = now;
              }
              // Only members are served.
              expect(served.every((m) => members.has(m))).toBe(true);
            }
          }
          expect(beats.size).toBe(members.size);
          expect(new Set(beats)).toEqual(new Set(members.keys()));
        }
      }),
    );
  });

  it('spreads members that join in the same tick over half an interval of ticks', () => {
    // A restart or a network blip: every client reconnects within a tick or two.
    fc.assert(
      fc.property(fc.integer({ min: 100, max: 60_000 }), fc.integer({ min: 1, max: 3000 }), (interval, n) => {
        const served = new Map<number, number>();
        let now = 0;
        const beats = new Beats<number>(interval, () => served.set(now, (served.get(now) ?? 0) + 1));
        const every = Math.max(1, Math.round(interval / beats.tickMs));
        const slots = every - Math.ceil(every / 2) + 1;
        for (let m = 0; m < n; m++) beats.add(m);
        for (let t = 0; t < 3 * every; t++) {
          now++;
          beats.tick();
        }
        expect(Math.max(...served.values())).toBe(Math.ceil(n / slots));
        expect([...served.values()].reduce((a, b) => a + b, 0)).toBe(3 * n);
      }),
    );
  });

  it('puts a member that joins alone one interval ahead, and one that joins later beside none of the others', () => {
    const served: Array<[string, number]> = [];
    let now = 0;
    const beats = new Beats<string>(25_000, (m) => served.push([m, now]));
    beats.add('a');
    for (let t = 0; t < 5; t++) {
      now++;
      beats.tick();
    }
    beats.add('b');
    for (let t = 0; t < 60; t++) {
      now++;
      beats.tick();
    }
    expect(served.filter(([m]) => m === 'a').map(([, at]) => at)).toEqual([25, 50]);
    expect(served.filter(([m]) => m === 'b').map(([, at]) => at)).toEqual([30, 55]);
  });

  it('lets a member that leaves while it is served go', () => {
    const beats = new Beats<string>(100, (m) => beats.delete(m));
    beats.add('a');
    beats.add('b');
    for (let t = 0; t < 10; t++) beats.tick();
    expect(beats.size).toBe(0);
  });

  it('does not serve a member that left while others of its tick were served', () => {
    const served: number[] = [];
    const members = Array.from({ length: 26 }, (_, i) => i);
    // Two members per tick; serving one makes every other leave.
    const beats = new Beats<number>(25_000, (m) => {
      served.push(m);
      for (const other of members) if (other !== m) beats.delete(other);
    });
    for (const m of members) beats.add(m);
    for (let t = 0; t < 50; t++) beats.tick();
    expect(served).toHaveLength(2);
    expect(served[0]).toBe(served[1]);
    expect(beats.size).toBe(1);
  });
});
