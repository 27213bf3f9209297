/**
 * Publishing, shared by the HTTP API, WebSocket `publish` frames and `POST /send`: resolves the
 * namespace policy, checks permission, encodes `data` once and hands the command to the broker.
 * @module
 */
import { parseChannel, TidingsError, type Channel, type PublishRequest, type PublishResult } from '@tidings/protocol';
import type { Identity, Authenticator } from './auth.js';
import { ask, type HooksHolder } from './authorize.js';
import type { Broker, PublishOutcome } from './brokers/broker.js';
import type { SampledLog } from './log.js';
import type { Metrics } from './metrics.js';
import { KeyedBuckets, RetryLater, type TokenBucket } from './limits.js';
import type { GatewayOptions, NamespaceOptions } from './options.js';

/** The policy of `channel`'s namespace; throws `bad_channel` or `unknown_namespace`. */
export function namespaceOf(options: GatewayOptions, channel: Channel): NamespaceOptions {
  const { namespace } = parseChannel(channel);
  // Own entries only: a namespace named `constructor` or `__proto__` is not configured by Object's.
  const ns = Object.hasOwn(options.namespaces, namespace) ? options.namespaces[namespace] : undefined;
  if (ns === undefined) {
    throw new TidingsError('unknown_namespace', namespace === '' ? 'the default namespace is not configured' : `namespace '${namespace}' is not configured`);
  }
  return ns;
}

/**
 * Who is publishing: the server API (trusted) or a client (namespace and auth decide). A client's
 * publish rate is its connection's bucket (`rate`), or, for one-off requests (`POST /send`), the
 * bucket of `sender` (its user, or its address when anonymous).
 */
export type Origin =
  /** The server API; `admin`: an operator on the admin dashboard, whose idempotency keys are its own. */
  | { readonly kind: 'api'; readonly scope?: 'admin' }
  | { readonly kind: 'client'; readonly identity: Identity; readonly rate?: TokenBucket; readonly sender?: string };

/** Most senders and channels whose publish rates are tracked at once (the least recently seen are forgotten first). */
const RATE_KEYS = 100_000;

/**
 * The idempotency key as the broker stores it: scoped by who published (the server API, the admin
 * dashboard, one user,
 * or anonymous clients), so no publisher can make another's publication a duplicate. Anonymous
 * clients share one scope; the client SDK's keys are random UUIDs.
 */
export function scopedKey(origin: Origin, key: string): string {
  // The server side's scopes are the ones brokers keep apart (isServerKey).
  if (origin.kind === 'api') return origin.scope === 'admin' ? `admin:${key}` : `api:${key}`;
  const { identity } = origin;
  return identity.anonymous ? `anon:${key}` : `user:${identity.user.length}:${identity.user}:${key}`;
}

/** UTF-8 length of `text`, without encoding it when the answer is clear from its UTF-16 length. */
function exceeds(text: string, limit: number): boolean {
  // Every UTF-16 unit is 1 to 3 UTF-8 bytes.
  if (text.length > limit) return true;
  if (text.length * 3 <= limit) return false;
  return Buffer.byteLength(text) > limit;
}

export class Publisher {
  readonly #senders: KeyedBuckets;
  readonly #channels: KeyedBuckets | undefined;

  constructor(
    private readonly broker: Broker,
    private readonly options: GatewayOptions,
    private readonly auth: Authenticator,
    private readonly metrics: Metrics,
    private readonly authorize: HooksHolder = { hooks: undefined },
    private readonly sampled: SampledLog = () => undefined,
  ) {
    this.#senders = new KeyedBuckets(options.maxPublishRate, options.maxPublishRate * 2, RATE_KEYS);
    const perChannel = options.maxChannelPublishRate;
    this.#channels = perChannel > 0 ? new KeyedBuckets(perChannel, perChannel * 2, RATE_KEYS) : undefined;
  }

