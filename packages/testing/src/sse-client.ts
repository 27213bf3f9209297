/**
 * A raw SSE client over node:http with its own line parser, so tests see exactly what is on the
 * wire (ids, event names, comments, retry) and can drop the connection at any moment.
 * @module
 */
import { request, type ClientRequest, type IncomingMessage } from 'node:http';

/** One dispatched event. */
export interface SseEventRecord {
  readonly id: string;
  readonly event: string;
  readonly data: string;
}

export class RawSseClient {
  readonly events: SseEventRecord[] = [];
  comments = 0;
  retry: number | undefined;
  status = 0;
  headers: IncomingMessage['headers'] = {};
  body = '';
  /** The last event id seen, as a browser keeps it for `Last-Event-ID`. */
  lastEventId = '';
  #req: ClientRequest | undefined;
  #buffer = '';
  #id = '';
  #event = '';
  #data: string[] = [];
  #waiters: Array<() => void> = [];
  #ended = false;

  /** Opens `url` (with `Last-Event-ID` when given) and resolves once the status line arrives. */
  static open(url: string, lastEventId?: string): Promise<RawSseClient> {
    const client = new RawSseClient();
    return client.#open(url, lastEventId).then(() => client);
  }

  get ended(): boolean {
    return this.#ended;
  }

  #open(url: string, lastEventId?: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { accept: 'text/event-stream' };
      if (lastEventId !== undefined && lastEventId !== '') headers['last-event-id'] = lastEventId;
      this.lastEventId = lastEventId ?? '';
      const req = request(url, { headers }, (res) => {
        this.status = res.statusCode ?? 0;
        this.headers = res.headers;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => this.#feed(chunk));
        res.on('end', () => this.#end());
        res.on('error', () => this.#end());
        resolve();
      });
      req.on('error', (err) => {
        this.#end();
        reject(err);
      });
      req.end();
      this.#req = req;
    });
  }

  #end(): void {
    this.#ended = true;
    this.#wake();
  }

  #feed(chunk: string): void {
    this.body += chunk;
    if (this.status !== 200) return;
    this.#buffer += chunk;
    let nl: number;
    while ((nl = this.#buffer.search(/\r\n|\r|\n/)) !== -1) {
      const line = this.#buffer.slice(0, nl);
      const sep = this.#buffer.startsWith('\r\n', nl) ? 2 : 1;
      this.#buffer = this.#buffer.slice(nl + sep);
      this.#line(line);
    }
    this.#wake();
  }

  #line(line: string): void {
    if (line === '') {
      this.lastEventId = this.#id;
      if (this.#data.length > 0) {
        this.events.push({ id: this.#id, event: this.#event === '' ? 'message' : this.#event, data: this.#data.join('\n') });
      }
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

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves when `predicate` holds (checked on every chunk), or rejects after `timeoutMs`. */
  async until(predicate: (c: this) => boolean, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`SSE: condition not met within ${timeoutMs} ms (${this.events.length} events)`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 100));
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Events with a given name. */
  named(event: string): SseEventRecord[] {
    return this.events.filter((e) => e.event === event);
  }

  /** Drops the connection abruptly. */
  close(): void {
    this.#req?.destroy();
    this.#ended = true;
  }
}
