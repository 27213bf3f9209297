/**
 * One subscriber abstraction over the three transports, so the transport suite runs the same
 * scenarios on each: open, drop the connection abruptly, resume from the last position, and
 * inspect what arrived (messages and gaps, in arrival order).
 * @module
 */
import {
  formatCursor,
  parseCursor,
  SseEvent,
  type Channel,
  type Gap,
  type Message,
  type PollResponse,
  type Position,
  type SubscribeResult,
} from '@tidings/protocol';
import type { TestGateway } from './gateway.js';
import { RawSseClient } from './sse-client.js';
import { Signal } from './wait.js';
import { RawWsClient } from './ws-client.js';

export type TransportKind = 'websocket' | 'sse' | 'poll';

/** What a subscriber saw, in order. */
export type Received = { readonly message: Message } | { readonly gap: Gap };

export abstract class ResumableSubscriber {
  readonly received: Received[] = [];
  /** Last position per channel, as a resuming client keeps it. */
  readonly positions = new Map<Channel, Position>();
  readonly #signal = new Signal();

  constructor(
    readonly gw: TestGateway,
    readonly channels: readonly Channel[],
  ) {}

  abstract readonly kind: TransportKind;
  /** Liveness signals seen: WebSocket pings, SSE comment lines, or long polls answered empty at their timeout. */
  abstract readonly heartbeats: number;
  /** Connects (first time or again), resuming from `positions`. */
  abstract connect(): Promise<void>;
  /** Drops the connection abruptly, keeping positions. */
  abstract drop(): void;

  get messages(): Message[] {
    return this.received.flatMap((r) => ('message' in r ? [r.message] : []));
  }

  get gaps(): Gap[] {
    return this.received.flatMap((r) => ('gap' in r ? [r.gap] : []));
  }

  /** Seqs received for one channel, in arrival order. */
  seqs(channel: Channel): number[] {
    return this.messages.filter((m) => m.channel === channel).map((m) => m.position.seq);
  }

  /** What arrived, compactly: per channel, seq runs and gaps in arrival order (for failure messages). */
  summary(): string {
    const parts: string[] = [];
    let run: [number, number] | undefined;
    const flush = (): void => {
      if (run !== undefined) parts.push(run[0] === run[1] ? `${run[0]}` : `${run[0]}-${run[1]}`);
      run = undefined;
    };
    for (const r of this.received) {
      if ('gap' in r) {
        flush();
        parts.push(`gap(${r.gap.channel} ${r.gap.from.seq}..${r.gap.to.seq} ${r.gap.reason})`);
        continue;
      }
      const seq = r.message.position.seq;
      if (run !== undefined && seq === run[1] + 1) run[1] = seq;
      else {
        flush();
        run = [seq, seq];
      }
    }
    flush();
    return `[${parts.join(', ')}] (${this.received.length} items)`;
  }

  /** The cursor text of the current positions. */
  cursor(): string {
    return formatCursor(this.positions);
  }

  protected onMessage(message: Message): void {
    this.received.push({ message });
    this.positions.set(message.channel, message.position);
    this.wake();
  }

  protected onGap(gap: Gap): void {
    this.received.push({ gap });
    this.positions.set(gap.channel, gap.to);
    this.wake();
  }

  protected wake(): void {
    this.#signal.wake();
  }

  until(predicate: (s: this) => boolean, timeoutMs = 5000): Promise<void> {
    return this.#signal.until(() => predicate(this), timeoutMs, () => `${this.kind}: condition not met; received ${this.summary()}`);
  }

  /** Waits until `count` messages of `channel` arrived. */
  untilCount(channel: Channel, count: number, timeoutMs = 5000): Promise<void> {
    return this.until((s) => s.seqs(channel).length >= count, timeoutMs);
  }

  close(): void {
    this.drop();
  }
}

class WsSubscriber extends ResumableSubscriber {
  readonly kind = 'websocket';
  client: RawWsClient | undefined;
  heartbeats = 0;

  async connect(): Promise<void> {
    const client = await RawWsClient.connect(this.gw.wsUrl);
    this.client = client;
    client.ws.on('ping', () => {
      this.heartbeats += 1;
      this.wake();
    });
    client.ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString('utf8')) as { type: string; message?: Message; gap?: Gap };
      if (frame.type === 'message' && frame.message !== undefined) this.onMessage(frame.message);
      else if (frame.type === 'gap' && frame.gap !== undefined) this.onGap(frame.gap);
    });
    for (const channel of this.channels) {
      const since = this.positions.get(channel);
      const reply = await client.request(since === undefined ? { type: 'subscribe', channel } : { type: 'subscribe', channel, since });
      if (reply.type !== 'reply') throw new Error(`subscribe failed: ${JSON.stringify(reply)}`);
      const result = reply.result as SubscribeResult;
      if (!this.positions.has(channel)) this.positions.set(channel, result.position);
    }
  }

  drop(): void {
    this.client?.terminate();
    this.client = undefined;
  }
}

class SseSubscriber extends ResumableSubscriber {
  readonly kind = 'sse';
  client: RawSseClient | undefined;
  #pastComments = 0;

  get heartbeats(): number {
    return this.#pastComments + (this.client?.comments ?? 0);
  }
  #seen = 0;
  #poller: NodeJS.Timeout | undefined;

