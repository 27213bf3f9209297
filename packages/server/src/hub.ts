/**
 * Node-local fan-out: channel to subscribers. The hub subscribes the node to a channel at the
 * broker on the first member and unsubscribes on the last. It encodes each publication once
 * ({@link EncodedPublication}) and hands the same object to every member. When the live feed
 * skips a seq it repairs the hole from history before delivering, so members see every seq.
 *
 * A repair read that fails is retried with backoff; publications arriving meanwhile wait in a
 * bounded queue. If history stays unavailable or the queue fills, the hub gives the channel up:
 * every member is failed (its connection closes with "try again later" and the client resumes from
 * its own position) and the node unsubscribes. It never turns a failed read into a gap.
 * @module
 */
import type { Channel, Position } from '@tidings/protocol';
import type { Broker, Publication } from './brokers/broker.js';
import { EncodedPublication } from './encoded.js';

/** A member of a channel: receives each publication once, in broker order. */
export interface Subscriber {
  receive(enc: EncodedPublication): void;
  /** The hub can no longer deliver this channel in order: the member must resume elsewhere or later. */
  fail(reason: string): void;
}

interface Member {
  readonly subscribers: Set<Subscriber>;
  /** Settles when the broker subscription is in place and the baseline position is known. */
  ready: Promise<void>;
  /** Last position seen on the live feed. */
  last: Position | undefined;
  /** Publications that arrived while a hole is being repaired, in arrival order. */
  repairing: Publication[] | undefined;
  /** The pending retry of a failed repair read. */
  retry: NodeJS.Timeout | undefined;
}

/** Reports failures the hub cannot hand back to a caller (repair reads, broker unsubscribes). */
export type HubErrorHandler = (err: unknown, channel: Channel) => void;

export interface HubOptions {
  /** Most publications read per repair (at least the largest history size). */
  readonly repairLimit: number;
  /** Most live publications held while a repair is in progress. */
  readonly maxRepairQueue: number;
  /** Delays before each retry of a failed repair read, in ms; when they run out, the channel is given up. */
  readonly retryDelays?: readonly number[];
}

/** About 5 s of retries. */
const RETRY_DELAYS = [100, 200, 400, 800, 1600, 2000];

export class Hub {
  readonly #members = new Map<Channel, Member>();
  /** Channel to the settle-promise of an unsubscribe still in flight, so a quick rejoin waits for it. */
  readonly #leaving = new Map<Channel, Promise<void>>();
  readonly #retryDelays: readonly number[];

  constructor(
    private readonly broker: Broker,
    private readonly opts: HubOptions,
    private readonly onError: HubErrorHandler,
  ) {
    this.#retryDelays = opts.retryDelays ?? RETRY_DELAYS;
  }

  /** Channels with at least one member on this node. */
  get channelCount(): number {
    return this.#members.size;
  }

