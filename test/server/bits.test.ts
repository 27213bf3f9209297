/** Flags packed into one number: setting or clearing one bit leaves every other as it was. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { has, put } from '../../packages/server/src/bits.js';

describe('bits', () => {
  it('reads back what was put, bit by bit, whatever the order', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 30 }), fc.boolean()), { maxLength: 60 }), (ops) => {
        let flags = 0;
        const model = new Map<number, boolean>();
        for (const [i, on] of ops) {
          flags = put(flags, 1 << i, on);
          model.set(i, on);
          for (let b = 0; b <= 30; b++) expect(has(flags, 1 << b)).toBe(model.get(b) ?? false);
        }
      }),
    );
  });
});
