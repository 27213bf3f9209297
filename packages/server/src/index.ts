export { createGateway, Gateway, type GatewayParts, type GatewayStats, type ListenInfo } from './gateway.js';
export {
  DEFAULTS,
  DEMO_NAMESPACES,
  ConfigError,
  loadConfig,
  resolveOptions,
  type GatewayConfig,
  type GatewayOptions,
  type NamespaceOptions,
} from './options.js';
export type { Broker, Publication, PublishCommand, PublishOutcome, HistoryPage, PublicationHandler, EvictionReason } from './brokers/broker.js';
export { MemoryBroker, type MemoryBrokerOptions } from './brokers/memory.js';
export { openAuth, type Authenticator, type Identity, type ConnectInfo, type TransportName } from './auth.js';
export { CounterMetrics, type Metrics, type DropReason, type ErrorSite } from './metrics.js';
export type { RpcHandlers } from './commands.js';
export { planResume, type ResumePlan, type ResumeStep } from './resume.js';
export { createLogger, type Logger } from './log.js';
export { installProcessNet, type ProcessNet } from './process-net.js';
