/**
 * Write coalescing. The first write to a stream in a tick corks it; one `nextTick` uncorks every
 * corked stream, so all publications due to one socket within a tick leave as one write while
 * TCP_NODELAY keeps latency low.
 * @module
 */

/** What can be corked. */
export interface Corkable {
  cork(): void;
  uncork(): void;
}

const corked: Corkable[] = [];
const marked = new WeakSet<Corkable>();
let scheduled = false;

function flush(): void {
  scheduled = false;
  for (let i = 0; i < corked.length; i++) {
    const s = corked[i] as Corkable;
    marked.delete(s);
    s.uncork();
  }
  corked.length = 0;
}

/** Corks `stream` until the end of this tick (idempotent within a tick). */
export function corkUntilNextTick(stream: Corkable): void {
  if (marked.has(stream)) return;
  marked.add(stream);
  stream.cork();
  corked.push(stream);
  if (!scheduled) {
    scheduled = true;
    process.nextTick(flush);
  }
}

/** A socket or an HTTP response. */
export interface WritableLike extends Corkable {
  readonly writableLength: number;
  write(chunk: string | Buffer): boolean;
}

/**
 * One connection's output: writes are corked until the end of the tick, and the backlog is measured
 * as it stood when the tick's writes began, so a burst written within one tick (a batch) does not
 * count against a reader that keeps up.
 */
export class TickWriter implements Corkable {
  #backlog: number | undefined;

  constructor(private readonly out: WritableLike) {}

  /** Bytes the kernel has not taken, excluding this tick's writes. */
  get backlog(): number {
    return this.#backlog ?? this.out.writableLength;
  }

  /** Corks for the rest of the tick; for writes made by someone else (the `ws` library). */
  hold(): void {
    corkUntilNextTick(this);
  }

  write(chunk: string | Buffer): void {
    corkUntilNextTick(this);
    this.out.write(chunk);
  }

  cork(): void {
    this.#backlog = this.out.writableLength;
    this.out.cork();
  }

  uncork(): void {
    this.#backlog = undefined;
    this.out.uncork();
  }
}
