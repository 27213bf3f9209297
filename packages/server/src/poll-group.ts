/**
 * One poll group: the internal subscription of one polled channel on this node, the polls parked in
 * it, and the recent publications it answers polls a little behind from.
 *
 * - At the group's latest position a poll is parked; the group's next publications (those of one
 *   event-loop turn together) are encoded into one answer, written as the same bytes to every poller
 *   parked there (a poll that comes during that turn, at a position it brought, waits for the next).
 *   A poll of several channels ({@link JointPoll}) is parked in each one's group and answered by the
 *   first with news, with what its other channels got in the same turn.
 * - Behind it, within the recent publications the group holds, a poll of its channel alone is
 *   answered at once (one encoding per starting position until the next publication, at most
 *   `maxPollMessages` and about `maxBufferedBytes` of messages; a new encoding costs the poll its
 *   token of the connect rate).
 *
 * The group's subscription is an ordinary session, so resume, repair, gaps and epochs work as they do
 * for any subscriber: a gap it sees is passed to its parked polls, and its recent publications start
 * over. What it holds counts against the node's `maxPollGroupBytes` ({@link PollBytes}): past it the
 * group keeps fewer (its oldest go first).
 * @module
 */
import { encodePollResponse, formatCursorEntry, type Channel, type CloseName, type Gap, type Position, type SubscribeResult } from '@tidings/protocol';
import type { Identity } from './auth.js';
import type { EncodedPublication } from './encoded.js';
import { MAX_TIMER, systemClock, type Clock, type ClockTimer } from './clock.js';
import type { Metrics } from './metrics.js';
import { Session, type SessionContext } from './session.js';
import { answerTakes, type ParkOutcome, type ParkRequest, type Poller, type PollWatcher, type Sink } from './sink.js';

/** Recent publications a group holds for polls that are a little behind. */
export const RECENT = 64;
/**
 * The messages of one answer: from `from`, at most `maxMessages`, and no more than `maxBytes` of message
 * JSON, but at least one. The cursor of the answer stops at its last message.
 */
export function answerSlice<T extends { readonly json: string }>(list: readonly T[], from: number, maxMessages: number, maxBytes: number): T[] {
  let bytes = 0;
  let i = from;
  for (; i < list.length; i++) {
    const size = (list[i] as T).json.length;
    if (!answerTakes(i - from, bytes, size, maxMessages, maxBytes)) break;
    bytes += size;
  }
  return list.slice(from, i);
}

/**
 * What a group keeps of a publication: its message JSON, position and arrival time. Not the publication
 * and its other encodings (WebSocket frame, SSE event), which go once the fan-out is done.
 */
export interface Held {
  readonly json: string;
  readonly position: Position;
  readonly arrivedAt: number;
}

/** What a held publication or an answer is counted as, beyond its text: the objects around it. */
const OVERHEAD = 128;
const heldSize = (held: Held): number => held.json.length + OVERHEAD;

/** The bytes all of a node's poll groups hold, against `maxPollGroupBytes`. */
export class PollBytes {
  used = 0;

  constructor(readonly max: number) {}

  fits(bytes: number): boolean {
    return this.used + bytes <= this.max;
  }
}

/** Where a poll at the group's latest position starts: it is held for the next publication. */
export const LATEST = -1;

/** Held publications are let go this long before the history's TTL would (ms). */
const EXPIRY_MARGIN = 250;

/** A poll held in a group, until a publication, its hold, its credentials' expiry, or its client's going. */
class Parked implements PollWatcher {
  /** Answered, or let go: its place in its hold queue goes when the queue next moves on. */
  done = false;
  /** When the poll's credentials expire (on the gateway's clock), the poll is answered as it stands. */
  expiry: ClockTimer | undefined = undefined;

  constructor(
    readonly group: PollGroup,
    readonly poller: Poller,
    /** The position the poll waits after: its cursor, or the group's latest when it had none. */
    readonly at: Position,
    /**
     * How many of this turn's publications and gaps the poll is already past: it came after them,
     * at the position they brought. Zero for a poll held over from an earlier turn.
     */
    public pending: number,
    public gaps: number,
    /** When its hold runs out (`performance.now()`). */
    readonly deadline: number,
    /** The poll of several channels this is one channel of; it answers, and it watches the client. */
    readonly joint: JointPoll | undefined = undefined,
  ) {}

