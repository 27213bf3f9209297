/**
 * The API key check: a connection that proved the key is not hashed again for the same value, and
 * nothing else rides on that proof (another value, another connection, another key).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hasApiKey, sameAsProven } from '../../packages/server/src/http/api-key.js';

const KEY = 'test-api-key-0123456789abcdef';
const request = (authorization: string | undefined, socket?: object) => ({ headers: authorization === undefined ? {} : { authorization }, socket });

describe('sameAsProven', () => {
  it('is string equality, whatever the two texts', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), (a, b) => {
        expect(sameAsProven(a, b)).toBe(a === b);
        expect(sameAsProven(a, a)).toBe(true);
      }),
    );
  });

  it('tells apart texts that differ in one character, or are a prefix of each other', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), fc.nat(), fc.string({ minLength: 1 }), (text, at, extra) => {
        const i = at % text.length;
        const changed = text.slice(0, i) + String.fromCharCode(text.charCodeAt(i) ^ 1) + text.slice(i + 1);
        expect(sameAsProven(changed, text)).toBe(false);
        expect(sameAsProven(text + extra, text)).toBe(false);
        expect(sameAsProven(text, text + extra)).toBe(false);
        expect(sameAsProven(text.slice(0, i), text)).toBe(false);
      }),
    );
  });
});

describe('hasApiKey', () => {
  it('takes the key, and refuses anything else, with or without a connection', () => {
    for (const socket of [undefined, {}]) {
      expect(hasApiKey(request(`Bearer ${KEY}`, socket), KEY)).toBe(true);
      expect(hasApiKey(request(`bearer   ${KEY}`, socket), KEY)).toBe(true);
      expect(hasApiKey(request(undefined, socket), KEY)).toBe(false);
      expect(hasApiKey(request(`Bearer ${KEY}x`, socket), KEY)).toBe(false);
      expect(hasApiKey(request(`Basic ${KEY}`, socket), KEY)).toBe(false);
      expect(hasApiKey(request(KEY, socket), KEY)).toBe(false);
    }
  });

  it('lets nothing but the proven value ride on a connection that proved the key', () => {
    fc.assert(
      fc.property(fc.string(), (other) => {
        const socket = {};
        expect(hasApiKey(request(`Bearer ${KEY}`, socket), KEY)).toBe(true);
        // The same value again: proven.
        expect(hasApiKey(request(`Bearer ${KEY}`, socket), KEY)).toBe(true);
        // Any other value on that connection (another client behind a shared proxy connection) is checked in full.
        const valid = /^Bearer\s+(\S+)$/i.exec(other)?.[1] === KEY;
        expect(hasApiKey(request(other, socket), KEY)).toBe(valid);
        expect(hasApiKey(request(undefined, socket), KEY)).toBe(false);
        expect(hasApiKey(request(`Bearer ${KEY.slice(0, -1)}`, socket), KEY)).toBe(false);
        expect(hasApiKey(request(`Bearer ${KEY}`, socket), KEY)).toBe(true);
      }),
    );
  });

  it('keeps a proof to its connection and to the key it proved', () => {
    const socket = {};
    expect(hasApiKey(request(`Bearer ${KEY}`, socket), KEY)).toBe(true);
    // The key changed: the value that proved the old one proves nothing.
    expect(hasApiKey(request(`Bearer ${KEY}`, socket), `${KEY}-rotated`)).toBe(false);
    expect(hasApiKey(request(`Bearer ${KEY}-rotated`, socket), `${KEY}-rotated`)).toBe(true);
    // Another connection proves for itself.
    expect(hasApiKey(request(`Bearer ${KEY}`, {}), `${KEY}-rotated`)).toBe(false);
  });
});
