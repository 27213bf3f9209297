/**
 * A reconnect storm: 5,000 SDK clients (WebSocket) connected to one gateway process, all cut at once
 * (the process is killed and started again on the same port). They come back through admission
 * control: the node's accept rate stays at its cap (`--max-connect-rate 1000`), `/healthz` answers
 * throughout, and every client is back and receives the next publication. The time to full recovery
 * and the node's peak event-loop delay are reported.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@tidings/client';
import { gatewayNode, postOnce, testClient, until, type GatewayNode } from '@tidings/testing';

const CLIENTS = 5000;
const RATE = 1000;

interface Health {
  readonly ok: boolean;
  readonly ms: number;
  readonly connections: number;
  readonly loopMaxMs: number;
}

async function health(url: string): Promise<Health> {
  const started = Date.now();
  try {
    const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json()) as { connections: Record<string, number>; eventLoopDelayMs: { max: number } };
    const connections = Object.values(body.connections).reduce((a, b) => a + b, 0);
    return { ok: res.status === 200, ms: Date.now() - started, connections, loopMaxMs: body.eventLoopDelayMs.max };
  } catch {
    return { ok: false, ms: Date.now() - started, connections: 0, loopMaxMs: 0 };
  }
}

describe('a reconnect storm', () => {
  let node: GatewayNode;
  const clients: Client[] = [];
  beforeAll(async () => {
    node = await gatewayNode({ broker: 'memory', id: 'storm', flags: ['--max-connect-rate', String(RATE), '--max-connections-per-ip', '0', '--max-connect-rate-per-ip', '0', '--drain-window', '0', '--ping-interval', '10000'] });
    await node.start();
  }, 30_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    await node?.kill();
  }, 30_000);

  it(`brings ${CLIENTS} clients cut at once back at the node's accept rate, with /healthz answering throughout`, async () => {
    const received: number[] = new Array<number>(CLIENTS).fill(0);
    for (let i = 0; i < CLIENTS; i++) {
      const client = testClient(node.url, 'websocket', { backoff: { min: 200, max: 3000 }, heartbeatSlack: 5000 });
      client.subscribe('storm').on('message', () => (received[i] = (received[i] ?? 0) + 1));
      clients.push(client);
    }
    await until(() => clients.every((c) => c.state.status === 'connected'), 60_000, 'every client connected');

    // Cut everyone at once: the process dies and comes back on the same port.
    await node.kill();
    const cutAt = Date.now();
    await node.start();
    const samples: Array<Health & { at: number }> = [];
    for (;;) {
      const h = await health(node.url);
      samples.push({ ...h, at: Date.now() - cutAt });
      if (h.connections >= CLIENTS) break;
      if (Date.now() - cutAt > 60_000) throw new Error(`not every client came back within 60 s: ${h.connections}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const recoveredMs = Date.now() - cutAt;
    await until(() => clients.every((c) => c.state.status === 'connected'), 10_000, 'every client reports connected');
    // Every client is subscribed again: the next publication reaches all of them.
    const published = await postOnce(`${node.url}/api/publish`, JSON.stringify({ channel: 'storm', data: 'after' }));
    expect(published.status).toBe(200);
    await until(() => received.every((n) => n >= 1), 15_000, 'every client received the publication after the storm');

    const slowestHealth = Math.max(...samples.map((s) => s.ms));
    const peakLoop = Math.max(...samples.map((s) => s.loopMaxMs));
    console.log(
      `storm: ${CLIENTS} clients back in ${(recoveredMs / 1000).toFixed(1)} s at a cap of ${RATE}/s; /healthz slowest ${slowestHealth} ms over ${samples.length} checks; peak event-loop delay ${peakLoop.toFixed(1)} ms; connections by time: ${samples.filter((_, i) => i % 5 === 0).map((s) => `${(s.at / 1000).toFixed(1)}s=${s.connections}`).join(' ')}`,
    );
    // /healthz answered every time. It is timed from this process, which also runs the 5,000 clients, so
    // its latency is mostly ours; the node's own event-loop delay below is what the node was doing.
    expect(samples.every((s) => s.ok)).toBe(true);
    expect(slowestHealth).toBeLessThan(5000);
    // Admitted at the cap: never more than the bucket (RATE) plus RATE per second since the restart.
    for (const s of samples) expect(s.connections).toBeLessThanOrEqual(RATE + Math.ceil((s.at / 1000) * RATE * 1.1) + 50);
    expect(recoveredMs).toBeGreaterThan(((CLIENTS - RATE) / RATE) * 1000 * 0.9);
    // The node's own loop was never stalled for long while it shed the excess. The longest stall is
    // the first turn after the restart, which takes a listen backlog's worth of handshakes at once
    // (200-500 ms alone on this kind of machine); other test files share its two cores in a full run.
    expect(peakLoop).toBeLessThan(1500);
  }, 150_000);
});
