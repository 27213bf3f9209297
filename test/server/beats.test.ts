/**
 * Heartbeats spread over time: every member is served exactly one interval after it joined or was
 * last served, whatever joins and leaves in between, never twice within an interval and never
 * skipped; members that join at different times are served at different ticks.
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

  it('serves each member one interval after it joined or was last served, and only then', () => {
    fc.assert(
      fc.property(fc.integer({ min: 100, max: 60_000 }), fc.array(op, { maxLength: 80 }), (interval, ops) => {
        const served: number[] = [];
        const beats = new Beats<number>(interval, (m) => served.push(m));
        const every = Math.max(1, Math.round(interval / beats.tickMs));
        // The model: each member's next due tick.
        const due = new Map<number, number>();
        let now = 0;
        for (const o of ops) {
          if (o.kind === 'add') {
            beats.add(o.member);
            due.set(o.member, now + every);
          } else if (o.kind === 'delete') {
            expect(beats.delete(o.member)).toBe(due.delete(o.member));
          } else {
            for (let t = 0; t < o.times; t++) {
              now++;
              served.length = 0;
              beats.tick();
              const expected = [...due].filter(([, d]) => d === now).map(([m]) => m);
              for (const m of expected) due.set(m, now + every);
              expect([...served].sort((a, b) => a - b)).toEqual(expected.sort((a, b) => a - b));
            }
          }
          expect(beats.size).toBe(due.size);
          expect(new Set(beats)).toEqual(new Set(due.keys()));
        }
      }),
    );
  });

  it('spreads members that joined at different ticks over different ticks', () => {
    const served: Array<[number, number]> = [];
    let now = 0;
    const beats = new Beats<number>(25_000, (m) => served.push([m, now]));
    for (let m = 0; m < 1000; m++) {
      beats.add(m);
      // 40 members join per tick.
      if (m % 40 === 39) {
        now++;
        beats.tick();
      }
    }
    for (let t = 0; t < 60; t++) {
      now++;
      beats.tick();
    }
    const perTick = new Map<number, number>();
    const times = new Map<number, number[]>();
    for (const [m, at] of served) {
      perTick.set(at, (perTick.get(at) ?? 0) + 1);
      times.set(m, [...(times.get(m) ?? []), at]);
    }
    // Never more in one tick than joined in one; every member served every 25 ticks.
    expect(Math.max(...perTick.values())).toBe(40);
    expect(times.size).toBe(1000);
    for (const [m, at] of times) {
      expect(at.length).toBeGreaterThanOrEqual(2);
      expect(at[0]).toBe(Math.floor(m / 40) + 25);
      for (let i = 1; i < at.length; i++) expect((at[i] ?? 0) - (at[i - 1] ?? 0)).toBe(25);
    }
  });

  it('lets a member that leaves while it is served go', () => {
    const beats = new Beats<string>(100, (m) => beats.delete(m));
    beats.add('a');
    beats.add('b');
    for (let t = 0; t < 10; t++) beats.tick();
    expect(beats.size).toBe(0);
  });
});
