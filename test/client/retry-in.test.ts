/**
 * The `state` event says when the next attempt comes: entering `waiting` carries `retryIn` (ms),
 * within the backoff bounds, so an application can show "retrying in N s".
 */
import { describe, expect, it } from 'vitest';
import { createClient, type StateChange } from '@tidings/client';
import { freePort } from '@tidings/testing';

describe('retryIn', () => {
  it('is on every change into waiting, within the backoff, and on no other', async () => {
    const port = await freePort();
    const client = createClient(`http://127.0.0.1:${port}`, { transports: ['sse'], storage: null, backoff: { min: 100, max: 400, factor: 2 } });
    const changes: StateChange[] = [];
    client.on('state', (c) => changes.push(c));
    client.subscribe('news');
    const deadline = Date.now() + 10_000;
    while (changes.filter((c) => c.to.status === 'waiting').length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    client.close();
    const waits = changes.filter((c) => c.to.status === 'waiting');
    expect(waits.length).toBeGreaterThanOrEqual(3);
    for (const w of waits) {
      expect(typeof w.retryIn).toBe('number');
      expect(w.retryIn).toBeGreaterThanOrEqual(0);
      expect(w.retryIn).toBeLessThanOrEqual(400);
    }
    expect(changes.filter((c) => c.to.status !== 'waiting').every((c) => c.retryIn === undefined)).toBe(true);
  });
});
