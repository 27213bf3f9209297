/**
 * Cluster control: orders every node must carry out, sent through the broker on an internal channel
 * (`_ctl:all`, a namespace no client can name) that every node subscribes to at the broker when it
starts (not through the hub: no client joins it, and it has no positions to keep). Orders:
 * - `disconnect`: close every connection of a user (`POST /api/disconnect`), with close 4401 /
 *   `tidings:error unauthorized` so the client does not come back with the same credentials;
 * - `refresh`: a token refresh for an SSE stream held by another node (`POST /refresh` landed
 *   elsewhere); the node holding the session applies it, and refuses it for another user.
 * Orders are ephemeral: a node that is down when one is sent does not get it (its connections are gone
 * with it, and a refresh not applied ends in an ordinary expiry and reconnect).
 * @module
 */
import { TidingsError, type Channel } from '@tidings/protocol';
import type { Broker, Publication } from './brokers/broker.js';

export const CONTROL_NAMESPACE = '_ctl';
export const CONTROL_CHANNEL: Channel = `${CONTROL_NAMESPACE}:all`;

export type ControlOrder =
  | { readonly op: 'disconnect'; readonly user: string; readonly reason: string }
  | { readonly op: 'refresh'; readonly session: string; readonly token: string };

/** What a node does with an order. */
export interface ControlTarget {
  disconnectUser(user: string, reason: string): number;
  refreshSession(session: string, token: string): void;
}

function parseOrder(data: string): ControlOrder | undefined {
  try {
    const o = JSON.parse(data) as Partial<Record<string, unknown>>;
    if (o.op === 'disconnect' && typeof o.user === 'string' && typeof o.reason === 'string') return { op: 'disconnect', user: o.user, reason: o.reason };
    if (o.op === 'refresh' && typeof o.session === 'string' && typeof o.token === 'string') return { op: 'refresh', session: o.session, token: o.token };
  } catch {
    // Not an order: ignored.
  }
  return undefined;
}

export class Control {
  constructor(
    private readonly broker: Broker,
    private readonly target: ControlTarget,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Subscribes to the control channel (after the broker started; the broker keeps it across reconnects). */
  start(): Promise<void> {
    return this.broker.subscribe(CONTROL_CHANNEL);
  }

  stop(): Promise<void> {
    return this.broker.unsubscribe(CONTROL_CHANNEL);
  }

  /** Sends an order to every node, this one included. */
  async send(order: ControlOrder): Promise<void> {
    await this.broker.publish({ channel: CONTROL_CHANNEL, data: JSON.stringify(order), type: undefined, idempotencyKey: undefined });
  }

  /** A publication of the control channel, from the broker's feed. */
  receive(pub: Publication): void {
    const order = parseOrder(pub.data);
    if (order === undefined) return;
    try {
      if (order.op === 'disconnect') this.target.disconnectUser(order.user, order.reason);
      else this.target.refreshSession(order.session, order.token);
    } catch (err) {
      if (!(err instanceof TidingsError)) this.onError(err);
    }
  }
}
