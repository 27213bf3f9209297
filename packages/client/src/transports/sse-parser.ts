/**
 * An incremental `text/event-stream` parser (WHATWG HTML, "Parsing an event stream"): feed it
 * decoded text chunks, get dispatched events and comment counts. Pure, no I/O.
 * @module
 */

export interface SseEvent {
  readonly event: string;
  readonly data: string;
  /** The last event id in effect when this event was dispatched. */
  readonly id: string;
}

export class SseParser {
  #buffer = '';
  #event = '';
  #data: string[] = [];
  #id = '';
  /** Comment lines seen (heartbeats). */
  comments = 0;
  /** The last `retry:` value, in ms. */
  retry: number | undefined;

  /** Parses a chunk; returns the events it completed. */
  feed(chunk: string): SseEvent[] {
    const out: SseEvent[] = [];
    this.#buffer += chunk;
    let start = 0;
    for (;;) {
      const nl = this.#lineEnd(start);
      if (nl === -1) break;
      const line = this.#buffer.slice(start, nl);
      start = nl + (this.#buffer[nl] === '\r' && this.#buffer[nl + 1] === '\n' ? 2 : 1);
      this.#line(line, out);
    }
    this.#buffer = this.#buffer.slice(start);
    return out;
  }

  #lineEnd(from: number): number {
    for (let i = from; i < this.#buffer.length; i++) {
      const c = this.#buffer[i];
      if (c === '\n') return i;
      // A lone CR ends a line too, but only once we know the next character is not LF.
      if (c === '\r') return i + 1 < this.#buffer.length ? i : -1;
    }
    return -1;
  }

  #line(line: string, out: SseEvent[]): void {
    if (line === '') {
      if (this.#data.length > 0) out.push({ event: this.#event || 'message', data: this.#data.join('\n'), id: this.#id });
      this.#data = [];
      this.#event = '';
      return;
    }
    if (line.startsWith(':')) {
      this.comments += 1;
      return;
    }
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.#data.push(value);
    else if (field === 'event') this.#event = value;
    else if (field === 'id' && !value.includes('\0')) this.#id = value;
    else if (field === 'retry' && /^\d+$/.test(value)) this.retry = Number(value);
  }
}
