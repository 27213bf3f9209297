/**
 * Write coalescing for one connection. The first write in a tick goes straight to the socket (with
 * TCP_NODELAY, so a lone publication leaves at once, exactly as an uncorked write would); a second
 * write in the same tick corks the stream, and one `nextTick` uncorks every stream corked in that
 * tick, so a burst leaves as one `writev`.
 * @module
 */

/** A socket or an HTTP response. */
export interface WritableLike {
  readonly writableLength: number;
  write(chunk: string | Buffer): boolean;
  cork(): void;
  uncork(): void;
}

const touched: TickWriter[] = [];
let scheduled = false;

function endTick(): void {
  scheduled = false;
  for (let i = 0; i < touched.length; i++) (touched[i] as TickWriter).endTick();
  touched.length = 0;
}

/**
 * One connection's output. The backlog is measured as it stood when the tick's writes began, so a
 * burst written within one tick (a batch) does not count against a reader that keeps up.
 */
export class TickWriter {
  /** Bytes unsent when this tick's first write began; undefined until this connection writes in a tick. */
  #backlog: number | undefined;
  #corked = false;

  constructor(private readonly out: WritableLike) {}

  /** Bytes the kernel has not taken, excluding this tick's writes. */
  get backlog(): number {
    return this.#backlog ?? this.out.writableLength;
  }

  /** Marks a write by someone else (the `ws` library) so the rest of the tick coalesces with it. */
  hold(): void {
    this.#touch();
  }

  write(chunk: string | Buffer): void {
    this.#touch();
    this.out.write(chunk);
  }

  /** @internal Called once at the end of a tick in which this connection wrote. */
  endTick(): void {
    this.#backlog = undefined;
    if (this.#corked) {
      this.#corked = false;
      this.out.uncork();
    }
  }

  #touch(): void {
    if (this.#backlog === undefined) {
      // First write this tick: remember the backlog, write through.
      this.#backlog = this.out.writableLength;
      touched.push(this);
      if (!scheduled) {
        scheduled = true;
        process.nextTick(endTick);
      }
    } else if (!this.#corked) {
      // Second write this tick: coalesce the rest of the burst.
      this.#corked = true;
      this.out.cork();
    }
  }
}
