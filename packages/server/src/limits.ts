/**
 * Rate and count limits: a token bucket, a bounded set of keyed buckets, and the connection gate that
 * admission asks before a client connection (WebSocket, SSE stream, long poll) is taken: a cap on new
 * connections per second per node (reconnect storms: excess handshakes are told when to come back)
 * and per address (so that one client cannot use up the node's), a cap on open connections per node
 * and per address. Per-user limits that must hold across a cluster live in `user-connections.ts`.
 * @module
 */
import { TidingsError, type ErrorCode } from '@tidings/protocol';

/** A refusal that says when to try again (`Retry-After`, or a WebSocket close reason). */
export class RetryLater extends TidingsError {
  constructor(
    code: ErrorCode,
    reason: string,
    /** Suggested wait before retrying, in ms. */
    readonly retryAfter: number,
  ) {
    super(code, reason);
  }
}

/** `rate` tokens per second, at most `burst` saved up. */
export class TokenBucket {
  #tokens: number;
  #at: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.#tokens = burst;
    this.#at = now();
  }

  #refill(): void {
    const now = this.now();
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#at) * this.rate) / 1000);
    this.#at = now;
  }

  /** Takes one token if there is one. */
  take(): boolean {
    this.#refill();
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Ms until a token is available. */
  get wait(): number {
    this.#refill();
    return this.#tokens >= 1 ? 0 : Math.ceil(((1 - this.#tokens) * 1000) / this.rate);
  }

  /** Whether the bucket is full again (so forgetting it changes nothing). */
  get full(): boolean {
    this.#refill();
    return this.#tokens >= this.burst;
  }
}

/**
 * One bucket per key (a channel, a user), at most `max` keys: a new key beyond that first forgets
 * buckets that are full again, then, if none is, the oldest one.
 */
export class KeyedBuckets {
  readonly #buckets = new Map<string, TokenBucket>();

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly max: number,
  ) {}

  take(key: string): boolean {
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      if (this.#buckets.size >= this.max) this.#evict();
      bucket = new TokenBucket(this.rate, this.burst);
      this.#buckets.set(key, bucket);
    }
    return bucket.take();
  }

  wait(key: string): number {
    return this.#buckets.get(key)?.wait ?? 0;
  }

  get size(): number {
    return this.#buckets.size;
  }

  #evict(): void {
    for (const [key, bucket] of this.#buckets) if (bucket.full) this.#buckets.delete(key);
    if (this.#buckets.size >= this.max) {
      const oldest = this.#buckets.keys().next();
      if (oldest.done !== true) this.#buckets.delete(oldest.value);
    }
  }
}

export interface ConnectionLimits {
  /** Open client connections per node. */
  readonly maxConnections: number;
  /** Open client connections per IP, per node (0: no limit). */
  readonly maxConnectionsPerIp: number;
  /** New client connections per second per node (a burst of the same size is allowed). */
  readonly maxConnectRate: number;
  /** New client connections per second per IP, per node (a burst of the same size; 0: no limit). */
  readonly maxConnectRatePerIp: number;
}

/** A taken connection slot; `release` is idempotent. */
export interface Slot {
  release(): void;
}

/** A connection's slot, and what its new connection costs of the connect rate. */
export interface GateSlot extends Slot {
  /**
   * Takes the connection's share of the connect rate now, if admission left it to the handler (see
   * {@link ConnectionGate.admit}), or throws a coded refusal saying when to retry. Once at most.
   */
  charge(): void;
}

/** Addresses whose connect rate is kept at once; past it, those whose bucket is full again go first. */
const MAX_RATED_ADDRESSES = 65_536;

/** The node's connection counts and the connect-rate buckets (the node's, and one per address). */
export class ConnectionGate {
  #open = 0;
  readonly #perIp = new Map<string, number>();
  readonly #rate: TokenBucket;
  readonly #ipRate: KeyedBuckets | undefined;

  constructor(private readonly limits: ConnectionLimits) {
    this.#rate = new TokenBucket(limits.maxConnectRate, limits.maxConnectRate);
    const perIp = limits.maxConnectRatePerIp;
    this.#ipRate = perIp > 0 ? new KeyedBuckets(perIp, perIp, MAX_RATED_ADDRESSES) : undefined;
  }

  get open(): number {
    return this.#open;
  }

  /** Whether limits apply per address (`admit` needs the address only then). */
  get countsAddresses(): boolean {
    return this.limits.maxConnectionsPerIp > 0 || this.#ipRate !== undefined;
  }

  /**
   * Takes a slot for a connection from `ip`, or throws a coded refusal saying when to retry. `ip` may
   * be undefined when no limit applies per address ({@link countsAddresses}). `charged` false leaves
   * the connect rate to the handler ({@link GateSlot.charge}): a long poll that continues where its
   * group is costs no more than any request, and only one that starts a session's work is a new
   * connection.
   */
  admit(ip: string | undefined, charged = true): GateSlot {
    const { maxConnections, maxConnectionsPerIp } = this.limits;
    if (this.#open >= maxConnections) {
      throw new RetryLater('unavailable', `this node holds its maximum of ${maxConnections} connections; try another node or later`, 5000);
    }
    const fromIp = ip === undefined ? 0 : (this.#perIp.get(ip) ?? 0);
    if (maxConnectionsPerIp > 0 && fromIp >= maxConnectionsPerIp) {
      throw new RetryLater('limit_exceeded', `at most ${maxConnectionsPerIp} connections per IP address`, 5000);
    }
    if (charged) this.charge(ip);
    this.#open += 1;
    if (ip !== undefined) this.#perIp.set(ip, fromIp + 1);
    return new AdmittedSlot(this, ip, charged);
  }

  /**
   * Takes a new connection's token from the address's bucket and the node's, or throws. The node's is
   * looked at first: while it is empty, no address gets a bucket, so addresses are added no faster
   * than the node admits connections.
   */
  charge(ip: string | undefined): void {
    const wait = this.#rate.wait;
    if (wait > 0) throw this.#tooMany(wait, 'unavailable', 'too many new connections');
    if (ip !== undefined && this.#ipRate !== undefined && !this.#ipRate.take(ip)) {
      throw this.#tooMany(this.#ipRate.wait(ip), 'limit_exceeded', 'too many new connections from this address');
    }
    this.#rate.take();
  }

  #tooMany(wait: number, code: 'unavailable' | 'limit_exceeded', what: string): RetryLater {
    // Spread the retries over the next second or two, so the storm does not come back at once.
    const after = wait + Math.floor(Math.random() * 1000);
    return new RetryLater(code, `${what}; retry in ${after} ms`, after);
  }

  /** @internal A slot from `ip` was released. */
  free(ip: string | undefined): void {
    this.#open -= 1;
    if (ip === undefined) return;
    const left = (this.#perIp.get(ip) ?? 1) - 1;
    if (left <= 0) this.#perIp.delete(ip);
    else this.#perIp.set(ip, left);
  }
}

/** A connection's slot: an object, not a closure, since every open connection holds one. */
class AdmittedSlot implements GateSlot {
  #released = false;

  constructor(
    private readonly gate: ConnectionGate,
    private readonly ip: string | undefined,
    private charged: boolean,
  ) {}

  charge(): void {
    if (this.charged) return;
    this.gate.charge(this.ip);
    this.charged = true;
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.gate.free(this.ip);
  }
}
