/**
 * One connection's output: write coalescing per event-loop turn and a bounded queue in front of the
 * socket.
 *
 * Coalescing: a turn's writes are held here, and a `setImmediate` (the check phase, right after the
 * turn's I/O callbacks) writes out every connection written in that turn. So everything due to one
 * connection (the publications of every request read in the turn, replies, heartbeats) leaves as one
 * `write` or, corked, one `writev`: the batching of Nagle's algorithm without its delay, since the
 * socket keeps TCP_NODELAY and nothing waits for a timer. A pass over many connections is written out
 * {@link WRITE_SLICE} at a time, one slice per check phase, so I/O is read between slices. A lone
 * chunk (most turns of most connections) is written plainly: corking it would cost the stream a
 * buffered request and a second pass for nothing.
 *
 * Queueing: once the stream refuses more (`write()` returned false, its buffer is past its high-water
 * mark) further writes wait here until `drain`. So the stream itself never holds much more than one
 * high-water mark, and everything beyond it is in this queue, which can be discarded whole: when a
 * slow consumer is shed, its close signal goes out right behind the little the stream already holds
 * instead of behind megabytes it will never read.
 *
 * Draining: {@link Outbox.whenDrained} tells its caller once nothing waits here and the stream takes
 * writes again (what it holds is below its own high-water mark): the low-water mark at which held-back
 * output (conflated publications) goes out.
 * @module
 */

/** A socket or an HTTP response. */
export interface WritableLike {
  readonly writableLength: number;
  /** Whether a write was refused and `drain` has not come yet (absent: judged by this outbox's own writes). */
  readonly writableNeedDrain?: boolean;
  write(chunk: string | Buffer): boolean;
  cork(): void;
  uncork(): void;
  once(event: 'drain', listener: () => void): unknown;
}

/** The stream refused more; cleared by `drain`. */
const BLOCKED = 1;
/** Closed: writes are dropped and no drained listener is called. */
const CLOSED = 2;
/** A check for `whenDrained` is due at the end of the turn. */
const CHECK_SCHEDULED = 4;
/** A `drain` listener is on the stream: only while something waits for one, so an idle connection carries none. */
const LISTENING = 8;
/** The stream came corked: the first write-out (or close) uncorks it. */
const CORKED = 16;

/**
 * Connections written out at most per check phase. A pass over more of them (a publication to
 * thousands of subscribers) yields to the event loop between slices, so requests read meanwhile
 * (further publications) reach every connection of the pass not yet written, in that same write:
 * under load a publication waits for the part of the pass still ahead, not for the whole pass and
 * then its own.
 */
export const WRITE_SLICE = 128;

/** The pass being written out, from `at`: each connection in it at most once. */
let pass: Outbox[] = [];
let at = 0;
/** Connections written since they were last written out, after the pass: each at most once. */
let touched: Outbox[] = [];
let scheduled = false;

function writeOut(): void {
  scheduled = false;
  let budget = WRITE_SLICE;
  while (budget > 0 && nextPass()) {
    // The pass and the place in it are read into locals: each write goes through the kernel, which
    // evicts what this loop touched, and module variables read after every write would miss the cache
    // each time. Nothing a write calls (synchronously) moves the pass: a write made meanwhile joins
    // `touched`.
    const list = pass;
    let i = at;
    const end = Math.min(list.length, i + budget);
    budget -= end - i;
    try {
      while (i < end) (list[i++] as Outbox).endTurn();
    } finally {
      at = i;
    }
  }
  // The slice is spent: what is left of the pass (or the next one) goes in the next check phase.
  if (budget === 0 && nextPass()) schedule();
}

/** Whether a pass is due: the rest of this one, or else the next (this one released). */
function nextPass(): boolean {
  if (at < pass.length) return true;
  pass.length = 0;
  at = 0;
  if (touched.length === 0) return false;
  // Writes made while a pass is written out (a drain listener) join `touched`: the pass after.
  const next = touched;
  touched = pass;
  pass = next;
  return true;
}

