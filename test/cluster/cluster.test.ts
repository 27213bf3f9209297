/**
 * Three gateway processes on one broker, behind nginx with the shipped config (no stickiness), for
 * every shared broker: one order for clients on different nodes; a node killed with SIGKILL
 * mid-stream, its clients (the SDK over each transport, and a plain EventSource) resuming on the
 * others with nothing lost; the broker restarted mid-stream, every client getting everything or an
 * explicit gap; two nodes racing one idempotency key publishing once.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventSource } from 'eventsource';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client, TransportName } from '@tidings/client';
import { parseCursor, type Gap, type Message } from '@tidings/protocol';
import { RawWsClient, startCluster, startNats, startRedis, startRedisCluster, testClient, TEST_API_KEY, until, type Cluster } from '@tidings/testing';

interface BrokerServer {
  readonly url: string;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const BROKERS: Array<[string, () => Promise<BrokerServer>]> = [
  ['redis', () => startRedis()],
  ['a redis cluster (3 masters)', () => startRedisCluster(3)],
  ['nats', () => startNats()],
];

/** Presence entries of a node that stops refreshing them expire within this (and the broker's sweep). */
const PRESENCE_TTL = 3000;

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What one client saw of one channel, in order. */
class Seen {
  readonly messages: Message[] = [];
  readonly gaps: Gap[] = [];
  /** Data values (the publisher's counter) in arrival order. */
  get values(): number[] {
    return this.messages.map((m) => m.data as number);
  }
}

function watchClient(client: Client, channel: string): Seen {
  const seen = new Seen();
  const sub = client.subscribe(channel);
  sub.on('message', (m) => seen.messages.push(m));
  sub.on('gap', (g) => seen.gaps.push(g));
  return seen;
}

/** A plain EventSource (the `eventsource` package), resuming by itself with Last-Event-ID. */
function watchEventSource(url: string, channel: string): { seen: Seen; es: EventSource } {
  const seen = new Seen();
  const es = new EventSource(`${url}/sse?channel=${encodeURIComponent(channel)}`);
  es.addEventListener('message', (e: MessageEvent<string>) => seen.messages.push(JSON.parse(e.data) as Message));
  es.addEventListener('tidings:gap', (e: MessageEvent<string>) => seen.gaps.push(JSON.parse(e.data) as Gap));
  return { seen, es };
}

/** Publishes 1..count through the cluster, retrying each until the cluster takes it (same idempotency key, so never twice). */
async function publishSteadily(cluster: Cluster, channel: string, from: number, count: number, everyMs: number, key: string): Promise<void> {
  for (let n = from; n < from + count; n++) {
    for (;;) {
      try {
        await cluster.publish(channel, n, { idempotencyKey: `${key}-${n}` });
        break;
      } catch {
        await sleep(50);
      }
    }
    await sleep(everyMs);
  }
}

/** Waits until every node answers /readyz 200 (its broker is up). */
async function waitReady(cluster: Cluster): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (const node of cluster.nodes) {
    for (;;) {
      const ok = await fetch(`${node.url}/readyz`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`${node.id} not ready within 20 s`);
      await sleep(100);
    }
  }
}

