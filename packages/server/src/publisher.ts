/**
 * Publishing, shared by the HTTP API, WebSocket `publish` frames and `POST /send`: resolves the
 * namespace policy, checks permission, encodes `data` once and hands the command to the broker.
 * @module
 */
import { parseChannel, TidingsError, type Channel, type PublishRequest, type PublishResult } from '@tidings/protocol';
import type { Identity, Authenticator } from './auth.js';
import type { Broker } from './brokers/broker.js';
import type { Metrics } from './metrics.js';
import type { GatewayOptions, NamespaceOptions } from './options.js';

/** The policy of `channel`'s namespace; throws `bad_channel` or `unknown_namespace`. */
export function namespaceOf(options: GatewayOptions, channel: Channel): NamespaceOptions {
  const { namespace } = parseChannel(channel);
  const ns = options.namespaces[namespace];
  if (ns === undefined) {
    throw new TidingsError('unknown_namespace', namespace === '' ? 'the default namespace is not configured' : `namespace '${namespace}' is not configured`);
  }
  return ns;
}

/** Who is publishing: the server API (trusted) or a connected client (namespace and auth decide). */
export type Origin = { readonly kind: 'api' } | { readonly kind: 'client'; readonly identity: Identity };

export class Publisher {
  constructor(
    private readonly broker: Broker,
    private readonly options: GatewayOptions,
    private readonly auth: Authenticator,
    private readonly metrics: Metrics,
  ) {}

  /** Validates policy for every request first, so a batch is all-or-nothing on bad input. */
  check(req: PublishRequest, origin: Origin): NamespaceOptions {
    const ns = namespaceOf(this.options, req.channel);
    if (origin.kind === 'client' && (!ns.clientPublish || !this.auth.canPublish(origin.identity, req.channel))) {
      throw new TidingsError('forbidden', `clients may not publish to ${req.channel}`);
    }
    return ns;
  }

  async publish(req: PublishRequest, origin: Origin): Promise<PublishResult> {
    const ns = this.check(req, origin);
    const data = JSON.stringify(req.data);
    if (data.length > this.options.maxPayload) {
      throw new TidingsError('too_large', `data is larger than ${this.options.maxPayload} bytes`);
    }
    const outcome = await this.broker.publish({
      channel: req.channel,
      data,
      type: req.type,
      idempotencyKey: req.idempotencyKey,
      historySize: ns.historySize,
      historyTtl: ns.historyTtl * 1000,
      ephemeral: ns.ephemeral,
      dedupWindow: this.options.dedupWindow,
    });
    if (!outcome.duplicate) this.metrics.published(1);
    return { channel: req.channel, position: outcome.position, duplicate: outcome.duplicate };
  }
}
