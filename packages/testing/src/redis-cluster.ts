/**
 * Starts a real Redis Cluster for broker tests: `masters` installed `redis-server` processes (no
 * replicas) in cluster mode on free loopback ports, with throwaway data dirs, the 16384 slots split
 * evenly, joined with CLUSTER MEET, and resolves once every node reports `cluster_state:ok` and knows
 * every master. Each node is a {@link RedisServer}: `restart()` keeps its cluster identity (its
 * `nodes.conf`) but, without persistence, loses its keys, as a master that restarts without its
 * data does. Stopped by PID.
 * @module
 */
import { startRedis, type RedisServer, type RespValue } from './redis.js';

export interface RedisClusterServer {
  readonly nodes: readonly RedisServer[];
  /** `redis://127.0.0.1:<port>` of the first node (any node works as the seed). */
  readonly url: string;
  /** The node that owns the slot of `key`. */
  ownerOf(key: string): Promise<RedisServer>;
  /** Waits until every node reports `cluster_state:ok` (after a restart, for example). */
  ready(timeoutMs?: number): Promise<void>;
  /** Restarts every node (their keys are lost, their cluster identity kept) and waits until the cluster is ok. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const SLOTS = 16384;

export async function startRedisCluster(masters = 3): Promise<RedisClusterServer> {
  const nodes: RedisServer[] = [];
  try {
    for (let i = 0; i < masters; i++) {
      nodes.push(
        await startRedis({
          args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', '--cluster-require-full-coverage', 'yes'],
        }),
      );
    }
    for (let i = 0; i < masters; i++) {
      const from = Math.floor((SLOTS * i) / masters);
      const to = Math.floor((SLOTS * (i + 1)) / masters) - 1;
      await nodes[i]?.command('CLUSTER', 'ADDSLOTSRANGE', from, to);
    }
    const first = nodes[0] as RedisServer;
    for (const n of nodes.slice(1)) await first.command('CLUSTER', 'MEET', '127.0.0.1', n.port);
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw err;
  }

  const ready = async (timeoutMs = 20_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const states = await Promise.all(
        nodes.map(async (n) => {
          const info = String(await n.command('CLUSTER', 'INFO').catch(() => ''));
          const known = /cluster_known_nodes:(\d+)/.exec(info)?.[1];
          return info.includes('cluster_state:ok') && Number(known) === masters;
        }),
      );
      if (states.every(Boolean)) return;
      if (Date.now() > deadline) throw new Error(`the Redis Cluster did not become ready: ${JSON.stringify(states)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  try {
    await ready();
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw err;
  }

  const first = nodes[0] as RedisServer;
  return {
    nodes,
    url: first.url,
    ready,
    async ownerOf(key) {
      const slot = Number(await first.command('CLUSTER', 'KEYSLOT', key));
      const ranges = (await first.command('CLUSTER', 'SLOTS')) as RespValue[][];
      for (const range of ranges) {
        const [from, to, master] = range as [number, number, RespValue[]];
        if (slot >= from && slot <= to) {
          const port = Number(master[1]);
          const owner = nodes.find((n) => n.port === port);
          if (owner !== undefined) return owner;
        }
      }
      throw new Error(`no node owns slot ${slot}`);
    },
    async restart() {
      await Promise.all(nodes.map((n) => n.restart()));
      await ready();
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.stop()));
    },
  };
}
