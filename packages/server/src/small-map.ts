/**
 * A map for the per-connection collections that almost always hold one entry (a connection's
 * subscriptions): the first entry lives in two fields, and a real `Map` is made only for a second.
 * An empty `Map` with its hash table costs about 200 bytes; at tens of thousands of connections
 * that is a large part of what an idle connection costs. Iteration is in insertion order, like `Map`.
 * @module
 */
export class SmallMap<K, V> {
  #key: K | undefined;
  #value: V | undefined;
  #has = false;
  /** Every entry, once there were two at once (then the fields above are unused). */
  #map: Map<K, V> | undefined;

  get size(): number {
    return this.#map !== undefined ? this.#map.size : this.#has ? 1 : 0;
  }

  get(key: K): V | undefined {
    if (this.#map !== undefined) return this.#map.get(key);
    return this.#has && Object.is(this.#key, key) ? this.#value : undefined;
  }

  has(key: K): boolean {
    if (this.#map !== undefined) return this.#map.has(key);
    return this.#has && Object.is(this.#key, key);
  }

  set(key: K, value: V): this {
    if (this.#map !== undefined) {
      this.#map.set(key, value);
    } else if (!this.#has || Object.is(this.#key, key)) {
      this.#key = key;
      this.#value = value;
      this.#has = true;
    } else {
      this.#map = new Map([[this.#key as K, this.#value as V], [key, value]]);
      this.#clearInline();
    }
    return this;
  }

  delete(key: K): boolean {
    if (this.#map !== undefined) return this.#map.delete(key);
    if (!this.#has || !Object.is(this.#key, key)) return false;
    this.#clearInline();
    return true;
  }

  clear(): void {
    this.#map = undefined;
    this.#clearInline();
  }

  *keys(): IterableIterator<K> {
    for (const [k] of this) yield k;
  }

  *values(): IterableIterator<V> {
    for (const [, v] of this) yield v;
  }

  *[Symbol.iterator](): IterableIterator<[K, V]> {
    if (this.#map !== undefined) yield* this.#map;
    else if (this.#has) yield [this.#key as K, this.#value as V];
  }

  #clearInline(): void {
    this.#key = undefined;
    this.#value = undefined;
    this.#has = false;
  }
}
