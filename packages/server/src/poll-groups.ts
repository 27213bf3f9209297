/**
 * Long polling at scale. A long poll is one request per message batch, so doing a session's work for
 * each (a hub join, a broker subscribe, a history read, a leave) costs more than the delivery. Instead
 * this node keeps one internal subscription per polled channel, a **poll group** (`poll-group.ts`),
 * and a poll whose channels all have a group that can answer it exactly is answered from them:
 * parked, or answered at once from their recent publications. Anything else (another epoch, further
 * behind than a group holds, ephemeral namespaces, hooks to ask, a channel without a ready group) is
 * declined and takes the ordinary path, which also starts the groups of its channels for the next poll.
 *
 * A group without polls for `channelLinger` is closed; there are at most {@link MAX_GROUPS}, and all of
 * them together hold at most `maxPollGroupBytes` of recent publications and answers: past it a group
 * keeps fewer, and a poll further behind takes the ordinary path.
 * @module
 */
import { encodePollResponse, formatCursorEntry, type Channel, type Position } from '@tidings/protocol';
import type { Authenticator, Identity } from './auth.js';
import { MAX_TIMER, systemClock } from './clock.js';
import type { GatewayOptions } from './options.js';
import { AnswerMessages, emptyAnswer, JointPoll, LATEST, PollBytes, PollGroup, RECENT } from './poll-group.js';
import { namespaceOf } from './publisher.js';
import type { SessionContext } from './session.js';
import { type JointParkRequest, type ParkOutcome, type ParkRequest } from './sink.js';

/** Polled channels with a group at once, per node. */
export const MAX_GROUPS = 100_000;
/** How often idle groups are looked for, in ms. */
const SWEEP = 1000;
/** Catch-up answers of polls of several channels kept at once, per node. */
const MAX_CAUGHT = 1024;

/** A catch-up answer of a poll of several channels: good while its groups are the ones it was made from, unchanged. */
interface CaughtUp {
  readonly body: Buffer;
  readonly groups: readonly PollGroup[];
  readonly generations: readonly number[];
  /** When its messages arrived, for the delivery metric of every poll it answers. */
  readonly arrivals: readonly number[];
  /** What it counts against `maxPollGroupBytes` while kept. */
  size?: number;
}

