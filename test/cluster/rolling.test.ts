/**
 * A rolling restart: three gateway processes on Redis behind the shipped nginx config, each stopped
 * with SIGTERM (a graceful drain: /readyz 503, clients sent elsewhere in waves) and started again in
 * turn, while SDK clients on every transport and plain EventSources receive a steady stream. Every
 * client ends with the full sequence, in order, once, with no gap; the longest pause between two
 * deliveries to any client is reported.
 */
import { EventSource } from 'eventsource';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client, TransportName } from '@tidings/client';
import type { Gap, Message } from '@tidings/protocol';
import { startCluster, startRedis, testClient, until, type Cluster, type RedisServer } from '@tidings/testing';

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What one client saw, with arrival times. */
class Seen {
  readonly values: number[] = [];
  readonly at: number[] = [];
  readonly gaps: Gap[] = [];
  readonly notes: string[] = [];
  add(m: Message): void {
    this.values.push(m.data as number);
    this.at.push(Date.now());
  }
  /** Longest time between two consecutive deliveries. */
  get longestPause(): number {
    let max = 0;
    for (let i = 1; i < this.at.length; i++) max = Math.max(max, (this.at[i] as number) - (this.at[i - 1] as number));
    return max;
  }
}

describe('a rolling restart of three nodes on Redis behind nginx', () => {
  let redis: RedisServer;
  let cluster: Cluster;
  beforeAll(async () => {
    redis = await startRedis();
    cluster = await startCluster(redis.url, 3, ['--drain-window', '1000', '--poll-timeout', '2000', '--ping-interval', '2000', '--sse-heartbeat', '2000']);
  }, 60_000);
  afterAll(async () => {
    await cluster?.close();
    await redis?.stop();
  }, 30_000);

  it('every client ends with the full sequence while each node is restarted in turn', async () => {
    const channel = `rolling-${Date.now().toString(36)}`;
    const kinds: TransportName[] = ['websocket', 'sse', 'poll'];
    const clients: Client[] = kinds.flatMap((kind) => range(1, 3).map(() => testClient(cluster.url, kind, { backoff: { min: 50, max: 500 }, pollTimeout: 2000 })));
    const seen = clients.map((client) => {
      const s = new Seen();
      const sub = client.subscribe(channel);
      sub.on('message', (m) => s.add(m));
      sub.on('gap', (g) => s.gaps.push(g));
      return s;
    });
    const plain = range(1, 2).map(() => {
      const s = new Seen();
      const es = new EventSource(`${cluster.url}/sse?channel=${encodeURIComponent(channel)}`);
      es.addEventListener('message', (e: MessageEvent<string>) => s.add(JSON.parse(e.data) as Message));
      es.addEventListener('tidings:gap', (e: MessageEvent<string>) => s.gaps.push(JSON.parse(e.data) as Gap));
      es.addEventListener('tidings:error', (e: MessageEvent<string>) => s.notes.push(`${Date.now() % 100000} tidings:error ${e.data}`));
      es.addEventListener('error', (e: Event) => s.notes.push(`${Date.now() % 100000} error ${JSON.stringify(e)} state ${es.readyState}`));
      return { s, es };
    });
    const everyone = [...seen, ...plain.map((p) => p.s)];
    try {
      await until(() => clients.every((c) => c.state.status === 'connected'), 10_000, 'every client connected');
      await sleep(500);
      // A steady stream: one publication every 50 ms, each retried with its key until the cluster takes it.
      let n = 0;
      let stop = false;
      const publisher = (async (): Promise<void> => {
        while (!stop) {
          n += 1;
          for (;;) {
            try {
              await cluster.publish(channel, n, { idempotencyKey: `rolling-${n}` });
              break;
            } catch {
              await sleep(50);
            }
          }
          await sleep(50);
        }
      })();
      // One node at a time, each back in nginx's rotation (fail_timeout 2 s) before the next goes.
      for (const node of cluster.nodes) {
        await sleep(1000);
        const code = await node.stop();
        expect(code).toBe(0);
        await node.start();
        await sleep(2500);
      }
      await sleep(1000);
      stop = true;
      await publisher;
      const total = n;
      const names = [...kinds.flatMap((k) => [k, k, k]), 'EventSource', 'EventSource'];
      await until(() => everyone.every((s) => s.values.length >= total), 20_000, () =>
        `every client has the full sequence (${total}): ${everyone.map((s, i) => `${names[i] ?? '?'} ${s.values.length}`).join(', ')}; ${plain.map((p) => p.s.notes.join(' | ')).join(' || ')}`,
      );
      await sleep(300);
      for (const s of everyone) {
        expect(s.gaps).toEqual([]);
        expect(s.values).toEqual(range(1, total));
      }
      const pauses = everyone.map((s) => s.longestPause);
      console.log(`rolling restart: ${total} publications, ${everyone.length} clients, longest delivery pause ${Math.max(...pauses)} ms (median client ${pauses.sort((a, b) => a - b)[Math.floor(pauses.length / 2)]} ms)`);
    } finally {
      for (const c of clients) c.close();
      for (const p of plain) p.es.close();
    }
  }, 90_000);
});
