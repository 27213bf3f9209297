/**
 * Broker publish commands for tests that talk to a broker directly (as when publishing goes on
 * while a gateway is down, the way a shared Redis would keep accepting publishes). Retention comes
 * from the channel's namespace, as the broker was started with.
 * @module
 */
import type { BrokerSettings, PublishCommand } from '@tidings/server';

/** A publish of `data` (JSON text). */
export function publishCommand(channel: string, data: string, over: Partial<PublishCommand> = {}): PublishCommand {
  return { channel, data, type: undefined, idempotencyKey: undefined, ...over };
}

/** Broker settings for tests: the default namespace keeps 100 publications for a minute; `namespaces` add more. */
export function brokerSettings(namespaces: BrokerSettings['namespaces'] = {}, dedupWindow = 60_000): BrokerSettings {
  return { namespaces: { '': { historySize: 100, historyTtl: 60_000, ephemeral: false }, ...namespaces }, dedupWindow };
}
