/**
 * Long-polling transport: `GET /poll`. One request is one short-lived {@link Sink}: every requested
 * channel is subscribed first, then it answers at the first delivery (plus the rest of that tick),
 * at the message limit or at the hold timeout, with the messages, gaps and a cursor covering every
 * requested channel. Once the limit is reached, later deliveries are left out and their channels'
 * cursor entries stay where the last included item left them, so the next poll continues exactly
 * there. The server keeps no state between polls.
 * @module
 */
import {
  encodePollResponse,
  formatCursorEntry,
  TidingsError,
  type Channel,
  type CloseName,
  type Gap,
  type Position,
  type RequestId,
  type SubscribeResult,
} from '@tidings/protocol';
import type { Admitted, Carrier, HttpRequest, HttpResponse, LaneHandler } from '../admission.js';
import type { EncodedPublication } from '../encoded.js';
import { streamParams, subscribeAll } from '../http/params.js';
import { answerTakes, type Attachment, type Connector, type Poller, type PollWatcher, type Sink } from '../sink.js';

export interface PollOptions {
  /** The longest a poll is held; a `timeout` query may only shorten it. */
  readonly pollTimeout: number;
  readonly maxPollMessages: number;
  /** About the most bytes of messages in one answer (at least one message). */
  readonly maxBufferedBytes: number;
}

const ANSWER_HEADERS: Readonly<Record<string, string>> = Object.freeze({ 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });

export class PollConnection implements Sink {
  readonly #entries = new Map<Channel, string>();
  readonly #messages: string[] = [];
  readonly #gaps: Gap[] = [];
  /** Bytes of message JSON collected. */
  #bytes = 0;
  /** Channels with a message in this answer (at most the poll's channels). */
  #messaged: Channel[] | undefined;
  /** This answer takes nothing more: a message did not fit, or a gap came after messages of its channel (see {@link gap}). */
  #cut = false;
  #armed = false;
  #done = false;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;

  /** `start` holds the positions the client sent: until a channel is subscribed, its cursor entry stays there. */
  constructor(
    private readonly res: HttpResponse,
    channels: readonly Channel[],
    start: ReadonlyMap<Channel, Position>,
    private readonly maxMessages: number,
    /** About the most bytes of messages in the answer (at least one message). */
    private readonly maxBytes: number,
    private readonly onDone: () => void,
    /** The CORS headers of the request's origin (shared between polls). */
    private readonly cors: Readonly<Record<string, string>> = {},
  ) {
    for (const channel of channels) {
      const p = start.get(channel);
      this.#entries.set(channel, p === undefined ? '' : formatCursorEntry(channel, p));
    }
    res.on('close', () => this.#finish(false));
  }

  /** Nothing is queued in the socket until the single response is written. */
  get bufferedBytes(): number {
    return 0;
  }

  /** Nothing more goes into this answer: the message limit is reached, or it was cut. */
  get #full(): boolean {
    return this.#cut || this.#messages.length >= this.maxMessages;
  }

