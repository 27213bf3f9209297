/**
 * Presence, node side: the entries of this node's clients (one per session and presence channel it
 * subscribes to), kept in the broker's {@link PresenceStore} and refreshed there well within the
 * TTL, so that when this node dies without saying goodbye its entries expire and their leaves are
 * announced. Who is present is read from the broker, so it covers every node.
 *
 * Broker calls are not awaited by the session: each entry's remove is chained after its add, so a
 * quick unsubscribe never overtakes the add; an add that failed (the broker was down) is retried at
 * the next refresh, and so is an entry the broker swept while this node lived (a refresh finds it
 * gone); every failure is reported, never thrown at a client.
 * @module
 */
import { TidingsError, type Channel, type PresenceResult } from '@tidings/protocol';
import type { Authenticator, Identity } from './auth.js';
import { ask, type HooksHolder } from './authorize.js';
import type { PresenceEntry, PresenceKey, PresenceStore } from './brokers/broker.js';
import { presenceClient } from './encoded.js';
import type { GatewayOptions } from './options.js';
import { namespaceOf } from './publisher.js';

/** One of this node's entries. */
interface Local {
  readonly entry: PresenceEntry;
  /** `adding` while the add is in flight; `failed` until the next refresh retries it. */
  state: 'adding' | 'added' | 'failed';
  /** Settles when the latest add settled: a remove waits for it. */
  op: Promise<void>;
}

const NO_CLIENTS: ReadonlyMap<string, Local> = new Map();

/** Reports a broker failure that no client waits for. */
export type PresenceErrorHandler = (err: unknown, channel: Channel) => void;

export class Presence {
  /** Channel to client (session id) to this node's entry. */
  readonly #local = new Map<Channel, Map<string, Local>>();
  /** Broker calls in flight, so closing can wait for the goodbyes. */
  readonly #pending = new Set<Promise<void>>();

  constructor(
    private readonly store: PresenceStore,
    /** How long an entry lives at the broker without a refresh, in ms. */
    readonly ttl: number,
    private readonly onError: PresenceErrorHandler,
  ) {}

  /** Entries this node holds (for stats and leak checks). */
  get size(): number {
    let n = 0;
    for (const clients of this.#local.values()) n += clients.size;
    return n;
  }

  /** This node's clients in `channel`, their adds in flight included (the broker may not list those yet). */
  localClients(channel: Channel): IterableIterator<string> {
    return (this.#local.get(channel) ?? NO_CLIENTS).keys();
  }

  /** `entry.client` is present in `channel` (its join is announced by the broker). */
  add(channel: Channel, entry: PresenceEntry): void {
    let clients = this.#local.get(channel);
    if (clients === undefined) this.#local.set(channel, (clients = new Map<string, Local>()));
    if (clients.has(entry.client)) return;
    const local: Local = { entry, state: 'adding', op: Promise.resolve() };
    clients.set(entry.client, local);
    this.#add(channel, local);
  }

  /** `client` left `channel` (its leave is announced by the broker). */
  remove(channel: Channel, client: string): void {
    const clients = this.#local.get(channel);
    const local = clients?.get(client);
    if (clients === undefined || local === undefined) return;
    clients.delete(client);
    if (clients.size === 0) this.#local.delete(channel);
    void this.#track(local.op.then(() => this.store.presenceRemove(channel, local.entry)).catch((err: unknown) => this.onError(err, channel)));
  }

  /**
   * One refresh: extends every entry the broker holds by the TTL (one `presenceTouch` batch), and
   * retries the adds that failed. Entries the broker no longer holds (swept while this node lived:
   * it stalled, or its calls failed, for longer than the TTL, and their leaves were announced) are
   * added again, which announces their joins. Run it on an interval well within the TTL.
   */
  async refresh(): Promise<void> {
    const touched: PresenceKey[] = [];
    for (const [channel, clients] of this.#local) {
      for (const local of clients.values()) {
        if (local.state === 'added') touched.push({ channel, client: local.entry.client });
        else if (local.state === 'failed') this.#add(channel, local);
      }
    }
    if (touched.length === 0) return;
    const gone = await this.store.presenceTouch(touched, this.ttl);
    for (const { channel, client } of gone) {
      // Only an entry still held here and not being added already: one removed meanwhile stays removed.
      const local = this.#local.get(channel)?.get(client);
      if (local?.state === 'added') this.#add(channel, local);
    }
  }

  /**
   * The broker came back after an outage, and may have lost what it held (a restart without
   * persistence): add every entry again. Adding an entry the broker still has announces nothing.
   */
  reassert(): void {
    for (const [channel, clients] of this.#local) {
      for (const local of clients.values()) if (local.state !== 'adding') this.#add(channel, local);
    }
  }

  /** Resolves once the broker calls in flight settled (the goodbyes of closing sessions), or after `timeout` ms. */
  async settled(timeout: number): Promise<void> {
    if (this.#pending.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeout).unref()));
    await Promise.race([Promise.allSettled([...this.#pending]), late]);
    clearTimeout(timer);
  }

  #add(channel: Channel, local: Local): void {
    local.state = 'adding';
    local.op = this.#track(
      this.store.presenceAdd(channel, local.entry, this.ttl).then(
        () => {
          local.state = 'added';
        },
        (err: unknown) => {
          local.state = 'failed';
          this.onError(err, channel);
        },
      ),
    );
  }

  #track(op: Promise<void>): Promise<void> {
    this.#pending.add(op);
    void op.finally(() => this.#pending.delete(op));
    return op;
  }
}

/**
 * Who is present in `channel`, across every node. `identity` is the asking client: it must be allowed
 * to subscribe to the channel, by its grants and by the authorization hooks (`authorize`), as a
 * subscribe is; undefined for the server API. Throws `unknown_namespace`, `forbidden` (or the hook's
 * refusal) or `presence_disabled` (the namespace does not have `presence: true`).
 */
export async function listPresence(
  store: Pick<PresenceStore, 'presence'>,
  options: GatewayOptions,
  auth: Authenticator,
  authorize: HooksHolder | undefined,
  channel: Channel,
  identity: Identity | undefined,
): Promise<PresenceResult> {
  const ns = namespaceOf(options, channel);
  if (identity !== undefined && identity.server !== true) {
    if (!auth.canSubscribe(identity, channel)) throw new TidingsError('forbidden', `not allowed to see who is in ${channel}`);
    const subscribe = authorize?.hooks?.subscribe;
    if (subscribe !== undefined) await ask(() => subscribe(identity, channel), `see who is in ${channel}`);
  }
  if (!ns.presence) throw new TidingsError('presence_disabled', `${channel} is in a namespace without presence (set presence: true on it)`);
  const entries = await store.presence(channel);
  return { channel, clients: entries.map(presenceClient) };
}