  /** Members over all channels, and channels being repaired (for introspection and leak checks). */
  stats(): { channels: number; subscribers: number; repairing: number } {
    let subscribers = 0;
    let repairing = 0;
    for (const m of this.#members.values()) {
      subscribers += m.subscribers.size;
      if (m.repairing !== undefined) repairing += 1;
    }
    return { channels: this.#members.size, subscribers, repairing };
  }

  /**
   * Repairs a lost tail: a hole is only visible on the live feed when the next publication arrives,
   * so this compares each joined channel's top position with the last one seen and fills the
   * difference from history. Run it on an interval; channels are checked one at a time.
   */
  async checkPositions(): Promise<void> {
    for (const [channel, member] of [...this.#members]) {
      const last = member.last;
      if (member.repairing !== undefined || last === undefined || this.#members.get(channel) !== member) continue;
      let top: Position;
      try {
        top = (await this.broker.history(channel, undefined, 0)).top;
      } catch (err) {
        this.onError(err, channel);
        continue;
      }
      if (member.repairing !== undefined || member.last !== last || top.epoch !== last.epoch || top.seq <= last.seq) continue;
      if (this.#members.get(channel) !== member) continue;
      member.repairing = [];
      this.#repair(member, channel, last, 0);
    }
  }

  /** Adds `sub` to `channel`; resolves once the node receives the channel's live publications. */
  join(channel: Channel, sub: Subscriber): Promise<void> {
    let member = this.#members.get(channel);
    if (member === undefined) {
      const pending = this.#leaving.get(channel);
      const created: Member = { subscribers: new Set(), ready: Promise.resolve(), last: undefined, repairing: undefined, retry: undefined };
      // Once subscribed, the top position is the baseline: a hole after it is visible even when the
      // very first live publication is the one lost.
      created.ready = (pending ?? Promise.resolve())
        .then(() => this.broker.subscribe(channel))
        .then(() => this.broker.history(channel, undefined, 0))
        .then((page) => {
          created.last ??= page.top;
        });
      member = created;
      this.#members.set(channel, member);
      const { ready } = created;
      ready.catch(() => {
        // A failed broker subscribe drops the member so the next join retries.
        if (this.#members.get(channel) === created) this.#drop(channel, created);
      });
    }
    member.subscribers.add(sub);
    return member.ready;
  }

  /** Removes `sub`; the last one out unsubscribes the node. */
  leave(channel: Channel, sub: Subscriber): void {
    const member = this.#members.get(channel);
    if (member === undefined || !member.subscribers.delete(sub) || member.subscribers.size > 0) return;
    this.#drop(channel, member);
  }

  /** Releases every channel (the gateway is closing). */
  close(): void {
    for (const [channel, member] of [...this.#members]) this.#drop(channel, member);
  }

  /** The broker's handler: every live publication of a joined channel comes through here. */
  readonly onPublication = (pub: Publication): void => {
    const member = this.#members.get(pub.channel);
    if (member === undefined) return;
    if (member.repairing !== undefined) {
      if (member.repairing.length >= this.opts.maxRepairQueue) {
        this.#giveUp(pub.channel, member, `more than ${this.opts.maxRepairQueue} publications arrived while repairing ${pub.channel}`);
        return;
      }
      member.repairing.push(pub);
      return;
    }
    const last = member.last;
    const p = pub.position;
    if (last !== undefined && last.epoch === p.epoch && !pub.ephemeral) {
      if (p.seq <= last.seq) return; // duplicate from the feed
      if (p.seq > last.seq + 1) {
        member.repairing = [pub];
        this.#repair(member, pub.channel, last, 0);
        return;
      }
    }
    this.#fanOut(member, pub);
  };

  #fanOut(member: Member, pub: Publication): void {
    member.last = pub.position;
    const enc = new EncodedPublication(pub);
    for (const sub of member.subscribers) sub.receive(enc);
  }

  #drop(channel: Channel, member: Member): void {
    if (this.#members.get(channel) === member) this.#members.delete(channel);
    clearTimeout(member.retry);
    member.retry = undefined;
    member.repairing = undefined;
    const done = member.ready
      .then(() => this.broker.unsubscribe(channel))
      .catch((err: unknown) => this.onError(err, channel))
      .finally(() => {
        if (this.#leaving.get(channel) === done) this.#leaving.delete(channel);
      });
    this.#leaving.set(channel, done);
  }

  /** The channel cannot be delivered in order here: fail every member and let go of it. */
  #giveUp(channel: Channel, member: Member, reason: string): void {
    if (this.#members.get(channel) !== member) return;
    const subscribers = [...member.subscribers];
    member.subscribers.clear();
    this.#drop(channel, member);
    for (const sub of subscribers) sub.fail(`${reason}; reconnect and resume`);
  }

  #repair(member: Member, channel: Channel, from: Position, attempt: number): void {
    this.broker.history(channel, from, this.opts.repairLimit).then(
      (page) => {
        if (this.#members.get(channel) !== member || member.repairing === undefined) return;
        const queued = member.repairing;
        member.repairing = undefined;
        // Whatever history could not fill stays a hole; subscriptions report it as a gap.
        for (const pub of [...page.publications, ...queued]) {
          const last = member.last;
          if (last !== undefined && last.epoch === pub.position.epoch && pub.position.seq <= last.seq) continue;
          this.#fanOut(member, pub);
        }
      },
      (err: unknown) => {
        if (this.#members.get(channel) !== member || member.repairing === undefined) return;
        this.onError(err, channel);
        const delay = this.#retryDelays[attempt];
        if (delay === undefined) {
          this.#giveUp(channel, member, `history of ${channel} is unavailable`);
          return;
        }
        member.retry = setTimeout(() => {
          member.retry = undefined;
          this.#repair(member, channel, from, attempt + 1);
        }, delay);
        member.retry.unref();
      },
    )
      .catch((err: unknown) => this.onError(err, channel));
  }
}
