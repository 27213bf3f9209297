/**
 * Node-local fan-out: channel to subscribers. The hub subscribes the node to a channel at the
 * broker on the first member and unsubscribes on the last. It encodes each publication once
 * ({@link EncodedPublication}) and hands the same object to every member. When the live feed
 * skips a seq it repairs the hole from history before delivering, so members see every seq.
 * @module
 */
import type { Channel, Position } from '@tidings/protocol';
import type { Broker, Publication } from './brokers/broker.js';
import { EncodedPublication } from './encoded.js';

/** A member of a channel: receives each publication once, in broker order. */
export interface Subscriber {
  receive(enc: EncodedPublication): void;
}

interface Member {
  readonly subscribers: Set<Subscriber>;
  /** Settles when the broker subscription is in place and the baseline position is known. */
  ready: Promise<void>;
  /** Last position seen on the live feed. */
  last: Position | undefined;
  /** Publications that arrived while a hole is being repaired, in arrival order. */
  repairing: Publication[] | undefined;
}

/** Reports failures the hub cannot hand back to a caller (repair reads, broker unsubscribes). */
export type HubErrorHandler = (err: unknown, channel: Channel) => void;

export class Hub {
  readonly #members = new Map<Channel, Member>();
  /** Channel to the settle-promise of an unsubscribe still in flight, so a quick rejoin waits for it. */
  readonly #leaving = new Map<Channel, Promise<void>>();

  constructor(
    private readonly broker: Broker,
    private readonly repairLimit: number,
    private readonly onError: HubErrorHandler,
  ) {}

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
      member.repairing = [];
      this.#repair(member, channel, last);
    }
  }

  /** Channels with at least one member on this node. */
  get channelCount(): number {
    return this.#members.size;
  }

  /** Adds `sub` to `channel`; resolves once the node receives the channel's live publications. */
  join(channel: Channel, sub: Subscriber): Promise<void> {
    let member = this.#members.get(channel);
    if (member === undefined) {
      const pending = this.#leaving.get(channel);
      const created: Member = { subscribers: new Set(), ready: Promise.resolve(), last: undefined, repairing: undefined };
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
        if (this.#members.get(channel) === created) this.#members.delete(channel);
      });
    }
    member.subscribers.add(sub);
    return member.ready;
  }

  /** Removes `sub`; the last one out unsubscribes the node. */
  leave(channel: Channel, sub: Subscriber): void {
    const member = this.#members.get(channel);
    if (member === undefined || !member.subscribers.delete(sub) || member.subscribers.size > 0) return;
    this.#members.delete(channel);
    const done = member.ready
      .then(() => this.broker.unsubscribe(channel))
      .catch((err: unknown) => this.onError(err, channel))
      .finally(() => {
        if (this.#leaving.get(channel) === done) this.#leaving.delete(channel);
      });
    this.#leaving.set(channel, done);
  }

  /** The broker's handler: every live publication of a joined channel comes through here. */
  readonly onPublication = (pub: Publication): void => {
    const member = this.#members.get(pub.channel);
    if (member === undefined) return;
    if (member.repairing !== undefined) {
      member.repairing.push(pub);
      return;
    }
    const last = member.last;
    const p = pub.position;
    if (last !== undefined && last.epoch === p.epoch && !pub.ephemeral) {
      if (p.seq <= last.seq) return; // duplicate from the feed
      if (p.seq > last.seq + 1) {
        member.repairing = [pub];
        this.#repair(member, pub.channel, last);
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

  #repair(member: Member, channel: Channel, from: Position): void {
    this.broker
      .history(channel, from, this.repairLimit)
      .then(
        (page) => page.publications,
        (err: unknown) => {
          this.onError(err, channel);
          return [];
        },
      )
      .then((recovered) => {
        const queued = member.repairing ?? [];
        member.repairing = undefined;
        // Whatever history could not fill stays a hole; subscriptions report it as a gap.
        for (const pub of [...recovered, ...queued]) {
          const last = member.last;
          if (last !== undefined && last.epoch === pub.position.epoch && pub.position.seq <= last.seq) continue;
          this.#fanOut(member, pub);
        }
      })
      .catch((err: unknown) => this.onError(err, channel));
  }
}
