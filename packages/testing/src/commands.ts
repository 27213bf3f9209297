/**
 * Broker publish commands for tests that talk to a broker directly (as when publishing goes on
 * while a gateway is down, the way a shared Redis would keep accepting publishes).
 * @module
 */
import type { PublishCommand } from '@tidings/server';

/** A durable publish of `data` (JSON text) with test-friendly history and dedup settings. */
export function publishCommand(channel: string, data: string, over: Partial<PublishCommand> = {}): PublishCommand {
  return {
    channel,
    data,
    type: undefined,
    idempotencyKey: undefined,
    historySize: 100,
    historyTtl: 60_000,
    ephemeral: false,
    dedupWindow: 60_000,
    ...over,
  };
}
