/**
 * Node-local fan-out: channel to subscribers. The hub subscribes the node to a channel at the
 * broker on the first member and unsubscribes when it is no longer needed. It encodes each
 * publication once ({@link EncodedPublication}) and hands the same object to every member. When the
 * live feed skips a seq it repairs the hole from history before delivering, so members see every seq.
 *
 * A repair read that fails is retried with backoff; publications arriving meanwhile wait in a
 * bounded queue. If history stays unavailable or the queue fills, the hub gives the channel up:
 * every member is failed (its connection closes with "try again later" and the client resumes from
 * its own position) and the node unsubscribes. It never turns a failed read into a gap.
 *
 * When the broker reports that its live feed was interrupted (`reset`), every joined channel is
 * repaired from history before anything live is delivered. A channel whose last member left stays
 * subscribed for a while (`linger`), so a client that comes right back (the next long poll) costs
 * no broker subscribe and unsubscribe; lingering channels are bounded and released by one sweep.
 *
 * Presence joins and leaves (from every node) are relayed to the channel's members as they come,
 * encoded once ({@link EncodedPresence}); they are signals, not publications: no order check, no repair.
 * @module
 */
import type { Channel, Position } from '@tidings/protocol';
import type { Broker, BrokerStatus, PresenceEvent, Publication } from './brokers/broker.js';
import { EncodedPresence, EncodedPublication } from './encoded.js';

/** A member of a channel: receives each publication once, in broker order. */
export interface Subscriber {
  receive(enc: EncodedPublication): void;
  /** A client joined or left the channel. */
  presence(enc: EncodedPresence): void;
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
  /** When a member without subscribers is let go (ms since epoch); undefined while it has subscribers. */
  lingerUntil: number | undefined;
}

/**
 * Whether `pub` comes after a hole that lies past `top`, the channel's top when history was read at
 * `last`: publications made after the read and lost from the live feed (interrupted meanwhile).
 */
function lostAfterRead(last: Position, pub: Publication, top: Position): boolean {
  const p = pub.position;
  return !pub.ephemeral && p.epoch === last.epoch && p.seq > last.seq + 1 && top.epoch === last.epoch && last.seq >= top.seq;
}

/**
 * Where a repair reads history from once `seen` (a live publication, or the channel's top) shows
 * publications after `last`: from `last` in its epoch, or from the start of a new one.
 */
function repairFrom(last: Position, seen: Position): Position {
  return seen.epoch === last.epoch ? last : { epoch: seen.epoch, seq: 0 };
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
  /** How long a channel stays subscribed at the broker after its last member left, in ms (0: not at all). */
  readonly linger?: number;
  /** Most channels lingering at once; past it the longest-lingering one is let go at once. */
  readonly maxLingering?: number;
}

/** About 5 s of retries. */
const RETRY_DELAYS = [100, 200, 400, 800, 1600, 2000];

export class Hub {
  readonly #members = new Map<Channel, Member>();
  /** Channel to the settle-promise of an unsubscribe still in flight, so a quick rejoin waits for it. */
  readonly #leaving = new Map<Channel, Promise<void>>();
  /** Channels without subscribers still subscribed at the broker, longest-lingering first. */
  readonly #lingering = new Set<Channel>();
  readonly #retryDelays: readonly number[];
  readonly #sweep: NodeJS.Timeout | undefined;

  constructor(
    private readonly broker: Broker,
    private readonly opts: HubOptions,
    private readonly onError: HubErrorHandler,
  ) {
    this.#retryDelays = opts.retryDelays ?? RETRY_DELAYS;
    const linger = opts.linger ?? 0;
    if (linger > 0) this.#sweep = setInterval(() => this.#releaseLingering(Date.now()), Math.min(1000, linger)).unref();
  }

  /** Channels with at least one member on this node (lingering ones not counted). */
  get channelCount(): number {
    return this.#members.size - this.#lingering.size;
  }

