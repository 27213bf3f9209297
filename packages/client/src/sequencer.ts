/**
 * Per-subscription order and dedup by position. Messages come out in seq order, each once;
 * a message ahead of the next expected seq waits in a bounded buffer for the ones before it.
 * A gap moves the expected position forward explicitly.
 *
 * Ephemeral messages (`message.ephemeral`) are different: the server keeps no history for them and
 * promises no order across a reconnect, so a missed seq will never come. They are delivered as they
 * arrive; only duplicates and stale ones (at or below the position, same epoch, or from an epoch
 * already left behind) are dropped, and a new epoch is simply adopted. Nothing waits for them and
 * nothing asks for a resubscribe.
 * @module
 */
import type { Gap, Message, Position } from '@tidings/protocol';

export class Sequencer {
  #last: Position | undefined;
  readonly #ahead = new Map<number, Message>();
  /** An ephemeral message was seen: the channel promises no resume, so the server's start position wins. */
  #ephemeral = false;
  /** Epochs an ephemeral channel moved on from (the last few): a straggler from one is stale. */
  readonly #retired: string[] = [];

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

  /**
   * Sets the start position the server reported for a (re)subscription. It is taken when none is
   * known yet, and on an ephemeral channel also when it is later (or in a new epoch), since the
   * server starts such a channel from its latest position whatever the client asked for.
   */
  start(position: Position): void {
    const last = this.#last;
    if (last === undefined) this.#last = position;
    else if (this.#ephemeral && !this.#stale(position)) this.#adopt(position);
  }

  /**
   * Accepts one message; returns those now deliverable in order. Returns `undefined` when the
   * message cannot be placed (another epoch, or the buffer is full): the caller should resubscribe.
   * Never `undefined` for an ephemeral message.
   */
  push(message: Message): Message[] | undefined {
    if (message.ephemeral === true) return this.#pushEphemeral(message);
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
    return this.#chain(message);
  }

  /** Applies a gap: everything up to `gap.to` is given up. Returns buffered messages now deliverable. */
  skip(gap: Gap): Message[] {
    const last = this.#last;
    if (last !== undefined && last.epoch === gap.to.epoch && gap.to.seq <= last.seq) return [];
    // A gap starts where the client is (an epoch change too: from the old epoch to the new); one that
    // starts and ends in epochs the client has left is stale, and would move its position back.
    if (last !== undefined && gap.from.epoch !== last.epoch && gap.to.epoch !== last.epoch) return [];
    this.#last = gap.to;
    const out: Message[] = [];
    for (const [seq, m] of [...this.#ahead].sort((a, b) => a[0] - b[0])) {
      this.#ahead.delete(seq);
      if (m.position.epoch !== gap.to.epoch || seq <= this.#last.seq) continue;
      if (seq !== this.#last.seq + 1) {
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

  /** Delivers `message` (the next expected one), then whatever waited right behind it. */
  #chain(message: Message): Message[] {
    const out = [message];
    this.#last = message.position;
    for (let next = this.#ahead.get(message.position.seq + 1); next !== undefined; next = this.#ahead.get(next.position.seq + 1)) {
      this.#ahead.delete(next.position.seq);
      out.push(next);
      this.#last = next.position;
    }
    return out;
  }

  /** At or below the position in its epoch, or from an epoch left behind. */
  #stale(p: Position): boolean {
    const last = this.#last;
    if (last !== undefined && p.epoch === last.epoch) return p.seq <= last.seq;
    return this.#retired.includes(p.epoch);
  }

  /** Moves the position forward (ephemeral only), retiring the epoch it leaves. */
  #adopt(p: Position): void {
    const last = this.#last;
    if (last !== undefined && last.epoch !== p.epoch) {
      this.#retired.push(last.epoch);
      if (this.#retired.length > 8) this.#retired.shift();
    }
    this.#last = p;
  }

  #pushEphemeral(message: Message): Message[] {
    this.#ephemeral = true;
    const p = message.position;
    if (this.#stale(p)) return [];
    // Durable messages can only be waiting here if the namespace turned ephemeral meanwhile: hand
    // over, in order, those that come before this one; an older epoch's are given up.
    const out: Message[] = [];
    for (const [seq, m] of [...this.#ahead].sort((a, b) => a[0] - b[0])) {
      if (m.position.epoch !== p.epoch || seq <= p.seq) this.#ahead.delete(seq);
      if (m.position.epoch === p.epoch && seq < p.seq) out.push(m);
    }
    this.#adopt(p);
    out.push(...this.#chain(message));
    return out;
  }
}
