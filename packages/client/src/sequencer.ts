/**
 * Per-subscription order and dedup by position. Messages come out in seq order, each once;
 * a message ahead of the next expected seq waits in a bounded buffer for the ones before it.
 * A gap moves the expected position forward explicitly.
 * @module
 */
import type { Gap, Message, Position } from '@tidings/protocol';

export class Sequencer {
  #last: Position | undefined;
  readonly #ahead = new Map<number, Message>();

  constructor(
    last: Position | undefined,
    private readonly maxAhead = 1000,
  ) {
    this.#last = last;
  }

  /** The position of the last message delivered (or skipped by a gap). */
  get position(): Position | undefined {
    return this.#last;
  }

  /** Messages waiting for earlier ones. */
  get waiting(): number {
    return this.#ahead.size;
  }

  /** Sets the start position when none is known yet (the server's subscribe result). */
  start(position: Position): void {
    this.#last ??= position;
  }

  /**
   * Accepts one message; returns those now deliverable in order. Returns `undefined` when the
   * message cannot be placed (another epoch, or the buffer is full): the caller should resubscribe.
   */
  push(message: Message): Message[] | undefined {
    const last = this.#last;
    const p = message.position;
    if (last === undefined) {
      this.#last = p;
      return [message];
    }
    if (p.epoch !== last.epoch) return undefined;
    if (p.seq <= last.seq || this.#ahead.has(p.seq)) return [];
    if (p.seq > last.seq + 1) {
      if (this.#ahead.size >= this.maxAhead) return undefined;
      this.#ahead.set(p.seq, message);
      return [];
    }
    const out = [message];
    this.#last = p;
    for (let next = this.#ahead.get(p.seq + 1); next !== undefined; next = this.#ahead.get(next.position.seq + 1)) {
      this.#ahead.delete(next.position.seq);
      out.push(next);
      this.#last = next.position;
    }
    return out;
  }

  /** Applies a gap: everything up to `gap.to` is given up. Returns buffered messages now deliverable. */
  skip(gap: Gap): Message[] {
    const last = this.#last;
    if (last !== undefined && last.epoch === gap.to.epoch && gap.to.seq <= last.seq) return [];
    this.#last = gap.to;
    const out: Message[] = [];
    for (const [seq, m] of [...this.#ahead].sort((a, b) => a[0] - b[0])) {
      this.#ahead.delete(seq);
      if (m.position.epoch !== gap.to.epoch || seq <= (this.#last).seq) continue;
      if (seq !== (this.#last).seq + 1) {
        this.#ahead.set(seq, m);
        continue;
      }
      out.push(m);
      this.#last = m.position;
    }
    return out;
  }

  /** Drops whatever waits (before a resubscribe, which will deliver it again). */
  reset(): void {
    this.#ahead.clear();
  }
}