describe.each(BROKERS)('a cluster of three nodes on %s behind nginx', (_kind, startBroker) => {
  let broker: BrokerServer;
  let cluster: Cluster;
  let run = 0;
  const channel = (label: string): string => `${label}-${Date.now().toString(36)}-${++run}`;

  beforeAll(async () => {
    broker = await startBroker();
    const config = join(mkdtempSync(join(tmpdir(), 'tidings-cluster-')), 'tidings.json');
    writeFileSync(config, JSON.stringify({ namespaces: { room: { presence: true } } }));
    cluster = await startCluster(broker.url, 3, ['--config', config, '--presence-ttl', String(PRESENCE_TTL), '--poll-timeout', '2000', '--ping-interval', '2000', '--sse-heartbeat', '2000']);
  }, 60_000);
  afterAll(async () => {
    await cluster.close();
    await broker.stop();
  }, 30_000);

  it('gives clients on different nodes every message of a shared channel in one order', async () => {
    const c = channel('shared');
    const clients = await Promise.all(cluster.nodes.map((n) => RawWsClient.connect(`ws://127.0.0.1:${n.port}/ws`)));
    try {
      for (const client of clients) expect((await client.request({ type: 'subscribe', channel: c })).type).toBe('reply');
      // Published through every node in turn, concurrently: the broker alone decides the order.
      await Promise.all(range(1, 60).map((n) => cluster.publish(c, n, {}, cluster.nodes[n % 3]?.url)));
      for (const client of clients) await client.until((x) => x.ofType('message').length === 60, 10_000);
      const orders = clients.map((client) => client.ofType('message').map((f) => `${f.message.position.seq}:${JSON.stringify(f.message.data)}`));
      expect(orders[1]).toEqual(orders[0]);
      expect(orders[2]).toEqual(orders[0]);
      expect(clients[0]?.ofType('message').map((f) => f.message.position.seq)).toEqual(range(1, 60));
    } finally {
      for (const client of clients) client.terminate();
    }
  }, 30_000);

  it('resumes the clients of a node killed mid-stream on the others, with nothing lost', async () => {
    const c = channel('killed');
    const kinds: TransportName[] = ['websocket', 'sse', 'poll'];
    // Several clients per transport through nginx (least_conn spreads them over the nodes).
    const clients = kinds.flatMap((kind) => range(1, 3).map(() => testClient(cluster.url, kind, { backoff: { min: 50, max: 500 }, pollTimeout: 2000 })));
    const seen = clients.map((client) => watchClient(client, c));
    const plain = range(1, 2).map(() => watchEventSource(cluster.url, c));
    const victim = cluster.nodes[0];
    try {
      await until(() => clients.every((client) => client.state.status === 'connected'), 10_000, 'every client connected');
      await sleep(300);
      // The node about to die holds some of these clients (nginx spreads them).
      const held = (await (await fetch(`${victim?.url ?? ''}/healthz`)).json()) as { connections: Record<string, number> };
      expect(Object.values(held.connections).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
      const total = 120;
      const publishing = publishSteadily(cluster, c, 1, total, 10, c);
      await sleep(400);
      await victim?.kill();
      await publishing;
      const all = [...seen, ...plain.map((p) => p.seen)];
      await until(() => all.every((s) => s.messages.length >= total), 20_000, 'every client got every message');
      for (const s of all) {
        expect(s.gaps).toEqual([]);
        expect(s.values).toEqual(range(1, total));
      }
    } finally {
      for (const client of clients) client.close();
      for (const p of plain) p.es.close();
      await victim?.start();
    }
  }, 60_000);

  it('after a broker restart mid-stream, every client gets everything or an explicit gap', async () => {
    const c = channel('restart');
    const kinds: TransportName[] = ['websocket', 'sse', 'poll'];
    const clients = kinds.map((kind) => testClient(cluster.url, kind, { backoff: { min: 50, max: 500 }, pollTimeout: 2000 }));
    const seen = clients.map((client) => watchClient(client, c));
    try {
      await until(() => clients.every((client) => client.state.status === 'connected'), 10_000, 'every client connected');
      await sleep(300);
      const total = 80;
      const publishing = publishSteadily(cluster, c, 1, total, 10, c);
      await sleep(300);
      await broker.restart();
      await publishing;
      await until(() => seen.every((s) => s.values.includes(total)), 30_000, 'every client got the last message');
      for (const s of seen) {
        // In order, each once; every discontinuity (the store lost data) is announced by a gap.
        const values = s.values;
        expect(new Set(values).size).toBe(values.length);
        expect([...values].sort((a, b) => a - b)).toEqual(values);
        const positions = s.messages.map((m) => m.position);
        for (let i = 1; i < positions.length; i++) {
          const a = positions[i - 1];
          const b = positions[i];
          if (a === undefined || b === undefined) continue;
          const continuous = a.epoch === b.epoch && b.seq === a.seq + 1;
          if (!continuous) expect(s.gaps.some((g) => g.to.epoch === b.epoch && g.to.seq === b.seq - 1), `gap before ${JSON.stringify(b)}`).toBe(true);
        }
        if (s.gaps.length === 0) expect(values).toEqual(range(1, total));
      }
    } finally {
      for (const client of clients) client.close();
    }
  }, 90_000);

  it('publishes once when two nodes race one idempotency key', async () => {
    // After the broker restart above, every node is back on the broker before the race starts.
    await waitReady(cluster);
    const c = channel('race');
    const [a, b] = cluster.nodes;
    const results = await Promise.all(
      range(1, 20).flatMap((n) => [a, b].map((node) => cluster.publish(c, n, { idempotencyKey: `race-${n}` }, node?.url))),
    );
    for (let n = 0; n < 20; n++) {
      const pair = [results[2 * n], results[2 * n + 1]];
      expect(pair[0]?.position).toEqual(pair[1]?.position);
      expect(pair.filter((r) => r?.duplicate === false)).toHaveLength(1);
    }
    const history = await fetch(`${cluster.url}/poll?channel=${c}&cursor=${encodeURIComponent(`${c}=${results[0]?.position.epoch ?? ''}.0`)}&timeout=0`);
    const body = (await history.json()) as { messages: Message[]; cursor: string };
    // Each key published once, at the position both racers were told (the order across keys is the broker's).
    expect(body.messages.map((m) => m.position.seq)).toEqual(range(1, 20));
    expect(body.messages.map((m) => m.data as number).sort((x, y) => x - y)).toEqual(range(1, 20));
    for (const m of body.messages) expect(results[2 * ((m.data as number) - 1)]?.position).toEqual(m.position);
    expect(parseCursor(body.cursor).get(c)?.seq).toBe(20);
  }, 30_000);

  it('expires the presence entries of a killed node within the bound, and announces their leave', async () => {
    const c = `room:${channel('presence')}`;
    const [, survivorNode, doomedNode] = cluster.nodes;
    const survivor = await RawWsClient.connect(`ws://127.0.0.1:${survivorNode?.port ?? 0}/ws`);
    const doomed = await RawWsClient.connect(`ws://127.0.0.1:${doomedNode?.port ?? 0}/ws`);
    try {
      expect((await survivor.request({ type: 'subscribe', channel: c })).type).toBe('reply');
      expect((await doomed.request({ type: 'subscribe', channel: c })).type).toBe('reply');
      const doomedId = doomed.ofType('welcome')[0]?.session;
      await survivor.until((x) => x.frames.some((f) => f.type === 'join' && f.client.client === doomedId), 5000);
      const killedAt = Date.now();
      await doomedNode?.kill();
      await survivor.until((x) => x.frames.some((f) => f.type === 'leave' && f.client.client === doomedId), PRESENCE_TTL + 5000);
      expect(Date.now() - killedAt).toBeLessThan(PRESENCE_TTL + 5000);
      const listed = await fetch(`${cluster.url}/api/presence?channel=${encodeURIComponent(c)}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
      const body = (await listed.json()) as { clients: Array<{ client: string; node: string }> };
      expect(body.clients.map((e) => e.node)).toEqual([survivorNode?.id]);
    } finally {
      survivor.terminate();
      doomed.terminate();
      await doomedNode?.start();
    }
  }, 40_000);

  it('gives a node restarted with its id new session ids: a leftover entry of its last life is another client', async () => {
    const c = `room:${channel('restarted-id')}`;
    const [, watcherNode, node] = cluster.nodes;
    const watcher = await RawWsClient.connect(`ws://127.0.0.1:${watcherNode?.port ?? 0}/ws`);
    const ids: string[] = [];
    try {
      expect((await watcher.request({ type: 'subscribe', channel: c })).type).toBe('reply');
      // Twice: the first session of a fresh process, killed, then the first session of the next one.
      for (let life = 0; life < 2; life++) {
        await node?.kill();
        await node?.start();
        const client = await RawWsClient.connect(`ws://127.0.0.1:${node?.port ?? 0}/ws`);
        const id = client.ofType('welcome')[0]?.session ?? '';
        ids.push(id);
        expect((await client.request({ type: 'subscribe', channel: c })).type).toBe('reply');
        await watcher.until((x) => x.frames.some((f) => f.type === 'join' && f.client.client === id), 5000);
        client.terminate();
      }
      expect(ids[1]).not.toBe(ids[0]);
    } finally {
      watcher.terminate();
    }
  }, 60_000);

  it('lists present clients again after the broker restarted without its data', async () => {
    const c = `room:${channel('presence-restart')}`;
    const client = await RawWsClient.connect(`ws://127.0.0.1:${cluster.nodes[0]?.port ?? 0}/ws`);
    const listed = async (): Promise<string[]> => {
      const res = await fetch(`${cluster.url}/api/presence?channel=${encodeURIComponent(c)}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
      if (!res.ok) return [];
      return ((await res.json()) as { clients: Array<{ client: string }> }).clients.map((e) => e.client);
    };
    try {
      expect((await client.request({ type: 'subscribe', channel: c })).type).toBe('reply');
      const id = client.ofType('welcome')[0]?.session ?? '';
      await until(() => false, 200).catch(() => undefined);
      expect(await listed()).toEqual([id]);
      await broker.restart();
      const deadline = Date.now() + 20_000;
      let now: string[] = [];
      while (Date.now() < deadline) {
        now = await listed().catch(() => []);
        if (now.includes(id)) break;
        await sleep(200);
      }
      expect(now).toEqual([id]);
    } finally {
      client.terminate();
    }
  }, 40_000);
});