function schedule(): void {
  if (scheduled) return;
  scheduled = true;
  setImmediate(writeOut);
}

const sizeOf = (chunk: string | Buffer): number => (typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length);

export class Outbox {
  /** Bytes waiting when this turn's first write began; undefined until this connection writes in a turn. */
  #backlog: number | undefined;
  /**
   * What the stream held (`writableLength`) after this outbox last wrote to it. It can only shrink
   * until the next write, so while it is 0 the stream holds none of our bytes and need not be read:
   * the fan-out then touches no stream state, only the turn's end does.
   */
  #held = 0;
  /** This turn's writes, written out at its end: a lone chunk as itself, several as a list. */
  #turn: string | Buffer | Array<string | Buffer> | undefined;
  /**
   * Flags: BLOCKED, CLOSED, CHECK_SCHEDULED, LISTENING, CORKED, one bit each. Tested and set inline
   * rather than with bits.ts: the write-out reads them right after each write, when the kernel has
   * evicted what the loop touched, and an imported function is read through its module binding
   * (one more cache miss per write).
   */
  #flags = 0;
  /** What waits for `drain`; made when the stream first refuses more. */
  #queue: Array<string | Buffer> | undefined;
  #queued = 0;
  /** Who waits for the backlog to drain (one caller: the connection's session). */
  #onDrained: (() => void) | undefined;

  /**
   * With `corked`, the caller corked `out` before this outbox took it over: what was written to it
   * until then (a handshake's answer) leaves with this outbox's first write-out, in one `writev`.
   */
  constructor(
    private readonly out: WritableLike,
    corked = false,
  ) {
    if (corked) this.#flags = CORKED;
  }

