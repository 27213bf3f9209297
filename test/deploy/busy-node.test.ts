/**
 * The shipped nginx config does not take a busy node for a dead one. A node at its connection cap
 * answers a poll 503 (with when to come back); nginx counts a status it retries on (`proxy_next_upstream`)
 * as a failed attempt, and one failure (`max_fails=1`) takes a node out of every location for
 * `fail_timeout`: a healthy node would go dark for its WebSockets and streams too, and a reconnect
 * storm would pile onto the others. Two real gateways behind real nginx with the shipped locations.
 */
import { expect, it } from 'vitest';
import { cleanupAfterEach, RawWsClient, startClusterNginx, startGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();

it('a node refusing polls 503 at its connection cap stays in rotation: the 503 goes to the client, the node keeps its share', async () => {
  const busy = await startGateway({ nodeId: 'busy', maxConnections: 1, pollTimeout: 200 });
  cleanup.push(() => busy.close());
  const idle = await startGateway({ nodeId: 'idle', pollTimeout: 200 });
  cleanup.push(() => idle.close());
  // The busy node's one connection is taken: every new client connection there is refused 503.
  const holder = await RawWsClient.connect(busy.wsUrl);
  cleanup.push(() => holder.terminate());
  const nginx = await startClusterNginx([busy.port, idle.port]);
  cleanup.push(() => nginx.close());

  const polls: number[] = [];
  for (let i = 0; i < 6; i++) polls.push((await fetch(`${nginx.url}/poll?channel=news`)).status);
  // Some polls reached the busy node and were answered 503 there, with a Retry-After.
  expect(polls).toContain(503);
  // Within fail_timeout (2 s), the busy node still answers its share of requests through nginx.
  const nodes: string[] = [];
  for (let i = 0; i < 10; i++) nodes.push(((await (await fetch(`${nginx.url}/healthz`)).json()) as { node: string }).node);
  expect(nodes).toContain('busy');
});
