/**
 * Write coalescing. The first write to a stream in a tick corks it; one `nextTick` uncorks every
 * corked stream, so all publications due to one socket within a tick leave as one write while
 * TCP_NODELAY keeps latency low.
 * @module
 */

/** What can be corked: a net.Socket or an http.ServerResponse. */
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