  async connect(): Promise<void> {
    const url = `${this.gw.url}/sse?${this.channels.map((c) => `channel=${encodeURIComponent(c)}`).join('&')}`;
    const client = await RawSseClient.open(url, this.positions.size > 0 ? this.cursor() : undefined);
    if (client.status !== 200) throw new Error(`SSE ${client.status}: ${client.body}`);
    this.client = client;
    this.#seen = 0;
    await client.until((c) => c.named(SseEvent.welcome).length > 0);
    this.#drain();
    this.#poller = setInterval(() => this.#drain(), 5);
  }

  /** Moves parsed events into `received`, tracking positions from each event's id like a browser. */
  #drain(): void {
    const client = this.client;
    if (client === undefined) return;
    for (; this.#seen < client.events.length; this.#seen++) {
      const e = client.events[this.#seen];
      if (e === undefined) break;
      if (e.event === SseEvent.gap) this.onGap(JSON.parse(e.data) as Gap);
      else if (e.event !== SseEvent.welcome && e.event !== SseEvent.error) this.onMessage(JSON.parse(e.data) as Message);
      // The id is the authority for resume: it carries every channel's position.
      for (const [channel, p] of parseCursor(e.id)) this.positions.set(channel, p);
    }
  }

  override until(predicate: (s: this) => boolean, timeoutMs = 5000): Promise<void> {
    this.#drain();
    return super.until((s) => {
      this.#drain();
      return predicate(s);
    }, timeoutMs);
  }

  drop(): void {
    this.#drain();
    this.#pastComments += this.client?.comments ?? 0;
    clearInterval(this.#poller);
    this.client?.close();
    this.client = undefined;
  }
}

class PollSubscriber extends ResumableSubscriber {
  readonly kind = 'poll';
  #cursor = '';
  /** The poll in flight's controller. */
  #ctrl: AbortController | undefined;
  #stopped = false;
  #loop: Promise<void> | undefined;
  /** Last HTTP error seen by the loop. */
  lastError: unknown;
  heartbeats = 0;

  constructor(
    gw: TestGateway,
    channels: readonly Channel[],
    readonly holdMs: number,
  ) {
    super(gw, channels);
  }

  #url(cursor: string, timeout: number): string {
    const q = this.channels.map((c) => `channel=${encodeURIComponent(c)}`);
    if (cursor !== '') q.push(`cursor=${encodeURIComponent(cursor)}`);
    q.push(`timeout=${timeout}`);
    return `${this.gw.url}/poll?${q.join('&')}`;
  }

  async #once(cursor: string, timeout: number, signal?: AbortSignal): Promise<PollResponse> {
    const res = await fetch(this.#url(cursor, timeout), signal === undefined ? {} : { signal });
    const body = (await res.json()) as PollResponse;
    if (!res.ok) throw new Error(`poll ${res.status}: ${JSON.stringify(body)}`);
    return body;
  }

  #apply(body: PollResponse): void {
    if (body.messages.length === 0 && body.gaps.length === 0) this.heartbeats += 1;
    for (const gap of body.gaps) this.onGap(gap);
    for (const m of body.messages) this.onMessage(m);
    this.#cursor = body.cursor;
    for (const [channel, p] of parseCursor(body.cursor)) this.positions.set(channel, p);
  }

  async connect(): Promise<void> {
    this.#cursor = this.cursor();
    // A first poll that does not wait fixes "now" (or delivers what was missed) before returning.
    this.#apply(await this.#once(this.#cursor, 0));
    this.#stopped = false;
    this.#loop = (async () => {
      while (!this.#stopped) {
        // A controller per poll: fetch leaves its abort listener on the signal until the request is
        // collected, so one signal for every poll would gather thousands of them.
        const ctrl = new AbortController();
        this.#ctrl = ctrl;
        try {
          this.#apply(await this.#once(this.#cursor, this.holdMs, ctrl.signal));
        } catch (err) {
          if (ctrl.signal.aborted) return;
          this.lastError = err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    })();
  }

  drop(): void {
    this.#stopped = true;
    this.#ctrl?.abort();
    this.#ctrl = undefined;
    void this.#loop;
  }
}

/** Opens a subscriber on `kind`; `cursor` (text) seeds the positions to resume from. */
export async function openSubscriber(
  kind: TransportKind,
  gw: TestGateway,
  channels: readonly Channel[],
  cursor?: string,
): Promise<ResumableSubscriber> {
  const sub =
    kind === 'websocket' ? new WsSubscriber(gw, channels) : kind === 'sse' ? new SseSubscriber(gw, channels) : new PollSubscriber(gw, channels, 25_000);
  if (cursor !== undefined) for (const [channel, p] of parseCursor(cursor)) sub.positions.set(channel, p);
  await sub.connect();
  return sub;
}

export const TRANSPORTS: readonly TransportKind[] = ['websocket', 'sse', 'poll'];

/**
 * Tries to subscribe on `kind` resuming from `cursor` and returns the error code the gateway
 * answered with (an `error` frame on WebSocket, the HTTP error body otherwise), or 'ok'.
 */
export async function resumeOutcome(kind: TransportKind, gw: TestGateway, channel: Channel, cursor: string): Promise<string> {
  try {
    const sub = await openSubscriber(kind, gw, [channel], cursor);
    sub.close();
    return 'ok';
  } catch (err) {
    const match = /"code":"([a-z_]+)"/.exec(String(err));
    return match?.[1] ?? String(err);
  }
}