  /** Its client went away. */
  gone(): void {
    this.group.gone(this);
  }
}

/**
 * The messages of an answer as they are taken, channel by channel: at most `maxMessages` and about
 * `maxBytes` of them (at least one); once one does not fit, none after it is taken.
 */
export class AnswerMessages {
  readonly json: string[] = [];
  #bytes = 0;
  #full = false;

  constructor(
    private readonly maxMessages: number,
    private readonly maxBytes: number,
  ) {}

  /** Takes `held` when it fits; false when it does not (and for every one after). */
  take(held: Held): boolean {
    const size = held.json.length;
    if (this.#full || !answerTakes(this.json.length, this.#bytes, size, this.maxMessages, this.maxBytes)) {
      this.#full = true;
      return false;
    }
    this.json.push(held.json);
    this.#bytes += size;
    return true;
  }
}

/** A joint poll's answer, and the publications of its other channels it carries. */
interface JointAnswer {
  readonly body: Buffer;
  readonly others: readonly Held[];
}

const NO_HELD: readonly Held[] = [];

/**
 * A poll of several channels, parked in each one's group (one {@link Parked} in each): the first group
 * with news for it answers it, with the cursor of every channel (the others' where the poll left
 * them), and it is let go from the rest. It times out, sees its credentials expire and its client go
 * once, not once per channel.
 */
export class JointPoll implements PollWatcher {
  done = false;
  readonly entries: Parked[] = [];
  expiry: ClockTimer | undefined = undefined;

  constructor(
    readonly poller: Poller,
    private readonly metrics: Metrics,
    private readonly clock: Clock,
    /** Told once, when the poll is answered or let go. */
    private readonly onDone: (joint: JointPoll) => void,
    /** The cursor as the poll brought it: every channel at the place it waits at, in the order of {@link entries}. */
    readonly at: string,
  ) {}


  /**
   * The answer to the poll when `from` has news for it (`due` and `gaps`, which leave its channel's
   * cursor at `entry`): with what its other channels' groups got this turn and have not answered yet
   * (within the answer's limits; a group that had a gap this turn keeps its news for the next poll),
   * and every other channel's cursor where the poll left it. `others`: the other groups' publications
   * it carries.
   */
  answer(from: PollGroup, entry: string, due: readonly Held[], gaps: readonly Gap[], maxMessages: number, maxBytes: number): JointAnswer {
    const messages = new AnswerMessages(maxMessages, maxBytes);
    // `due` was cut to the same limits: it fits whole.
    for (const held of due) messages.take(held);
    const others: Held[] = [];
    let cursor = '';
    for (const e of this.entries) {
      let end = e.group === from ? entry : undefined;
      if (end === undefined) {
        let last: Position = e.at;
        for (const held of e.group.unseen(e)) {
          if (!messages.take(held)) break;
          others.push(held);
          last = held.position;
        }
        end = formatCursorEntry(e.group.channel, last);
      }
      cursor += (cursor === '' ? '' : ',') + end;
    }
    return { body: Buffer.from(encodePollResponse(messages.json, gaps, cursor)), others };
  }

  /** Nothing new on any channel: the cursor as the poll brought it. */
  emptyAnswer(): Buffer {
    return emptyAnswer(this.at);
  }

  /** Answers with `body` (none: the client went away), lets go of the poll in every group, once. */
  finish(body: Buffer | undefined, reason: string): void {
    if (this.done) return;
    this.done = true;
    this.clock.clearTimeout(this.expiry);
    for (const e of this.entries) e.group.leave(e);
    if (body !== undefined) this.poller.answer(body);
    this.metrics.connectionClosed('poll', reason);
    this.onDone(this);
  }

  /** The hold ran out, or the credentials expired. */
  timeout(reason: string): void {
    if (!this.done) this.finish(this.emptyAnswer(), reason);
  }

  gone(): void {
    this.finish(undefined, 'client_gone');
  }
}

