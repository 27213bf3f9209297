/**
 * Connections per user, across every node of a cluster. Each connection of an authenticated user is
 * a presence entry in an internal channel of that user (`_conn:<hash of the user>`, a namespace no
 * client can name), kept alive by the node's presence refresh and removed when the connection ends;
 * a node that dies leaves entries that expire within the presence TTL. A new connection is refused
 * (429 `limit_exceeded`) when the user already has `max` listed, or on this node, added but not yet
 * listed. Connections racing through different nodes at the same instant may each see room: the
 * bound holds up to that race.
 * @module
 */
import { createHash } from 'node:crypto';
import type { PresenceStore } from './brokers/broker.js';
import { RetryLater, type Slot } from './limits.js';
import type { Presence } from './presence.js';

/** The internal namespace of per-user connection entries (reserved: no client channel can be in it). */
export const CONNECTIONS_NAMESPACE = '_conn';

const FREE: Slot = { release: () => undefined };

export class UserConnections {
  #next = 0;

  constructor(
    private readonly store: PresenceStore,
    private readonly presence: Presence,
    private readonly max: number,
    private readonly nodeId: string,
    /** What slot ids start with: unique to this node and this life of it (see the session context's `idPrefix`). */
    private readonly idPrefix: string,
  ) {}

  /** Takes a connection slot of `user` (anonymous clients have none), or refuses with `limit_exceeded`. */
  async acquire(user: string, anonymous: boolean): Promise<Slot> {
    if (this.max <= 0 || anonymous || user === '') return FREE;
    const channel = `${CONNECTIONS_NAMESPACE}:${createHash('sha256').update(user).digest('base64url').slice(0, 22)}`;
    const open = await this.store.presence(channel);
    // This node's own connections whose entries are still on their way count too: the broker lists
    // them only once added, and connections of one user racing through this node would each see room.
    const listed = new Set(open.map((entry) => entry.client));
    let count = listed.size;
    for (const client of this.presence.localClients(channel)) if (!listed.has(client)) count += 1;
    if (count >= this.max) throw new RetryLater('limit_exceeded', `at most ${this.max} connections per user`, 5000);
    this.#next = (this.#next + 1) % Number.MAX_SAFE_INTEGER;
    const client = `${this.idPrefix}${this.#next.toString(36)}`;
    this.presence.add(channel, { client, user: '', info: undefined, node: this.nodeId });
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.presence.remove(channel, client);
      },
    };
  }
}