  /** Every channel is subscribed: answer now if anything is collected, else at the first delivery or after `holdMs`. */
  arm(holdMs: number): void {
    this.#armed = true;
    if (this.#done) return;
    if (this.#messages.length > 0 || this.#gaps.length > 0) this.#schedule();
    else this.#timer = setTimeout(() => this.#finish(true), holdMs);
  }

  subscribed(result: SubscribeResult, _id: RequestId | undefined): void {
    if (!this.#done) this.#set(result.channel, result.position);
  }

  message(enc: EncodedPublication): void {
    if (this.#done || this.#full) return;
    const { channel } = enc.pub;
    const json = enc.json;
    // Past the byte limit with this one, it waits for the next poll (unless it is the first).
    if (!answerTakes(this.#messages.length, this.#bytes, json.length, this.maxMessages, this.maxBytes)) {
      this.#cut = true;
      this.#schedule();
      return;
    }
    this.#bytes += json.length;
    this.#messages.push(json);
    this.#entries.set(channel, enc.cursorEntry);
    if (this.#messaged === undefined) this.#messaged = [channel];
    else if (!this.#messaged.includes(channel)) this.#messaged.push(channel);
    this.#schedule();
  }

  /**
   * An answer lists its gaps before its messages, so a gap that comes after messages of its channel
   * ends the answer before it: the cursor stops at those messages, and the next poll, from there,
   * gets the gap again (from history) and what followed it.
   */
  gap(gap: Gap): void {
    if (this.#done || this.#full) return;
    if (this.#messaged?.includes(gap.channel) === true) {
      this.#cut = true;
      this.#schedule();
      return;
    }
    this.#gaps.push(gap);
    this.#set(gap.channel, gap.to);
    this.#schedule();
  }

  /** Answers with what was collected (the session is closing: shutdown, or the channel failed). */
  close(_name: CloseName, _reason: string): void {
    this.#finish(true);
  }

  /**
   * A subscribe failed before the poll was armed: release it. Returns true when the poll already
   * answered (the session was closed meanwhile), so the failure needs no answer of its own.
   */
  abandon(): boolean {
    const answered = this.#done;
    this.#finish(false);
    return answered;
  }

  #set(channel: Channel, position: Position): void {
    this.#entries.set(channel, formatCursorEntry(channel, position));
  }

  #schedule(): void {
    // Answer after the current tick so publications due together leave together.
    if (this.#armed && this.#immediate === undefined && !this.#done) this.#immediate = setImmediate(() => this.#finish(true));
  }

  #finish(respond: boolean): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    if (respond && !this.res.headersSent && !this.res.destroyed) {
      const cursor = [...this.#entries.values()].filter((e) => e !== '').join(',');
      const body = encodePollResponse(this.#messages, this.#gaps, cursor);
      this.res.writeHead(200, { ...this.cors, ...ANSWER_HEADERS, 'content-length': Buffer.byteLength(body) });
      this.res.end(body);
    }
    this.onDone();
  }
}

/**
 * The head of an answer for an origin's CORS headers and a body length. Every poller parked at a
 * position gets the same body, so the last head made is asked for again and again: it is kept, frozen
 * (a response may then keep what it made of it, see `http/lane.ts`).
 */
let lastHead: { cors: Readonly<Record<string, string>>; length: number; headers: Readonly<Record<string, string | number>> } | undefined;
function answerHead(cors: Readonly<Record<string, string>>, length: number): Readonly<Record<string, string | number>> {
  if (lastHead?.cors !== cors || lastHead.length !== length) {
    lastHead = { cors, length, headers: Object.freeze({ ...cors, ...ANSWER_HEADERS, 'content-length': length }) };
  }
  return lastHead.headers;
}

/**
 * A held response as a poll group sees it: the same answer bytes may go to many. A class, not an
 * object of closures, and its close listener is shared by every held poll (it finds the poll through
 * the response): a held poll costs one small object here.
 */
class HeldResponse implements Poller {
  #watcher: PollWatcher | undefined;

  constructor(
    private readonly res: HttpResponse,
    private readonly cors: Readonly<Record<string, string>>,
  ) {}

  answer(body: Buffer): void {
    const { res } = this;
    if (res.headersSent || res.destroyed) return;
    res.writeHead(200, answerHead(this.cors, body.length));
    res.end(body);
  }

  watch(watcher: PollWatcher): void {
    this.#watcher = watcher;
    (this.res as Carrier).stream = this;
    // `on`, not `once`, which wraps the listener in two more objects: 'close' comes once anyway.
    this.res.on('close', heldClosed);
  }

  /** The response closed: answered, or its client went away (the watcher tells which). */
  closed(): void {
    const watcher = this.#watcher;
    this.#watcher = undefined;
    watcher?.gone();
  }
}

/** The close listener of every held poll's response. */
function heldClosed(this: HttpResponse): void {
  const held = (this as Carrier).stream;
  if (held instanceof HeldResponse) held.closed();
}

export class PollTransport {
  constructor(
    private readonly opts: PollOptions,
    private readonly connector: Connector,
  ) {}

  /** `GET /poll`: a poll its channel's group holds (or answers at once) is done without a promise. */
  readonly handle: LaneHandler = (_req: HttpRequest, res: HttpResponse, admitted: Admitted) => {
    const { target } = admitted;
    const params = streamParams(target, target.get('cursor') ?? undefined);
    const timeoutText = target.get('timeout');
    let hold = this.opts.pollTimeout;
    if (timeoutText !== null) {
      // Digits only: Number() would read '' and ' ' as 0, '0x10' as 16 and '1e3' as 1000.
      const t = /^[0-9]{1,15}$/.test(timeoutText) ? Number(timeoutText) : NaN;
      if (!Number.isInteger(t)) throw new TidingsError('bad_request', 'timeout must be a non-negative integer (ms)');
      hold = Math.min(t, hold);
    }
    // One channel: the core's poll group may hold it, or answer it at once, with shared bytes.
    const only = params.channels.length === 1 ? params.channels[0] : undefined;
    if (only !== undefined && this.connector.park !== undefined) {
      const outcome = this.connector.park({ channel: only, since: params.cursor.get(only), identity: admitted.identity, hold, poller: new HeldResponse(res, admitted.cors), slot: admitted.slot });
      if (outcome !== 'declined') return undefined;
    } else if (only === undefined && this.connector.parkJoint !== undefined) {
      // Several channels: held in each one's group, or answered at once from what they hold.
      const { channels, cursor } = params;
      const outcome = this.connector.parkJoint({ channels, cursor, identity: admitted.identity, hold, poller: new HeldResponse(res, admitted.cors), slot: admitted.slot });
      if (outcome !== 'declined') return undefined;
    }
    // A poll its group did not take starts a session's work (a hub join, perhaps a broker subscribe
    // and a history read): that is a new connection, and it takes its token of the connect rate.
    admitted.slot?.charge();
    return this.#session(res, admitted, params.channels, params.cursor, hold);
  };

  /** A poll with a session of its own: one its channels' groups declined. */
  async #session(res: HttpResponse, admitted: Admitted, channels: readonly Channel[], cursor: ReadonlyMap<Channel, Position>, hold: number): Promise<void> {
    const owner: { session?: Attachment } = {};
    const conn = new PollConnection(res, channels, cursor, this.opts.maxPollMessages, this.opts.maxBufferedBytes, () => owner.session?.detach(), admitted.cors);
    const session = (owner.session = this.connector.open('poll', conn, admitted.identity));
    try {
      await subscribeAll(session, channels, cursor);
    } catch (err) {
      if (conn.abandon()) return;
      throw err;
    }
    conn.arm(hold);
    if (this.connector.polled !== undefined) for (const channel of channels) this.connector.polled(channel);
  }
}
