export { Client, createClient, type ClientOptions, type StateChange, type TransportMemory } from './client.js';
export { Subscription, type SubscriptionEvents } from './subscription.js';
export { transition, type ClientState, type ClientEvent, type RetryKind, type TransportName } from './state.js';
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
export { Sequencer } from './sequencer.js';
export { typeMatches } from './emitter.js';
export { SseParser, type SseEvent } from './transports/sse-parser.js';
export type { WebSocketConstructor, WebSocketLike } from './transports/transport.js';
export { TidingsError, type Message, type Gap, type Position, type PublishResult, type Json, type PresenceClient } from '@tidings/protocol';
