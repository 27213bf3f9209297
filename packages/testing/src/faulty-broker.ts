/**
 * Fault injection around a real broker: slow history reads (as over a network, so live publications
 * arrive while a resume reads history) and a lossy live feed (as when a pub/sub message is lost, so the
 * hub must repair the hole from history). The wrapped broker does all the real work.
 * @module
 */
import type { Broker, PublicationHandler } from '@tidings/server';

export interface Faults {
  /** Delay every history read by this many ms. */
  readonly historyDelayMs?: number;
  /** Drop every Nth live publication before it reaches the node (history still has it). */
  readonly dropLiveEvery?: number;
}

export function faultyBroker(inner: Broker, faults: Faults): Broker {
  let live = 0;
  return {
    start(handler: PublicationHandler) {
      return inner.start((pub) => {
        live += 1;
        if (faults.dropLiveEvery !== undefined && live % faults.dropLiveEvery === 0) return;
        handler(pub);
      });
    },
    publish: (cmd) => inner.publish(cmd),
    subscribe: (channel) => inner.subscribe(channel),
    unsubscribe: (channel) => inner.unsubscribe(channel),
    async history(channel, since, limit) {
      if (faults.historyDelayMs !== undefined) await new Promise((r) => setTimeout(r, faults.historyDelayMs));
      return inner.history(channel, since, limit);
    },
    close: () => inner.close(),
  };
}