  /**
   * Whether nothing waits here (neither this turn's writes nor a queue for `drain`) and the stream
   * takes writes again.
   */
  get drained(): boolean {
    return (this.#flags & BLOCKED) === 0 && this.#queue === undefined && this.#turn === undefined && this.out.writableNeedDrain !== true;
  }

  /**
   * Calls `listener` once, when nothing waits here and the stream takes writes again: once this turn's
   * writes are written out, at the next `drain`, or soon (never synchronously) if that is already so.
   * A later call replaces an earlier listener that has not run; a closed outbox never calls it.
   */
  whenDrained(listener: () => void): void {
    if ((this.#flags & CLOSED) !== 0) return;
    this.#onDrained = listener;
    this.#awaitDrained();
  }

  /**
   * Sees that the drained listener is called: by this turn's write-out, which looks again (a write-out
   * pass of many connections may reach this one several check phases later, and what it holds until
   * then is owed to the client as much as what the stream holds), by the stream's `drain`, or soon.
   */
  #awaitDrained(): void {
    if (this.#turn !== undefined) return;
    if (!this.drained) this.#listen();
    else if ((this.#flags & CHECK_SCHEDULED) === 0) {
      this.#flags |= CHECK_SCHEDULED;
      setImmediate(() => {
        this.#flags &= ~CHECK_SCHEDULED;
        // Written to again meanwhile, or the stream refused a write made past this outbox: look again.
        if (this.#onDrained === undefined || (this.#flags & CLOSED) !== 0) return;
        if (this.drained) this.#notifyDrained();
        else this.#awaitDrained();
      });
    }
  }

  /**
   * Bytes not yet taken by the kernel (queued here plus buffered in the stream), as they stood when
   * this turn's writes began: a burst written within one turn does not count against a reader that
   * keeps up.
   */
  get backlog(): number {
    return this.#backlog ?? this.#queued + this.#streamHeld();
  }

  write(chunk: string | Buffer): void {
    if ((this.#flags & CLOSED) !== 0) return;
    if (this.#backlog === undefined) this.#touch();
    if ((this.#flags & BLOCKED) !== 0) {
      this.#enqueue(chunk);
      return;
    }
    const turn = this.#turn;
    if (turn === undefined) this.#turn = chunk;
    else if (Array.isArray(turn)) turn.push(chunk);
    else this.#turn = [turn, chunk];
  }

  /**
   * Drops what waits for `drain` and refuses later writes. This turn's writes go to the stream first,
   * as the stream takes them: they were due before whatever closes the connection.
   */
  close(): void {
    if ((this.#flags & CLOSED) !== 0) return;
    this.#flushTurn();
    this.#flags |= CLOSED;
    this.#queue = undefined;
    this.#queued = 0;
    this.#onDrained = undefined;
  }

  /**
   * Like {@link close}, but this turn's writes are dropped too: for a stream about to be cut, which
   * would take them only to throw them away. (A stream reset by its peer within the turn is not
   * checked for at the turn's end: reading its state costs every turn of every connection, and the
   * stream drops such a write itself.)
   */
  discard(): void {
    this.#turn = undefined;
    this.close();
  }

  /** @internal Called once at the end of a turn in which this connection wrote: what it wrote leaves. */
  endTurn(): void {
    this.#backlog = undefined;
    this.#flushTurn();
    if (this.#onDrained !== undefined) this.#awaitDrained();
  }

  #flushTurn(): void {
    const turn = this.#turn;
    if (turn === undefined) {
      if ((this.#flags & CORKED) !== 0) this.#uncork();
      return;
    }
    this.#turn = undefined;
    if (!Array.isArray(turn)) this.#send(turn);
    else {
      this.out.cork();
      for (let i = 0; i < turn.length; i++) this.#send(turn[i] as string | Buffer);
      this.out.uncork();
    }
    if ((this.#flags & CORKED) !== 0) this.#uncork();
    this.#held = this.out.writableLength;
  }

  #uncork(): void {
    this.#flags &= ~CORKED;
    this.out.uncork();
  }

  /** What the stream holds: read only while it held something after our last write (see {@link #held}). */
  #streamHeld(): number {
    if (this.#held !== 0) this.#held = this.out.writableLength;
    return this.#held;
  }

  /** To the stream, or, once it refused more, into the queue for `drain`. */
  #send(chunk: string | Buffer): void {
    if ((this.#flags & BLOCKED) !== 0) this.#enqueue(chunk);
    else if (!this.out.write(chunk)) {
      this.#flags |= BLOCKED;
      this.#listen();
    }
  }

  #enqueue(chunk: string | Buffer): void {
    (this.#queue ??= []).push(chunk);
    this.#queued += sizeOf(chunk);
  }

  #touch(): void {
    this.#backlog = this.#queued + this.#streamHeld();
    touched.push(this);
    schedule();
  }

  #listen(): void {
    if ((this.#flags & LISTENING) !== 0) return;
    this.#flags |= LISTENING;
    this.out.once('drain', () => {
      this.#flags &= ~LISTENING;
      this.#drain();
    });
  }

  #notifyDrained(): void {
    const listener = this.#onDrained;
    this.#onDrained = undefined;
    if (listener !== undefined && (this.#flags & CLOSED) === 0) listener();
  }

  #drain(): void {
    this.#flags &= ~BLOCKED;
    if (this.#queue === undefined) {
      this.#notifyDrained();
      return;
    }
    const queue = this.#queue;
    this.#queue = undefined;
    this.#queued = 0;
    this.out.cork();
    let i = 0;
    let ok = true;
    while (ok && i < queue.length) ok = this.out.write(queue[i++] as string | Buffer);
    // Refused again (possibly by the very last chunk): the rest waits for the next drain.
    this.#flags = ok ? this.#flags & ~BLOCKED : this.#flags | BLOCKED;
    if (i < queue.length) {
      const rest = queue.slice(i);
      this.#queue = rest;
      for (const chunk of rest) this.#queued += sizeOf(chunk);
    }
    this.out.uncork();
    this.#held = this.out.writableLength;
    if ((this.#flags & BLOCKED) !== 0) this.#listen();
    else this.#notifyDrained();
  }
}