/** This node's poll groups: the fast path of `GET /poll`. */
export class PollGroups {
  readonly #groups = new Map<Channel, PollGroup>();
  readonly #bytes: PollBytes;
  /** Catch-up answers of polls of several channels, by the cursor they answer. */
  readonly #caught = new Map<string, CaughtUp>();
  /** Polls of several channels held, and their places in the groups (one per channel). */
  readonly #joints = { polls: 0, places: 0 };
  readonly #jointDone = (joint: JointPoll): void => {
    this.#joints.polls -= 1;
    this.#joints.places -= joint.entries.length;
  };
  readonly #sweep: NodeJS.Timeout;
  #closed = false;

  constructor(
    private readonly ctx: SessionContext,
    private readonly auth: Authenticator,
    private readonly options: GatewayOptions,
    private readonly onError: (err: unknown, channel: Channel) => void,
  ) {
    this.#bytes = new PollBytes(options.maxPollGroupBytes);
    this.#sweep = setInterval(() => this.#release(), SWEEP).unref();
  }

  /**
   * Groups, the polls parked in them and the places those take (a poll of several channels takes one
   * in each one's group), the places in their parked lists and hold queues (those of polls answered or
   * gone included, until they are let go), and the bytes they hold.
   */
  stats(): { groups: number; parked: number; places: number; listed: number; queued: number; bytes: number } {
    let parked = 0;
    let listed = 0;
    let queued = 0;
    for (const g of this.#groups.values()) {
      parked += g.parkedCount;
      listed += g.listedCount;
      queued += g.queuedCount;
    }
    const { polls, places } = this.#joints;
    return { groups: this.#groups.size, parked: parked - places + polls, places: parked, listed, queued, bytes: this.#bytes.used };
  }

  /**
   * Takes a poll for one channel: parked or answered by the channel's group, or declined (the
   * caller takes the ordinary path, and reports it {@link served} when it was answered).
   */
  park(req: ParkRequest): ParkOutcome {
    const group = this.#groupFor(req.channel, req.identity);
    return group === undefined ? 'declined' : group.take(req);
  }

  /**
   * Takes a poll for several channels when every one has a group that can answer it exactly:
   * answered at once when any of them is behind (from what the groups hold, within the answer's
   * limits; shared with every poll of the same cursor until one of its channels has news, and a new
   * one costs the poll its token of the connect rate), else held in every group until the first has
   * news for it. Declined otherwise (the ordinary path).
   */
  parkJoint(req: JointParkRequest): ParkOutcome {
    const { channels, cursor, identity } = req;
    // More channels than a connection may subscribe to: the ordinary path refuses it, as it refuses the first.
    if (channels.length > this.options.maxSubscriptions) return 'declined';
    const groups: PollGroup[] = [];
    const starts: number[] = [];
    let behind = false;
    for (const channel of channels) {
      const group = this.#groupFor(channel, identity);
      const start = group?.start(cursor.get(channel));
      if (group === undefined || start === undefined) return 'declined';
      groups.push(group);
      starts.push(start);
      if (start !== LATEST) behind = true;
    }
    const { metrics } = this.ctx;
    const at = groups.map((g, i) => cursor.get(channels[i] as Channel) ?? (g.last as Position));
    const brought = groups.map((g, i) => formatCursorEntry(g.channel, at[i] as Position)).join(',');
    if (behind) {
      // Answers already made for these channels at these positions, while their groups are unchanged,
      // are shared; a new one is work a poll brings: a new connection's worth.
      let answer = this.#caught.get(brought);
      if (answer !== undefined && answer.groups.some((g, i) => g !== groups[i] || g.generation !== answer?.generations[i])) {
        this.#forget(brought, answer);
        answer = undefined;
      }
      if (answer === undefined) {
        req.slot?.charge();
        answer = this.#catchUp(groups, starts, at);
        this.#keep(brought, answer);
      }
      metrics.connectionOpened('poll');
      metrics.resumed('poll', 'recovered');
      for (const arrivedAt of answer.arrivals) metrics.delivered(arrivedAt);
      req.poller.answer(answer.body);
      metrics.connectionClosed('poll', 'answered');
      return 'answered';
    }
    if (req.hold === 0) {
      metrics.connectionOpened('poll');
      req.poller.answer(emptyAnswer(brought));
      metrics.connectionClosed('poll', 'answered');
      return 'answered';
    }
    const clock = this.ctx.clock ?? systemClock;
    const joint = new JointPoll(req.poller, metrics, clock, this.#jointDone, brought);
    groups.forEach((g, i) => g.parkJoint(joint, at[i] as Position, req.hold));
    this.#joints.polls += 1;
    this.#joints.places += groups.length;
    const { expiresAt } = identity;
    const left = expiresAt === undefined ? Infinity : expiresAt - clock.now();
    if (left <= MAX_TIMER) joint.expiry = clock.setTimeout(() => joint.timeout('token_expired'), left);
    metrics.connectionOpened('poll');
    if (cursor.size > 0) metrics.resumed('poll', 'recovered');
    req.poller.watch(joint);
    return 'parked';
  }

  /**
   * The answer of a poll of several channels, some behind: what each group holds after the poll's
   * position, channel by channel, within `maxPollMessages` and about `maxBufferedBytes` (at least one
   * message); each channel's cursor stops at the last of its messages included.
   */
  #catchUp(groups: readonly PollGroup[], starts: readonly number[], at: readonly Position[]): CaughtUp {
    const messages = new AnswerMessages(this.options.maxPollMessages, this.options.maxBufferedBytes);
    const arrivals: number[] = [];
    const entries: string[] = [];
    groups.forEach((group, i) => {
      let end = at[i] as Position;
      const start = starts[i] as number;
      if (start !== LATEST) {
        for (const held of group.recentFrom(start)) {
          if (!messages.take(held)) break;
          end = held.position;
          arrivals.push(held.arrivedAt);
        }
      }
      entries.push(formatCursorEntry(group.channel, end));
    });
    const body = Buffer.from(encodePollResponse(messages.json, [], entries.join(',')));
    return { body, groups, generations: groups.map((g) => g.generation), arrivals };
  }

  /**
   * Keeps a catch-up answer for the polls that come with the same cursor while its groups are
   * unchanged: at most {@link MAX_CAUGHT} of them, within the node's `maxPollGroupBytes` (when either
   * is reached, the kept ones go first), until the next sweep.
   */
  #keep(key: string, answer: CaughtUp): void {
    const size = answer.body.length + 128 * (answer.groups.length + 1);
    if (this.#caught.size >= MAX_CAUGHT || !this.#bytes.fits(size)) this.#forgetCaught();
    if (!this.#bytes.fits(size)) return;
    this.#caught.set(key, answer);
    this.#bytes.used += size;
    answer.size = size;
  }

  #forget(key: string, answer: CaughtUp): void {
    this.#caught.delete(key);
    this.#bytes.used -= answer.size ?? 0;
  }

  #forgetCaught(): void {
    for (const [key, answer] of this.#caught) this.#forget(key, answer);
  }

  /**
   * The group of `channel` when it may take a poll of `identity`: the decisions the ordinary path
   * makes, with its refusals (permissions, hooks, ephemeral channels, expired credentials), are left to it.
   */
  #groupFor(channel: Channel, identity: Identity): PollGroup | undefined {
    if (this.#closed) return undefined;
    let ns;
    try {
      ns = namespaceOf(this.options, channel);
    } catch {
      return undefined;
    }
    if (ns.ephemeral || this.ctx.authorize?.hooks?.subscribe !== undefined) return undefined;
    const group = this.#groups.get(channel);
    if (group === undefined) return undefined;
    if (identity.server !== true && !this.auth.canSubscribe(identity, channel)) return undefined;
    if (identity.expiresAt !== undefined && identity.expiresAt <= (this.ctx.clock ?? systemClock).now()) return undefined;
    return group;
  }

  /**
   * A poll for `channel` (alone or with others) was taken on the ordinary path (so its client may
   * read it): start the channel's group for the polls that follow. A refused poll starts nothing.
   */
  served(channel: Channel): void {
    if (this.#closed || this.#groups.has(channel) || this.#groups.size >= MAX_GROUPS) return;
    let ns;
    try {
      ns = namespaceOf(this.options, channel);
    } catch {
      return;
    }
    if (ns.ephemeral || this.ctx.authorize?.hooks?.subscribe !== undefined) return;
    const keep = Math.min(RECENT, ns.historySize);
    const group = new PollGroup(channel, this.ctx, this.ctx.metrics, this.options.maxPollMessages, this.options.maxBufferedBytes, keep, ns.historyTtl * 1000, this.#bytes, (g) => {
      if (this.#groups.get(channel) === g) this.#groups.delete(channel);
    });
    this.#groups.set(channel, group);
    group.session.subscribe(channel, undefined).catch((err: unknown) => {
      group.stop();
      this.onError(err, channel);
    });
  }

  /** Closes groups that held no poll for `channelLinger`. */
  #release(): void {
    // Kept catch-up answers last until the next sweep at most: most are out of date long before.
    this.#forgetCaught();
    const before = Date.now() - Math.max(this.options.channelLinger, SWEEP);
    for (const group of [...this.#groups.values()]) if (group.idle && group.idleSince < before) group.stop();
  }

  /** Answers every parked poll (they come back, elsewhere when this node drains) and ends every group. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#forgetCaught();
    for (const group of [...this.#groups.values()]) group.stop();
  }
}
