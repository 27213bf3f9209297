/**
 * Keeps the methods of strings fast to look up.
 *
 * V8 turns an object's properties into a dictionary when the object first becomes the prototype of
 * another prototype, as `class X extends String` makes `String.prototype` (ioredis does, for RESP3
 * verbatim strings, as soon as it is loaded). A prototype in that state is made fast again by the
 * next inline-cache miss of a property load through it, but only when the object loaded from is an
 * object: loads on a string primitive never do it. So, once such a module is loaded, every
 * `text.charCodeAt(i)`, `text.indexOf(...)` or `text.slice(...)` in optimized code is a generic
 * lookup in a dictionary, about three times the cost of the request-line, header, query and cursor
 * scans that every request makes.
 *
 * {@link restoreFastStrings} loads a string method through a `String` wrapper object, which is an
 * object, until V8 has given the loading function its feedback (it does after a few calls), so that a
 * miss makes `String.prototype` fast again. Call it once every module is loaded: the gateway calls it
 * when it starts listening.
 * @module
 */

/** Calls of {@link readThrough}: V8 gives a function inline caches after 8 calls by default. */
const CALLS = 256;

function readThrough(wrapper: object): unknown {
  return (wrapper as { readonly charCodeAt: unknown }).charCodeAt;
}

/** Makes `String.prototype` fast again if a subclass of `String` turned it into a dictionary. */
export function restoreFastStrings(): void {
  const wrapper = Object('') as object;
  for (let i = 0; i < CALLS; i++) readThrough(wrapper);
}