/**
 * The polls parked with one hold, in the order they came, which is the order their holds run out: one
 * timer for all of them, at the first one's time, instead of one per poll. Polls answered before their
 * time stay in the queue (marked done) until it moves past them or is compacted.
 */
class HoldQueue {
  items: Parked[] = [];
  head = 0;
  timer: NodeJS.Timeout | undefined = undefined;

  constructor(readonly hold: number) {}
}

/** A hold timer may fire up to a millisecond before its time as `performance.now()` counts it (timers count whole milliseconds). */
const TIMER_SLACK = 1;

/** The group's identity: a server-side subscription (no presence, no client permissions). */
const GROUP: Identity = Object.freeze({ user: '', anonymous: false, server: true });

export const emptyAnswer = (cursor: string): Buffer => Buffer.from(encodePollResponse([], [], cursor));

export class PollGroup implements Sink {
  readonly session: Session;
  /** Counts the publications and gaps that came: an answer made from the group holds while it is unchanged. */
  generation = 0;
  /** The latest position: undefined until the subscription started. */
  last: Position | undefined;
  /**
   * Recent publications, consecutive, the newest at `last` (empty after a gap, and fewer or none when
   * the node's poll groups hold `maxPollGroupBytes`), and their bytes.
   */
  #recent: Held[] = [];
  #recentBytes = 0;
  /**
   * Polls held at `last`, in the order they came, with the places of those answered or gone before the
   * next publication (marked done) until it comes or {@link #compact} lets them go: an array, not a
   * set, whose deletes while it is iterated made each poll cost a microsecond more.
   */
  #parked: Parked[] = [];
  /** The polls of {@link #parked} not done. */
  #held = 0;
  /** The parked polls by hold, for their timers; with the places of polls answered early, {@link #queued} in all. */
  readonly #holds = new Map<number, HoldQueue>();
  #queued = 0;
  /** What arrived this turn, answered together at its end. */
  #pending: Held[] = [];
  #gaps: Gap[] = [];
  #flush: NodeJS.Immediate | undefined;
  /**
   * Answers built since the last publication, by starting seq (catch-up answers, and empty ones at a
   * hold timeout), and their bytes. One the node's poll groups have no room for is not kept.
   */
  #answers = new Map<number, Buffer>();
  #answerBytes = 0;
  idleSince = Date.now();
  #closed = false;
  readonly bufferedBytes = 0;

