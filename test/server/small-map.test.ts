/**
 * SmallMap (a connection's subscriptions, one entry inline) behaves as a Map: the same answers to
 * every operation and the same iteration order, over any sequence of operations.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SmallMap } from '../../packages/server/src/small-map.js';

type Op = { op: 'set'; key: string; value: number } | { op: 'delete'; key: string } | { op: 'clear' } | { op: 'get'; key: string } | { op: 'has'; key: string };

const key = fc.constantFrom('a', 'b', 'c', 'd');
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('set' as const), key, value: fc.integer() }), weight: 4 },
  { arbitrary: fc.record({ op: fc.constant('delete' as const), key }), weight: 3 },
  { arbitrary: fc.constant({ op: 'clear' as const }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('get' as const), key }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('has' as const), key }), weight: 2 },
);

describe('SmallMap', () => {
  it('answers every operation as a Map does, and iterates in the same order', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 40 }), (ops) => {
        const small = new SmallMap<string, number>();
        const model = new Map<string, number>();
        for (const o of ops) {
          switch (o.op) {
            case 'set':
              expect(small.set(o.key, o.value)).toBe(small);
              model.set(o.key, o.value);
              break;
            case 'delete':
              expect(small.delete(o.key)).toBe(model.delete(o.key));
              break;
            case 'clear':
              small.clear();
              model.clear();
              break;
            case 'get':
              expect(small.get(o.key)).toBe(model.get(o.key));
              break;
            case 'has':
              expect(small.has(o.key)).toBe(model.has(o.key));
              break;
          }
          expect(small.size).toBe(model.size);
          expect([...small]).toEqual([...model]);
          expect([...small.keys()]).toEqual([...model.keys()]);
          expect([...small.values()]).toEqual([...model.values()]);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('lets an entry be deleted while iterating, as a Map does', () => {
    const small = new SmallMap<string, number>().set('a', 1);
    const seen: string[] = [];
    for (const [k] of small) {
      seen.push(k);
      small.delete(k);
    }
    expect(seen).toEqual(['a']);
    expect(small.size).toBe(0);
  });
});
