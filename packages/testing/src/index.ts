export * from './gateway.js';
export * from './sse-client.js';
export * from './ws-client.js';
export * from './subscribers.js';
export * from './chromium.js';
export * from './faulty-broker.js';
export * from './proxy.js';
export * from './nginx.js';
