/**
 * The metrics' own arithmetic, by property: a histogram puts every value in the right bucket and
 * keeps its count and sum; `since` is the difference of two readings; quantiles stay within the
 * bucket that holds them; and every delivery is counted in the latency histogram exactly once,
 * whatever the pattern of publications.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Buckets, CounterMetrics, DELIVERY_BUCKETS_MS } from '@tidings/server';

const value = fc.double({ min: 0, max: 10_000, noNaN: true });

describe('Buckets', () => {
  it('puts each value in the first bucket whose bound is at least the value, and keeps count and sum', () => {
    fc.assert(
      fc.property(fc.array(value, { maxLength: 200 }), (values) => {
        const b = new Buckets(DELIVERY_BUCKETS_MS);
        for (const v of values) b.observe(v);
        expect(b.count).toBe(values.length);
        expect(b.counts.reduce((a, c) => a + c, 0)).toBe(values.length);
        expect(b.sum).toBeCloseTo(values.reduce((a, v) => a + v, 0), 6);
        for (const v of values) {
          const i = b.bucketOf(v);
          if (i < DELIVERY_BUCKETS_MS.length) expect(v).toBeLessThanOrEqual(DELIVERY_BUCKETS_MS[i] ?? Infinity);
          if (i > 0) expect(v).toBeGreaterThan(DELIVERY_BUCKETS_MS[i - 1] ?? -Infinity);
        }
      }),
    );
  });

  it('since() is the histogram of the values observed after the copy', () => {
    fc.assert(
      fc.property(fc.array(value, { maxLength: 100 }), fc.array(value, { maxLength: 100 }), (before, after) => {
        const b = new Buckets(DELIVERY_BUCKETS_MS);
        for (const v of before) b.observe(v);
        const earlier = b.copy();
        for (const v of after) b.observe(v);
        const only = new Buckets(DELIVERY_BUCKETS_MS);
        for (const v of after) only.observe(v);
        const d = b.since(earlier);
        expect(d.counts).toEqual(only.counts);
        expect(d.count).toBe(only.count);
      }),
    );
  });

  it('estimates a quantile within the bucket that holds the true one', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 0, max: 4000, noNaN: true }), { minLength: 1, maxLength: 300 }), fc.double({ min: 0.01, max: 1, noNaN: true }), (values, q) => {
        const b = new Buckets(DELIVERY_BUCKETS_MS);
        for (const v of values) b.observe(v);
        const sorted = [...values].sort((x, y) => x - y);
        const truth = sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] ?? 0;
        const i = b.bucketOf(truth);
        const lower = i === 0 ? 0 : (DELIVERY_BUCKETS_MS[i - 1] ?? 0);
        const upper = DELIVERY_BUCKETS_MS[i] ?? lower;
        const estimate = b.quantile(q);
        expect(estimate).toBeGreaterThanOrEqual(lower - 1e-9);
        expect(estimate).toBeLessThanOrEqual(upper + 1e-9);
      }),
    );
  });
});

describe('CounterMetrics.delivered', () => {
  it('counts every delivery, and every live one once in the latency histogram, for any interleaving of publications', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: -1, max: 5 }), fc.integer({ min: 1, max: 60 })), { maxLength: 50 }), (runs) => {
        const m = new CounterMetrics();
        const arrivals = [-1, 0, 1, 2, 3, 4, 5].map((k) => (k < 0 ? -1 : performance.now() - k));
        let live = 0;
        let all = 0;
        for (const [k, n] of runs) {
          const at = arrivals[k + 1] ?? -1;
          for (let i = 0; i < n; i++) m.delivered(at);
          all += n;
          if (at >= 0) live += n;
        }
        expect(m.deliveries).toBe(all);
        expect(m.latency.count).toBe(live);
        expect(m.latency.counts.reduce((a, c) => a + c, 0)).toBe(live);
      }),
    );
  });
});
