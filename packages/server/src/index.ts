export { createGateway, Gateway, type GatewayParts, type GatewayStats, type ListenInfo } from './gateway.js';
export { LANE_REQUESTS, type LaneRequest } from './http/lane.js';
export {
  DEFAULTS,
  DEMO_NAMESPACES,
  ConfigError,
  loadConfig,
  resolveOptions,
  type GatewayConfig,
  type GatewayOptions,
  type NamespaceOptions,
  type Backpressure,
  type AuthConfig,
  type JwtConfig,
} from './options.js';
export type {
  Broker,
  BrokerCapabilities,
  BrokerHandlers,
  BrokerSettings,
  BrokerStatus,
  EvictionReason,
  HistoryPage,
  PresenceEntry,
  PresenceKey,
  PresenceEvent,
  PresenceStore,
  Publication,
  PublishCommand,
  PublishOutcome,
  Retention,
} from './brokers/broker.js';
export { MemoryBroker, type MemoryBrokerOptions, type MemoryBrokerStats } from './brokers/memory.js';
export { RedisBroker, type RedisBrokerOptions, type RedisBrokerLogger } from './brokers/redis.js';
export { NatsBroker, type NatsBrokerOptions, type NatsBrokerLogger, type NatsBrokerFaults } from './brokers/nats.js';
export { openAuth, type Authenticator, type Identity, type ConnectInfo, type Grants, type TransportName } from './auth.js';
export { jwtAuth, tokenOf, type JwtAuthOptions, type JwtOptions } from './jwt.js';
export { loadHooks, proxyHooks, type AuthorizeHooks } from './authorize.js';
export { systemClock, type Clock, type ClockTimer } from './clock.js';
export { Buckets, CounterMetrics, DELIVERY_BUCKETS_MS, NO_METRICS, type BrokerOp, type Metrics, type DropReason, type ErrorSite, type ResumeOutcome } from './metrics.js';
export type { RpcHandlers } from './commands.js';
export { planPart, planResume, type ResumePlan, type ResumeStep } from './resume.js';
export { createLogger, type Logger } from './log.js';
export { installProcessNet, type ProcessNet } from './process-net.js';