  /** Validates policy for every request first, so a batch is all-or-nothing on bad input. */
  check(req: PublishRequest, origin: Origin): NamespaceOptions {
    const ns = namespaceOf(this.options, req.channel);
    if (origin.kind === 'client') {
      if (!ns.clientPublish || !this.auth.canPublish(origin.identity, req.channel)) {
        throw new TidingsError('forbidden', `clients may not publish to ${req.channel}`);
      }
      this.#rateCheck(req.channel, origin);
    }
    return ns;
  }

  /** Client publish rates: the sender's (connection or user), then the channel's. Refusals say when to retry. */
  #rateCheck(channel: Channel, origin: { readonly rate?: TokenBucket; readonly sender?: string }): void {
    const { maxPublishRate, maxChannelPublishRate } = this.options;
    const { rate, sender } = origin;
    if (rate !== undefined ? !rate.take() : sender !== undefined && !this.#senders.take(sender)) {
      const wait = rate?.wait ?? this.#senders.wait(sender ?? '');
      throw new RetryLater('limit_exceeded', `at most ${maxPublishRate} publishes per second per connection or user`, wait);
    }
    if (this.#channels !== undefined && !this.#channels.take(channel)) {
      throw new RetryLater('limit_exceeded', `at most ${maxChannelPublishRate} client publishes per second to ${channel}`, this.#channels.wait(channel));
    }
  }

  /** Checks policy, then publishes. */
  publish(req: PublishRequest, origin: Origin): Promise<PublishResult> {
    this.check(req, origin);
    return this.publishChecked(req, origin);
  }

  /** Publishes a request that `check` already passed (the broker applies the namespace's retention). */
  async publishChecked(req: PublishRequest, origin: Origin): Promise<PublishResult> {
    const data = this.encode(req);
    if (this.asks(origin)) await this.authorizePublish(req, data, origin);
    return this.publishEncoded(req, data, origin);
  }

  /** The data as it is published (its JSON text), refused `too_large` past `maxPayload`. */
  encode(req: PublishRequest): string {
    const data = JSON.stringify(req.data);
    if (exceeds(data, this.options.maxPayload)) {
      throw new TidingsError('too_large', `data is larger than ${this.options.maxPayload} bytes (UTF-8)`);
    }
    return data;
  }

  /** Whether a publish from `origin` is put to the host's publish hook (clients', when there is one). */
  asks(origin: Origin): boolean {
    return origin.kind === 'client' && this.authorize.hooks?.publish !== undefined;
  }

  /** Puts a client's publish to the host's publish hook (see {@link asks}); refuses as the hook says. */
  async authorizePublish(req: PublishRequest, data: string, origin: Origin): Promise<void> {
    const publishHook = this.authorize.hooks?.publish;
    if (origin.kind === 'client' && publishHook !== undefined) {
      await ask(() => publishHook(origin.identity, req.channel, data), `publish to ${req.channel}`);
    }
  }

  /** Publishes what {@link check}, {@link encode} and {@link authorizePublish} passed. */
  async publishEncoded(req: PublishRequest, data: string, origin: Origin): Promise<PublishResult> {
    const started = performance.now();
    let outcome: PublishOutcome;
    try {
      outcome = await this.broker.publish({
        channel: req.channel,
        data,
        type: req.type,
        idempotencyKey: req.idempotencyKey === undefined ? undefined : scopedKey(origin, req.idempotencyKey),
      });
    } catch (err) {
      this.metrics.brokerCall('publish', performance.now() - started, false);
      throw err;
    }
    this.metrics.brokerCall('publish', performance.now() - started, true);
    if (!outcome.duplicate) {
      this.metrics.published(1);
      this.sampled({ channel: req.channel, seq: outcome.position.seq, by: origin.kind, bytes: data.length }, 'published');
    }
    return { channel: req.channel, position: outcome.position, duplicate: outcome.duplicate };
  }
}