  /**
   * @param keep the most recent publications held: never more than the namespace's history keeps, so a
   * poll answered here gets what the ordinary path would (never what history no longer has)
   * @param ttl how long a publication is held (the namespace's `historyTtl`, in ms)
   */
  constructor(
    readonly channel: Channel,
    ctx: SessionContext,
    private readonly metrics: Metrics,
    private readonly maxMessages: number,
    /** About the most bytes of messages in one answer (at least one message): `maxBufferedBytes`. */
    private readonly maxBytes: number,
    private readonly keep: number,
    private readonly ttl: number,
    /** What all of the node's groups hold. */
    private readonly bytes: PollBytes,
    private readonly onClosed: (group: PollGroup) => void,
  ) {
    this.session = new Session(ctx, this, GROUP, () => this.#end(), 'poll');
    this.clock = ctx.clock ?? systemClock;
  }

  /** The clock credentials expire on. */
  readonly clock: Clock;

  get ready(): boolean {
    return this.last !== undefined && !this.#closed;
  }

  /**
   * Where a poll from `since` starts in the recent publications: {@link LATEST} when it is at the latest
   * position, undefined when the group cannot answer it exactly (another epoch, ahead, further behind
   * than it holds, or not ready).
   */
  start(since: Position | undefined): number | undefined {
    const last = this.last;
    if (last === undefined || this.#closed) return undefined;
    if (since === undefined) return LATEST;
    if (since.epoch !== last.epoch || since.seq > last.seq) return undefined;
    if (since.seq === last.seq) return LATEST;
    this.#expire();
    const oldest = this.#recent[0];
    if (oldest === undefined || oldest.position.seq > since.seq + 1) return undefined;
    return since.seq + 1 - oldest.position.seq;
  }

  /** The recent publications from `start` (a {@link start} that is not {@link LATEST}). */
  recentFrom(start: number): readonly Held[] {
    return this.#recent.slice(start);
  }

  /** Hold `req` here, or answer it now from recent publications; declined when neither can be exact. */
  take(req: ParkRequest): ParkOutcome {
    const { since } = req;
    const start = this.start(since);
    if (start === undefined) return 'declined';
    const last = this.last as Position;
    if (start === LATEST) {
      if (req.hold > 0) {
        this.#park(req, last);
        return 'parked';
      }
      // Not to be held (`timeout=0`): the position, now.
      this.metrics.connectionOpened('poll');
      this.#answerEmpty(req.poller, since ?? last);
      this.metrics.connectionClosed('poll', 'answered');
      return 'answered';
    }
    const seq = (since as Position).seq;
    let body = this.#answers.get(seq);
    const due = answerSlice(this.#recent, start, this.maxMessages, this.maxBytes);
    if (body === undefined) {
      // A new encoding is work a poll at a position no other asked for brings: a new connection's worth.
      req.slot?.charge();
      const end = (due[due.length - 1] as Held).position;
      body = Buffer.from(encodePollResponse(due.map((e) => e.json), [], formatCursorEntry(this.channel, end)));
      this.#keep(seq, body);
    }
    this.metrics.connectionOpened('poll');
    this.metrics.resumed('poll', 'recovered');
    for (const enc of due) this.metrics.delivered(enc.arrivedAt);
    req.poller.answer(body);
    this.metrics.connectionClosed('poll', 'answered');
    return 'answered';
  }

  /** Holds one channel of `joint` here, at `at` (the caller watches its client, and counts it). */
  parkJoint(joint: JointPoll, at: Position, hold: number): void {
    const parked = new Parked(this, joint.poller, at, this.#pending.length, this.#gaps.length, performance.now() + hold, joint);
    joint.entries.push(parked);
    this.#queue(parked, hold);
    this.#parked.push(parked);
    this.#held += 1;
    this.idleSince = Date.now();
  }

  /**
   * This turn's publications here that `parked` (a channel of a joint poll) has not had: none once a
   * gap came this turn after its place (the gap and what follows wait for its next poll).
   */
  unseen(parked: Parked): readonly Held[] {
    if (parked.done || this.#gaps.length > parked.gaps || this.#pending.length <= parked.pending) return NO_HELD;
    return this.#pending.slice(parked.pending);
  }

  /** `parked` (a channel of a joint poll) was answered by another group, or its client went away: let go of it here. */
  leave(parked: Parked): void {
    if (parked.done) return;
    this.#release(parked);
    this.#compact();
  }

  #park(req: ParkRequest, at: Position): void {
    const parked = new Parked(this, req.poller, at, this.#pending.length, this.#gaps.length, performance.now() + req.hold);
    this.#queue(parked, req.hold);
    // As a poll's session closes at its token's expiry, a parked poll is answered then, with nothing
    // more. A token valid for longer than a timer can wait (weeks) outlives every hold (minutes at
    // most): it gets no timer, which would fire at once.
    const { expiresAt } = req.identity;
    const left = expiresAt === undefined ? Infinity : expiresAt - this.clock.now();
    if (left <= MAX_TIMER) parked.expiry = this.clock.setTimeout(() => this.#timeout(parked, 'token_expired'), left);
    this.#parked.push(parked);
    this.#held += 1;
    this.idleSince = Date.now();
    this.metrics.connectionOpened('poll');
    if (req.since !== undefined) this.metrics.resumed('poll', 'recovered');
    req.poller.watch(parked);
  }

  /** `parked`'s client went away before its answer. */
  gone(parked: Parked): void {
    if (parked.done) return;
    this.#release(parked);
    this.metrics.connectionClosed('poll', 'client_gone');
    this.#compact();
  }

  /** The hold ran out (or the credentials expired): nothing new, the same cursor back. */
  #timeout(parked: Parked, reason = 'timeout'): void {
    if (parked.done) return;
    if (parked.joint !== undefined) {
      parked.joint.timeout(reason);
      return;
    }
    this.#release(parked);
    this.#answerEmpty(parked.poller, parked.at);
    this.metrics.connectionClosed('poll', reason);
    // On a quiet channel no publication comes to replace the parked list: its places go here.
    this.#compact();
  }

  /** `parked` is answered, or let go: no longer held. */
  #release(parked: Parked): void {
    parked.done = true;
    this.#held -= 1;
    this.clock.clearTimeout(parked.expiry);
  }

  /** Puts `parked` at the end of the queue of its hold, whose timer runs while it holds any poll. */
  #queue(parked: Parked, hold: number): void {
    let queue = this.#holds.get(hold);
    if (queue === undefined) {
      queue = new HoldQueue(hold);
      this.#holds.set(hold, queue);
    }
    queue.items.push(parked);
    this.#queued += 1;
    queue.timer ??= setTimeout(this.#runOut, hold, queue);
  }

  /** A hold queue's timer: the polls whose hold ran out are answered, and the timer is set for the next one. */
  readonly #runOut = (queue: HoldQueue): void => {
    queue.timer = undefined;
    const now = performance.now();
    // The queue moves on first, and the polls are answered after: answering never meets a queue half moved.
    const due: Parked[] = [];
    for (let next = queue.items[queue.head]; next !== undefined; next = queue.items[queue.head]) {
      if (!next.done && next.deadline > now + TIMER_SLACK) break;
      queue.head += 1;
      this.#queued -= 1;
      if (!next.done) due.push(next);
    }
    const next = queue.items[queue.head];
    if (next === undefined) {
      if (this.#holds.get(queue.hold) === queue) this.#holds.delete(queue.hold);
    } else {
      if (queue.head > 64 && queue.head * 2 >= queue.items.length) {
        queue.items = queue.items.slice(queue.head);
        queue.head = 0;
      }
      queue.timer = setTimeout(this.#runOut, Math.max(1, Math.ceil(next.deadline - now)), queue);
    }
    for (const parked of due) this.#timeout(parked);
  };

  /**
   * Lets go of the places of polls answered before their hold ran out, once they are more than the
   * polls held: the parked list and the hold queues stay within twice the parked polls (and a few), at
   * an amortised constant cost.
   */
  #compact(): void {
    const bound = 2 * this.#held + 64;
    if (this.#parked.length > bound) this.#parked = this.#parked.filter((p) => !p.done);
    if (this.#queued <= bound) return;
    this.#queued = 0;
    for (const queue of this.#holds.values()) {
      queue.items = queue.items.slice(queue.head).filter((p) => !p.done);
      queue.head = 0;
      this.#queued += queue.items.length;
      if (queue.items.length === 0) {
        clearTimeout(queue.timer);
        this.#holds.delete(queue.hold);
      }
    }
  }

  /** Every hold queue goes, with its timer. */
  #clearHolds(): void {
    for (const queue of this.#holds.values()) clearTimeout(queue.timer);
    this.#holds.clear();
    this.#queued = 0;
  }

  /**
   * An answer with no messages and the cursor at `at` (one encoding per position until the next
   * publication). The answers kept are keyed by seq, in the epoch of `last`: a poll of an earlier epoch
   * (parked before a publication of a new one, whose hold ran out in that same turn) gets its own.
   */
  #answerEmpty(poller: Poller, at: Position): void {
    if (at.epoch !== this.last?.epoch) {
      poller.answer(emptyAnswer(formatCursorEntry(this.channel, at)));
      return;
    }
    const key = -2 - at.seq;
    let body = this.#answers.get(key);
    if (body === undefined) {
      body = emptyAnswer(formatCursorEntry(this.channel, at));
      this.#keep(key, body);
    }
    poller.answer(body);
  }

  /** Keeps `body` for the polls that come for `key` until the next publication, if the node's groups have room for it. */
  #keep(key: number, body: Buffer): void {
    const size = body.length + OVERHEAD;
    if (!this.bytes.fits(size)) return;
    this.#answers.set(key, body);
    this.#answerBytes += size;
    this.bytes.used += size;
  }

  #forgetAnswers(): void {
    this.#answers.clear();
    this.bytes.used -= this.#answerBytes;
    this.#answerBytes = 0;
  }

  /** Keeps `held` as the newest recent publication, letting the oldest go for room; none are kept when even it alone has none. */
  #hold(held: Held): void {
    if (this.keep === 0) return;
    const size = heldSize(held);
    if (this.#recent.length >= this.keep) this.#drop(this.#recent.length - this.keep + 1);
    let n = 0;
    let freed = 0;
    while (n < this.#recent.length && !this.bytes.fits(size - freed)) freed += heldSize(this.#recent[n++] as Held);
    this.#drop(n);
    if (!this.bytes.fits(size)) {
      // Not even this one: a poll behind it takes the ordinary path.
      this.#drop(this.#recent.length);
      return;
    }
    this.#recent.push(held);
    this.#recentBytes += size;
    this.bytes.used += size;
  }

  /** Lets go of the `n` oldest recent publications. */
  #drop(n: number): void {
    if (n <= 0) return;
    if (n >= this.#recent.length) {
      this.#recent = [];
      this.bytes.used -= this.#recentBytes;
      this.#recentBytes = 0;
      return;
    }
    let freed = 0;
    for (let i = 0; i < n; i++) freed += heldSize(this.#recent[i] as Held);
    this.#recent.splice(0, n);
    this.#recentBytes -= freed;
    this.bytes.used -= freed;
  }

  /**
   * Lets go of publications older than the history's TTL (with a margin: they arrived here a little
   * after the broker stamped them), so that a catch-up poll gets the gap the ordinary path reports.
   */
  #expire(): void {
    const oldest = performance.now() - this.ttl + EXPIRY_MARGIN;
    let n = 0;
    while (n < this.#recent.length && (this.#recent[n] as Held).arrivedAt < oldest) n++;
    this.#drop(n);
  }

  /** Whether no poll is held here. */
  get idle(): boolean {
    return this.#held === 0;
  }

  get parkedCount(): number {
    return this.#held;
  }

  /** Places in the parked list: the polls held, and those answered or gone that it still lists. */
  get listedCount(): number {
    return this.#parked.length;
  }

  /** Places in the hold queues. */
  get queuedCount(): number {
    return this.#queued;
  }

  subscribed(result: SubscribeResult): void {
    this.last = result.position;
  }

  /** Hot path: one publication of the channel, for every parked poll at once. */
  message(enc: EncodedPublication): void {
    this.generation += 1;
    const p = enc.pub.position;
    const held: Held = { json: enc.json, position: p, arrivedAt: enc.arrivedAt };
    if (this.last === undefined || p.epoch !== this.last.epoch) this.#drop(this.#recent.length);
    this.#forgetAnswers();
    this.#hold(held);
    this.last = p;
    if (this.#held === 0) return;
    this.#pending.push(held);
    this.#flush ??= setImmediate(this.#answerParked);
  }

  gap(gap: Gap): void {
    this.generation += 1;
    this.#drop(this.#recent.length);
    this.last = gap.to;
    this.#forgetAnswers();
    if (this.#held === 0) return;
    if (this.#pending.length > 0) {
      // An answer lists its gaps before its messages: this turn's publications so far go now, in
      // answers of their own (each cursor stops at them, and a poll from there is told of the gap
      // by history); the polls left parked get the gap at the end of the turn.
      if (this.#flush !== undefined) clearImmediate(this.#flush);
      this.#answerParked();
    }
    this.#gaps.push(gap);
    this.#flush ??= setImmediate(this.#answerParked);
  }

  /**
   * The end of the turn: every parked poll is answered with what arrived this turn after its position,
   * the same bytes for all polls at one position (nearly always all of them). A poll that came at the
   * position this turn's publications brought stays parked for the next ones.
   */
  readonly #answerParked = (): void => {
    this.#flush = undefined;
    const pending = this.#pending;
    const gaps = this.#gaps;
    this.#pending = [];
    this.#gaps = [];
    // Polls are parked in order, so those past the same number of this turn's arrivals are adjacent:
    // each run of them shares one encoding.
    let from = -1;
    let gapsFrom = -1;
    let due: Held[] = [];
    let body: Buffer | undefined;
    /** For the joint polls of the run: its cursor entry here, and the answers made, by the cursor the polls brought. */
    let entry: string | undefined;
    let joint: Map<string, JointAnswer> | undefined;
    const parked = this.#parked;
    const kept: Parked[] = [];
    this.#parked = [];
    for (const p of parked) {
      if (p.done) continue;
      if (p.pending !== from || p.gaps !== gapsFrom) {
        from = p.pending;
        gapsFrom = p.gaps;
        due = answerSlice(pending, from, this.maxMessages, this.maxBytes);
        body = this.#encode(due, gapsFrom === 0 ? gaps : gaps.slice(gapsFrom));
        entry = joint = undefined;
      }
      if (body !== undefined && p.joint !== undefined) {
        // One channel of a poll of several: its answer has every channel's cursor, and the news of its
        // other channels this turn. Polls of the same channels at the same positions (nearly always
        // all of them) share it.
        const runGaps = gapsFrom === 0 ? gaps : gaps.slice(gapsFrom);
        entry ??= formatCursorEntry(this.channel, this.#endOf(due, runGaps) as Position);
        joint ??= new Map();
        const key = p.joint.at;
        let answer = joint.get(key);
        if (answer === undefined) {
          answer = p.joint.answer(this, entry, due, runGaps, this.maxMessages, this.maxBytes);
          joint.set(key, answer);
        }
        for (const enc of due) this.metrics.delivered(enc.arrivedAt);
        for (const held of answer.others) this.metrics.delivered(held.arrivedAt);
        p.joint.finish(answer.body, 'answered');
        continue;
      }
      if (body === undefined) {
        // Already at the latest position: held for the next publication.
        p.pending = 0;
        p.gaps = 0;
        kept.push(p);
        continue;
      }
      this.#release(p);
      for (const enc of due) this.metrics.delivered(enc.arrivedAt);
      p.poller.answer(body);
      this.metrics.connectionClosed('poll', 'answered');
    }
    this.idleSince = Date.now();
    // A poll parked while these were answered (none, as polls come in after a turn's I/O) goes after those kept.
    this.#parked = this.#parked.length === 0 ? kept : kept.concat(this.#parked);
    // Usually every poll was answered: the hold queues start again empty.
    if (this.#held === 0) this.#clearHolds();
    else this.#compact();
  };

  /**
   * Where an answer of `due` and `gaps` leaves the channel's cursor, or undefined when both are empty.
   * Past the message limit, the cursor stops at the last message included: the rest is a catch-up poll away.
   */
  #endOf(due: readonly Held[], gaps: readonly Gap[]): Position | undefined {
    const lastDue = due[due.length - 1];
    return lastDue !== undefined ? lastDue.position : gaps[gaps.length - 1]?.to;
  }

  /** One answer of `due` and `gaps`, or undefined when both are empty. */
  #encode(due: readonly Held[], gaps: readonly Gap[]): Buffer | undefined {
    const end = this.#endOf(due, gaps);
    if (end === undefined) return undefined;
    return Buffer.from(encodePollResponse(due.map((e) => e.json), gaps, formatCursorEntry(this.channel, end)));
  }

  /** The subscription ended (its channel failed here, or shutdown): parked polls get their cursor back and come again. */
  close(_name: CloseName, _reason: string): void {
    this.#end();
  }

  #end(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#flush !== undefined) clearImmediate(this.#flush);
    const parked = this.#parked;
    this.#parked = [];
    this.#clearHolds();
    for (const p of parked) {
      if (p.done) continue;
      if (p.joint !== undefined) {
        p.joint.finish(p.joint.emptyAnswer(), 'restart');
        continue;
      }
      this.#release(p);
      p.poller.answer(emptyAnswer(formatCursorEntry(this.channel, p.at)));
      this.metrics.connectionClosed('poll', 'restart');
    }
    this.#drop(this.#recent.length);
    this.#forgetAnswers();
    this.session.detach();
    this.onClosed(this);
  }

  /** Ends the group (idle, or shutdown). */
  stop(): void {
    this.#end();
  }
}
