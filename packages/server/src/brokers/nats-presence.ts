/**
 * Presence for the NATS broker (`nats.ts`), across every node sharing the server.
 *
 * - **Entries**: one message per client and channel in the presence stream (`p_P`, one message per
 *   subject), subject `p.p.<node>.<ns>.<name>.<client>`, holding the client's user, info, node and
 *   expiry. An add publishes it with `Nats-Expected-Last-Subject-Sequence: 0`, so only an entry that
 *   did not exist announces a join; a touch republishes it expecting the sequence this node last
 *   wrote, so an entry swept meanwhile (by another node, or by this node's own sweep after a stall)
 *   is not resurrected silently: the touch reports it gone and the node adds it again, which
 *   announces its join; a remove purges the subject, and announces the leave only when it purged
 *   something.
 * - **Events**: joins and leaves go out on the channel's live subject (`p.l.<ns>.<name>`, header
 *   `Tidings-Presence`), which every node subscribed to the channel already receives.
 * - **Expiry**: expiries are times on the server's clock (each node's clock plus the offset the
 *   broker measured), so nodes whose clocks differ agree on every one: a node whose clock is ahead
 *   neither sweeps nor leaves out of its listing the live entries of another, and a dead node's
 *   entries do not outlive their ttl because its clock was ahead. Each node sweeps its own entries
 *   (it knows their expiry) every `sweep` ms. A node that died cannot: every node keeps a lease
 *   (`p.n.<node>`, stream `p_N`) with the latest expiry of its entries, and every node's sweep lists
 *   the leases; past a lease's expiry, the sweeper reads that
 *   node's entries (at most {@link SWEEP_LIMIT} per run) and deletes each expired one by its stream
 *   sequence (so an entry refreshed meanwhile, or already deleted by another sweeper, is left alone
 *   and its leave announced once), then deletes the lease when nothing is left. A dead node's entries
 *   thus leave within their ttl plus about one sweep period.
 * @module
 */
import { headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { JetStreamApiCodes, JetStreamApiError, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import type { Channel } from '@tidings/protocol';
import type { PresenceEntry, PresenceEvent, PresenceKey } from './broker.js';
import { encodeToken, H_PRESENCE, type Names, type PresenceRecord } from './nats-codec.js';
import { readAll } from './nats-read.js';

/** Most entries of one dead node examined per sweep run. */
export const SWEEP_LIMIT = 1000;

/** What presence needs of the broker. */
export interface PresenceDeps {
  readonly names: Names;
  /** This broker's node id (random per broker instance). */
  readonly node: string;
  readonly timeout: number;
  /**
   * The server's clock, in ms (this node's clock plus its measured offset): every expiry is written
   * and compared on it, so nodes whose clocks differ agree on each one.
   */
  now(): number;
  conn(): { readonly nc: NatsConnection; readonly js: JetStreamClient; readonly jsm: JetStreamManager };
}

interface Held {
  readonly channel: Channel;
  readonly entry: PresenceEntry;
  expires: number;
  /** Stream sequence of the entry's latest message. */
  seq: number;
}

const TD = new TextDecoder();

const isWrongLast = (err: unknown): boolean => err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;

function record(entry: PresenceEntry, expires?: number): PresenceRecord {
  return expires === undefined
    ? { c: entry.client, u: entry.user, i: entry.info ?? null, n: entry.node }
    : { c: entry.client, u: entry.user, i: entry.info ?? null, n: entry.node, x: expires };
}

function entryOf(r: PresenceRecord): PresenceEntry {
  return { client: r.c, user: r.u, info: r.i ?? undefined, node: r.n };
}

function parseRecord(data: Uint8Array): PresenceRecord | undefined {
  try {
    const r = JSON.parse(TD.decode(data)) as Partial<PresenceRecord>;
    if (typeof r.c !== 'string' || typeof r.u !== 'string' || typeof r.n !== 'string') return undefined;
    return { c: r.c, u: r.u, i: typeof r.i === 'string' ? r.i : null, n: r.n, x: typeof r.x === 'number' ? r.x : 0 };
  } catch {
    return undefined;
  }
}

/** The presence store of one broker instance. */
export class NatsPresence {
  /** This node's own entries, by subject. */
  readonly #mine = new Map<string, Held>();
  /** Latest expiry written to this node's lease. */
  #leaseExpires = 0;
  #leaseWrite: Promise<void> = Promise.resolve();

  constructor(private readonly deps: PresenceDeps) {}

  /** Parses a presence event from the live subject; undefined when it is not one. */
  static event(kind: string, channel: Channel, data: Uint8Array): PresenceEvent | undefined {
    if (kind !== 'join' && kind !== 'leave') return undefined;
    const r = parseRecord(data);
    return r === undefined ? undefined : { kind, channel, entry: entryOf(r) };
  }

  async add(channel: Channel, entry: PresenceEntry, ttl: number): Promise<void> {
    const { js } = this.deps.conn();
    const subject = this.deps.names.presence(this.deps.node, channel, entry.client);
    const expires = this.deps.now() + ttl;
    const body = JSON.stringify(record(entry, expires));
    let fresh = true;
    let seq: number;
    try {
      seq = (await js.publish(subject, body, { expect: { lastSubjectSequence: 0 } })).seq;
    } catch (err) {
      if (!isWrongLast(err)) throw err;
      fresh = false;
      seq = (await js.publish(subject, body)).seq;
    }
    this.#mine.set(subject, { channel, entry, expires, seq });
    await this.#lease(expires);
    if (fresh) this.#announce('join', channel, entry);
  }

  async remove(channel: Channel, entry: PresenceEntry): Promise<void> {
    const subject = this.deps.names.presence(this.deps.node, channel, entry.client);
    this.#mine.delete(subject);
    await this.#purge(subject, channel, entry);
  }

  /** Extends this node's entries; resolves with the items it does not hold at the server (see `PresenceStore.presenceTouch`). */
  async touch(items: readonly PresenceKey[], ttl: number): Promise<PresenceKey[]> {
    const { js } = this.deps.conn();
    const expires = this.deps.now() + ttl;
    const gone: PresenceKey[] = [];
    await Promise.all(
      items.map(async (item) => {
        const subject = this.deps.names.presence(this.deps.node, item.channel, item.client);
        const held = this.#mine.get(subject);
        if (held === undefined) {
          // Never added, or this node's own sweep found it expired (the node stalled past its ttl).
          gone.push(item);
          return;
        }
        held.expires = expires;
        const body = JSON.stringify(record(held.entry, expires));
        try {
          held.seq = (await js.publish(subject, body, { expect: { lastSubjectSequence: held.seq } })).seq;
        } catch (err) {
          if (!isWrongLast(err)) throw err;
          // Swept meanwhile by another node (this node looked dead): not resurrected silently, its node adds it again.
          if (this.#mine.get(subject) === held) this.#mine.delete(subject);
          gone.push(item);
        }
      }),
    );
    await this.#lease(expires);
    return gone;
  }

  async list(channel: Channel): Promise<PresenceEntry[]> {
    const { nc, jsm } = this.deps.conn();
    const now = this.deps.now();
    const held = await readAll(nc, jsm, this.deps.names.presenceStream, this.deps.names.presenceOfChannel(channel), Number.MAX_SAFE_INTEGER, this.deps.timeout);
    const out: PresenceEntry[] = [];
    for (const m of held) {
      const r = parseRecord(m.data);
      if (r !== undefined && (r.x ?? 0) > now) out.push(entryOf(r));
    }
    return out;
  }

  /** One sweep: this node's expired entries, then the entries of nodes whose lease expired. */
  async sweep(): Promise<void> {
    const now = this.deps.now();
    for (const [subject, held] of [...this.#mine]) {
      if (held.expires > now) continue;
      this.#mine.delete(subject);
      await this.#purge(subject, held.channel, held.entry);
    }
    const { jsm } = this.deps.conn();
    const { names } = this.deps;
    const own = encodeToken(this.deps.node);
    for (let seq = 1; ; ) {
      const lease = await jsm.direct.getMessage(names.leaseStream, { seq, next_by_subj: names.leases });
      if (lease === null) break;
      seq = lease.seq + 1;
      const nodeTok = lease.subject.slice(lease.subject.lastIndexOf('.') + 1);
      if (nodeTok === own) continue;
      let expires = 0;
      try {
        expires = Number(lease.json<{ x?: unknown }>().x);
      } catch {
        // Not a lease: swept like an expired one.
      }
      if (Number.isFinite(expires) && expires > now) continue;
      await this.#sweepNode(nodeTok, lease.seq, now);
    }
  }

  /** Forgets this node's entries locally (the broker is closing; the entries expire by themselves). */
  clear(): void {
    this.#mine.clear();
    this.#leaseExpires = 0;
  }

  async #sweepNode(nodeTok: string, leaseSeq: number, now: number): Promise<void> {
    const { nc, jsm } = this.deps.conn();
    const { names } = this.deps;
    const entries = await readAll(nc, jsm, names.presenceStream, names.presenceOfNode(nodeTok), SWEEP_LIMIT, this.deps.timeout);
    let left = entries.length >= SWEEP_LIMIT ? 1 : 0;
    for (const m of entries) {
      const r = parseRecord(m.data);
      const channel = names.channelOfSubject(m.subject);
      if (r === undefined || channel === undefined) {
        await jsm.streams.deleteMessage(names.presenceStream, m.seq, false).catch(() => false);
        continue;
      }
      if ((r.x ?? 0) > now) {
        left += 1;
        continue;
      }
      // Deleting by sequence: an entry refreshed meanwhile has another one, and of two sweepers only one succeeds.
      const deleted = await jsm.streams.deleteMessage(names.presenceStream, m.seq, false).catch(() => false);
      if (deleted) this.#announce('leave', channel, entryOf(r));
    }
    if (left === 0) await jsm.streams.deleteMessage(names.leaseStream, leaseSeq, false).catch(() => false);
  }

  async #purge(subject: string, channel: Channel, entry: PresenceEntry): Promise<void> {
    const { jsm } = this.deps.conn();
    const purged = await jsm.streams.purge(this.deps.names.presenceStream, { filter: subject });
    if (purged.purged > 0) this.#announce('leave', channel, entry);
  }

  /** Raises this node's lease to `expires` (writes are chained, so the lease only grows). */
  #lease(expires: number): Promise<void> {
    if (expires <= this.#leaseExpires) return this.#leaseWrite;
    this.#leaseExpires = expires;
    const { js } = this.deps.conn();
    const subject = this.deps.names.lease(this.deps.node);
    const write = this.#leaseWrite.then(async () => {
      if (this.#leaseExpires !== expires) return; // a later write covers it
      await js.publish(subject, JSON.stringify({ x: expires }));
    });
    this.#leaseWrite = write.catch(() => undefined);
    return write;
  }

  #announce(kind: 'join' | 'leave', channel: Channel, entry: PresenceEntry): void {
    const h = natsHeaders();
    h.set(H_PRESENCE, kind);
    this.deps.conn().nc.publish(this.deps.names.live(channel), JSON.stringify(record(entry)), { headers: h });
  }
}
