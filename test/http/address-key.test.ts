/**
 * The key per-address limits count a client by: an IPv4 address as itself (an IPv4-mapped IPv6 one as
 * its IPv4 address), an IPv6 address by its /64, whatever form its text takes (leading zeros, case,
 * `::`, an embedded IPv4 tail, a zone id), and anything else as its own text. Node's own IPv6 parser
 * (`BlockList`) is the oracle for which /64 an address is in.
 */
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { addressKey } from '../../packages/server/src/http/address-key.js';

const group = fc.integer({ min: 0, max: 0xffff });
/** Mostly zeros, so that `::` has runs to compress. */
const groups = fc.array(fc.oneof(group, fc.constant(0), fc.constant(0)), { minLength: 8, maxLength: 8 });

/** Every group written out, with up to 4 digits' worth of leading zeros and either case. */
const full = (g: readonly number[], pad: readonly number[], upper: boolean): string => {
  const text = g.map((x, i) => x.toString(16).padStart(Math.min(4, x.toString(16).length + (pad[i] ?? 0)), '0')).join(':');
  return upper ? text.toUpperCase() : text;
};

/** The longest run of zero groups (if any) written as `::`. */
const compressed = (g: readonly number[]): string => {
  let best = { at: -1, length: 0 };
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > best.length) best = { at: i, length: j - i };
    i = j === i ? i + 1 : j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best.length === 0) return hex.join(':');
  return `${hex.slice(0, best.at).join(':')}::${hex.slice(best.at + best.length).join(':')}`;
};

/** The last 32 bits as a dotted IPv4 tail. */
const v4Tail = (g: readonly number[]): string => {
  const [g6 = 0, g7 = 0] = [g[6], g[7]];
  return `${g.slice(0, 6).map((x) => x.toString(16)).join(':')}:${g6 >> 8}.${g6 & 0xff}.${g7 >> 8}.${g7 & 0xff}`;
};

const isMapped = (g: readonly number[]): boolean => g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff;

describe('addressKey', () => {
  it('gives every form of an IPv6 address the /64 Node parses it into, and another /64 another key', () => {
    fc.assert(
      fc.property(groups, fc.array(fc.nat({ max: 3 }), { minLength: 8, maxLength: 8 }), fc.boolean(), fc.nat({ max: 7 }), (g, pad, upper, flip) => {
        fc.pre(!isMapped(g));
        const forms = [full(g, pad, upper), compressed(g), v4Tail(g), `${compressed(g)}%eth0`];
        const keys = new Set(forms.map(addressKey));
        expect(keys.size).toBe(1);
        const [key = ''] = keys;
        expect(key).toMatch(/::\/64$/);
        const net = new BlockList();
        net.addSubnet(key.replace('/64', ''), 64, 'ipv6');
        for (const form of forms.slice(0, 3)) {
          expect(isIPv6(form)).toBe(true);
          expect(net.check(form, 'ipv6')).toBe(true);
        }
        // A change in the host half keeps the key; one in the network half changes it.
        const other = [...g];
        other[flip] = (g[flip] ?? 0) ^ 1;
        const otherKey = addressKey(compressed(other));
        expect(otherKey === key).toBe(flip >= 4);
        if (flip < 4) expect(net.check(compressed(other), 'ipv6')).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });

  it('counts an IPv4-mapped address, and an IPv4 one, as the IPv4 address', () => {
    fc.assert(
      fc.property(fc.ipV4(), (v4) => {
        expect(addressKey(v4)).toBe(v4);
        expect(addressKey(`::ffff:${v4}`)).toBe(v4);
        expect(addressKey(`::FFFF:${v4}`)).toBe(v4);
      }),
    );
    expect(addressKey('::ffff:7f00:1')).toBe('127.0.0.1');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
  });

  it('keeps anything that is no IPv6 address as its own text, and never throws', () => {
    for (const text of ['', 'unknown', '1:2:3', '1::2::3', '1:2:3:4:5:6:7:8:9', '12345::', '::1.2.3.256', '1.2.3.4::', ':1:2:3:4:5:6:7', 'g::1', '::ffff:1.2.3']) {
      expect(addressKey(text)).toBe(text);
    }
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.%xz'.split('')), maxLength: 48 }), (text) => {
        const key = addressKey(text);
        if (isIPv6(text)) expect(key.endsWith('::/64') || isIPv4(key)).toBe(true);
        else expect(key).toBe(text);
      }),
      { numRuns: 5000 },
    );
    // Near-valid text: one character of a valid form inserted, deleted or replaced.
    const edited = fc
      .tuple(groups, fc.nat({ max: 2 }), fc.nat(), fc.constantFrom(...'0f:.%x'.split('')), fc.constantFrom('insert', 'delete', 'replace'))
      .map(([g, form, at, c, edit]) => {
        const text = [compressed(g), v4Tail(g), full(g, [], false)][form] ?? '';
        const i = at % (text.length + 1);
        return edit === 'insert' ? text.slice(0, i) + c + text.slice(i) : text.slice(0, i) + (edit === 'replace' ? c : '') + text.slice(i + 1);
      });
    fc.assert(
      fc.property(edited, (text) => {
        const key = addressKey(text);
        if (isIPv6(text)) expect(key.endsWith('::/64') || isIPv4(key)).toBe(true);
        else expect(key).toBe(text);
      }),
      { numRuns: 5000 },
    );
  });
});