  /** Members over all channels, channels being repaired, and channels lingering (for introspection and leak checks). */
  stats(): { channels: number; subscribers: number; repairing: number; lingering: number } {
    let subscribers = 0;
    let repairing = 0;
    for (const m of this.#members.values()) {
      subscribers += m.subscribers.size;
      if (m.repairing !== undefined) repairing += 1;
    }
    return { channels: this.channelCount, subscribers, repairing, lingering: this.#lingering.size };
  }

  /**
   * The `n` channels with the most subscribers on this node, most first (for the admin dashboard):
   * one scan of the members when asked, nothing kept or counted per publication.
   */
  busiest(n: number): Array<{ channel: Channel; subscribers: number }> {
    const top: Array<{ channel: Channel; subscribers: number }> = [];
    for (const [channel, m] of this.#members) {
      const subscribers = m.subscribers.size;
      if (subscribers === 0 || (top.length >= n && subscribers <= (top[top.length - 1]?.subscribers ?? 0))) continue;
      let i = top.length;
      while (i > 0 && (top[i - 1]?.subscribers ?? 0) < subscribers) i--;
      top.splice(i, 0, { channel, subscribers });
      if (top.length > n) top.pop();
    }
    return top;
  }

  /**
   * Repairs lost tails: a hole is only visible on the live feed when the next publication arrives,
   * so this compares each joined channel's top position (one batched read) with the last one seen and
   * fills the difference from history. Run it on an interval.
   */
  async checkPositions(): Promise<void> {
    const checked = [...this.#members].filter(([, m]) => m.repairing === undefined && m.last !== undefined && m.subscribers.size > 0);
    if (checked.length === 0) return;
    const tops = await this.broker.tops(checked.map(([channel]) => channel));
    for (const [channel, member] of checked) {
      const top = tops.get(channel);
      const last = member.last;
      if (top === undefined || last === undefined || member.repairing !== undefined || this.#members.get(channel) !== member) continue;
      // Behind in the epoch, or the channel moved on to a new one with publications this node never saw
      // (read from its start; subscribers report the change as an `epoch` gap as they would live).
      if (top.epoch === last.epoch ? top.seq <= last.seq : top.seq === 0) continue;
      member.repairing = [];
      this.#repair(member, channel, repairFrom(last, top), 0);
    }
  }

  /** The broker's status handler: after an interrupted feed, every joined channel is repaired before anything live. */
  readonly onStatus = (status: BrokerStatus): void => {
    if (status !== 'reset') return;
    for (const [channel, member] of [...this.#members]) {
      if (member.subscribers.size === 0) {
        // Nobody to deliver to: let it go rather than repair it.
        this.#drop(channel, member);
        continue;
      }
      const last = member.last;
      if (last === undefined || member.repairing !== undefined) continue;
      member.repairing = [];
      this.#repair(member, channel, last, 0);
    }
  };

  /** Adds `sub` to `channel`; resolves once the node receives the channel's live publications. */
  join(channel: Channel, sub: Subscriber): Promise<void> {
    let member = this.#members.get(channel);
    if (member?.lingerUntil !== undefined) {
      member.lingerUntil = undefined;
      this.#lingering.delete(channel);
    }
    if (member === undefined) {
      const pending = this.#leaving.get(channel);
      const created: Member = {
        subscribers: new Set(),
        ready: Promise.resolve(),
        last: undefined,
        repairing: undefined,
        retry: undefined,
        lingerUntil: undefined,
      };
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

  /** Removes `sub`; when the last one leaves, the channel lingers, then the node unsubscribes. */
  leave(channel: Channel, sub: Subscriber): void {
    const member = this.#members.get(channel);
    if (member === undefined || !member.subscribers.delete(sub) || member.subscribers.size > 0) return;
    const linger = this.opts.linger ?? 0;
    if (linger <= 0 || member.repairing !== undefined) {
      this.#drop(channel, member);
      return;
    }
    member.lingerUntil = Date.now() + linger;
    this.#lingering.add(channel);
    if (this.#lingering.size > (this.opts.maxLingering ?? 10_000)) {
      const oldest = this.#lingering.values().next().value as Channel;
      const m = this.#members.get(oldest);
      if (m !== undefined) this.#drop(oldest, m);
      else this.#lingering.delete(oldest);
    }
  }

  /** Releases every channel and the sweep (the gateway is closing). */
  close(): void {
    clearInterval(this.#sweep);
    for (const [channel, member] of [...this.#members]) this.#drop(channel, member);
  }

  /** The broker's publication handler: every live publication of a joined channel comes through here. */
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
    if (last !== undefined && !pub.ephemeral) {
      const sameEpoch = last.epoch === p.epoch;
      if (sameEpoch && p.seq <= last.seq) return; // duplicate from the feed
      // A hole (in the epoch, or at the start of a new one whose first publications the feed lost):
      // repaired before delivery, unless nobody is listening (a lingering channel just moves on).
      const hole = sameEpoch ? p.seq > last.seq + 1 : p.seq > 1;
      if (hole && member.subscribers.size > 0) {
        member.repairing = [pub];
        this.#repair(member, pub.channel, repairFrom(last, p), 0);
        return;
      }
    }
    this.#fanOut(member, pub);
  };

  /** The broker's presence handler: joins and leaves of a joined channel, from every node. */
  readonly onPresence = (event: PresenceEvent): void => {
    const member = this.#members.get(event.channel);
    if (member === undefined || member.subscribers.size === 0) return;
    const enc = new EncodedPresence(event);
    for (const sub of member.subscribers) sub.presence(enc);
  };

  /** Fans out `pub` unless it is at or before the last position delivered (history and the live feed overlap in a repair). */
  #fanOutNew(member: Member, pub: Publication): void {
    const last = member.last;
    if (last !== undefined && last.epoch === pub.position.epoch && pub.position.seq <= last.seq) return;
    this.#fanOut(member, pub);
  }

  #fanOut(member: Member, pub: Publication): void {
    member.last = pub.position;
    if (member.subscribers.size === 0) return;
    const enc = new EncodedPublication(pub, performance.now());
    for (const sub of member.subscribers) sub.receive(enc);
  }

  #releaseLingering(now: number): void {
    for (const channel of this.#lingering) {
      const member = this.#members.get(channel);
      if (member === undefined) {
        this.#lingering.delete(channel);
        continue;
      }
      // Longest-lingering first: the first one still within its time ends the sweep.
      if ((member.lingerUntil ?? 0) > now) return;
      this.#drop(channel, member);
    }
  }

  #drop(channel: Channel, member: Member): void {
    if (this.#members.get(channel) === member) this.#members.delete(channel);
    this.#lingering.delete(channel);
    member.lingerUntil = undefined;
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
    this.broker
      .history(channel, from, this.opts.repairLimit)
      .then(
        (page) => {
          if (this.#members.get(channel) !== member || member.repairing === undefined) return;
          // The channel went on in another epoch (the broker lost its data meanwhile): what the read
          // from `from` could not have is read from that epoch's start, before anything queued.
          if (page.top.epoch !== from.epoch) {
            this.#repair(member, channel, repairFrom(from, page.top), 0);
            return;
          }
          const queued = member.repairing;
          member.repairing = undefined;
          // Whatever history could not fill stays a hole; subscriptions report it as a gap.
          for (const pub of page.publications) this.#fanOutNew(member, pub);
          for (let i = 0; i < queued.length; i++) {
            const pub = queued[i] as Publication;
            const last = member.last;
            // Lost after the read: history may well have them. Read again from here rather than report
            // them lost; the next read sees them, or its top is past them and the hole is a real one.
            if (last !== undefined && lostAfterRead(last, pub, page.top)) {
              member.repairing = queued.slice(i);
              this.#repair(member, channel, last, 0);
              return;
            }
            this.#fanOutNew(member, pub);
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
