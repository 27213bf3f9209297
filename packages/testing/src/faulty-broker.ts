/**
 * Fault injection around a real broker: slow history reads (as over a network, so live publications
 * arrive while a resume reads history), a lossy live feed (as when a pub/sub message is lost, so the
 * hub must repair the hole from history), failing history reads (a broker that is down) and failing
 * presence refreshes (a node stalled past the presence TTL). The
 * wrapped broker does all the real work.
 * @module
 */
import type { Position } from '@tidings/protocol';
import type { Broker, Publication } from '@tidings/server';

export interface Faults {
  /** Delay every history read by this many ms. */
  readonly historyDelayMs?: number;
  /** Delay the answer of every history read by this many ms after it was read (what is published meanwhile is not in it). */
  readonly historyAnswerDelayMs?: number;
  /** Drop every Nth live publication before it reaches the node (history still has it). */
  readonly dropLiveEvery?: number;
  /** Drop the live publications this returns true for (history still has them). */
  readonly dropLive?: (pub: Publication) => boolean;
  /** Fail a history read (as a broker that is down would) whenever this returns true. */
  readonly failHistory?: (channel: string, since: Position | undefined, limit: number) => boolean;
  /** Fail a presence refresh (as for a node stalled, or cut off, past the TTL) whenever this returns true. */
  readonly failPresenceTouch?: () => boolean;
}

export function faultyBroker(inner: Broker, faults: Faults): Broker {
  let live = 0;
  const slow = async (): Promise<void> => {
    if (faults.historyDelayMs !== undefined) await new Promise((r) => setTimeout(r, faults.historyDelayMs));
  };
  return {
    // It loses live publications on purpose.
    capabilities: { ...inner.capabilities, lossless: false },
    start(handlers, settings) {
      return inner.start(
        {
          publication: (pub) => {
            live += 1;
            if (faults.dropLiveEvery !== undefined && live % faults.dropLiveEvery === 0) return;
            if (faults.dropLive?.(pub) === true) return;
            handlers.publication(pub);
          },
          presence: (event) => handlers.presence(event),
          status: (status, reason) => handlers.status(status, reason),
        },
        settings,
      );
    },
    publish: (cmd) => inner.publish(cmd),
    subscribe: (channel) => inner.subscribe(channel),
    unsubscribe: (channel) => inner.unsubscribe(channel),
    async history(channel, since, limit) {
      await slow();
      if (faults.failHistory?.(channel, since, limit) === true) throw new Error('history is unavailable (injected fault)');
      const page = await inner.history(channel, since, limit);
      if (faults.historyAnswerDelayMs !== undefined) await new Promise((r) => setTimeout(r, faults.historyAnswerDelayMs));
      return page;
    },
    async tops(channels) {
      await slow();
      return inner.tops(channels);
    },
    presenceAdd: (channel, entry, ttl) => inner.presenceAdd(channel, entry, ttl),
    presenceRemove: (channel, entry) => inner.presenceRemove(channel, entry),
    presenceTouch: (items, ttl) =>
      faults.failPresenceTouch?.() === true ? Promise.reject(new Error('presence refresh timed out (injected fault)')) : inner.presenceTouch(items, ttl),
    presence: (channel) => inner.presence(channel),
    close: () => inner.close(),
  };
}
