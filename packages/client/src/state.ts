/**
 * The connection state machine as a pure function: one state value, one transition point.
 * The client owns the effects (timers, transports); this only says which state follows which.
 *
 * `attempt` counts consecutive failures since the last stable connection: a connection attempt
 * that fails, and also a connection that is lost before it proved stable (it opened but neither
 * lasted nor carried anything). So quick connect/drop cycles keep backing off; only a drop of a
 * stable connection starts again from 0.
 * @module
 */

import type { ErrorCode } from '@tidings/protocol';

/** How a lost connection should be retried. */
export type RetryKind = 'backoff' | 'now';

export type TransportName = 'websocket' | 'sse' | 'poll';

export type ClientState =
  | { readonly status: 'idle' }
  | { readonly status: 'connecting'; readonly attempt: number }
  | { readonly status: 'connected'; readonly transport: TransportName; readonly attempt: number }
  | { readonly status: 'waiting'; readonly attempt: number; readonly retry: RetryKind }
  /** `code`: what the server refused with (`unauthorized` when it did not say). */
  | { readonly status: 'failed'; readonly reason: string; readonly code?: ErrorCode }
  | { readonly status: 'closed' };

export type ClientEvent =
  | { readonly type: 'start' }
  | { readonly type: 'retry' }
  | { readonly type: 'open'; readonly transport: TransportName }
  /** `stable`: the connection being lost had proven itself (stayed up a while, or carried traffic). */
  | { readonly type: 'drop'; readonly retry: RetryKind; readonly reason: string; readonly stable?: boolean }
  | { readonly type: 'reject'; readonly reason: string; readonly code?: ErrorCode }
  | { readonly type: 'close' };

/** The next state, or undefined when `event` does not apply in `state`. */
export function transition(state: ClientState, event: ClientEvent): ClientState | undefined {
  switch (event.type) {
    case 'start':
      return state.status === 'idle' ? { status: 'connecting', attempt: 0 } : undefined;
    case 'retry':
      return state.status === 'waiting' ? { status: 'connecting', attempt: state.attempt } : undefined;
    case 'open':
      return state.status === 'connecting' ? { status: 'connected', transport: event.transport, attempt: state.attempt } : undefined;
    case 'drop':
      if (state.status === 'connected') return { status: 'waiting', attempt: event.stable === true ? 0 : state.attempt + 1, retry: event.retry };
      if (state.status === 'connecting') return { status: 'waiting', attempt: state.attempt + 1, retry: event.retry };
      return undefined;
    case 'reject':
      if (state.status !== 'connecting' && state.status !== 'connected') return undefined;
      return event.code === undefined ? { status: 'failed', reason: event.reason } : { status: 'failed', reason: event.reason, code: event.code };
    case 'close':
      return state.status === 'closed' ? undefined : { status: 'closed' };
  }
}
