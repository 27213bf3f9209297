/**
 * One {@link MemoryBroker} shared by several gateway nodes in one process, the way a Redis or NATS
 * broker is shared by a cluster: each node gets its own view, with its own handlers and its own
 * subscriptions (counted, so one node leaving a channel does not unsubscribe another), over the same
 * streams and presence entries. A node can be made to stop refreshing its presence entries, which is
 * all the broker can see of a node that died without saying goodbye.
 *
 * (A MemoryBroker started twice keeps only the last handlers, so two gateways cannot share one
 * directly.)
 * @module
 */
import type { Broker, BrokerHandlers, MemoryBroker } from '@tidings/server';

export interface NodeView extends Broker {
  /** From now on this node's refreshes (`presenceTouch`) never reach the broker, as if its process died. */
  stopRefreshing(): void;
  /** Refresh batches that reached the broker. */
  readonly touches: number;
}

interface Node {
  handlers: BrokerHandlers;
  readonly channels: Set<string>;
}

export interface MemoryCluster {
  /** A new node's view of the shared broker. */
  node(): NodeView;
}

export function memoryCluster(inner: MemoryBroker): MemoryCluster {
  const nodes = new Set<Node>();
  const refs = new Map<string, number>();
  let started: Promise<void> | undefined;
  const fanOut: BrokerHandlers = {
    publication: (pub) => {
      for (const n of nodes) if (n.channels.has(pub.channel)) n.handlers.publication(pub);
    },
    presence: (event) => {
      for (const n of nodes) if (n.channels.has(event.channel)) n.handlers.presence(event);
    },
    status: (status, reason) => {
      for (const n of nodes) n.handlers.status(status, reason);
    },
  };
  const release = async (node: Node, channel: string): Promise<void> => {
    if (!node.channels.delete(channel)) return;
    const left = (refs.get(channel) ?? 1) - 1;
    if (left > 0) {
      refs.set(channel, left);
      return;
    }
    refs.delete(channel);
    await inner.unsubscribe(channel);
  };

  return {
    node(): NodeView {
      const self: Node = { handlers: fanOut, channels: new Set() };
      let refreshing = true;
      let touches = 0;
      return {
        capabilities: { ...inner.capabilities, shared: true },
        async start(handlers, settings) {
          started ??= inner.start(fanOut, settings);
          await started;
          self.handlers = handlers;
          nodes.add(self);
          handlers.status('up', 'shared memory');
        },
        publish: (cmd) => inner.publish(cmd),
        async subscribe(channel) {
          if (self.channels.has(channel)) return;
          self.channels.add(channel);
          const n = (refs.get(channel) ?? 0) + 1;
          refs.set(channel, n);
          if (n === 1) await inner.subscribe(channel);
        },
        unsubscribe: (channel) => release(self, channel),
        history: (channel, since, limit) => inner.history(channel, since, limit),
        tops: (channels) => inner.tops(channels),
        presenceAdd: (channel, entry, ttl) => inner.presenceAdd(channel, entry, ttl),
        presenceRemove: (channel, entry) => inner.presenceRemove(channel, entry),
        presenceTouch(items, ttl) {
          if (!refreshing) return Promise.resolve([]);
          touches += 1;
          return inner.presenceTouch(items, ttl);
        },
        presence: (channel) => inner.presence(channel),
        async close() {
          nodes.delete(self);
          for (const channel of [...self.channels]) await release(self, channel);
        },
        stopRefreshing() {
          refreshing = false;
        },
        get touches() {
          return touches;
        },
      };
    },
  };
}
