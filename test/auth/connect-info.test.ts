/**
 * What an authentication hook sees of a connection attempt, on every transport: the transport, the
 * headers, the URL and the client's address (looked up when the hook reads it).
 */
import { describe, expect, it } from 'vitest';
import type { Authenticator, ConnectInfo } from '@tidings/server';
import { cleanupAfterEach, RawWsClient, startGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();

describe('ConnectInfo', () => {
  it('gives the hook the transport, headers, URL and remote address of WebSocket, SSE and long-poll attempts', async () => {
    const seen: Array<Pick<ConnectInfo, 'transport' | 'remoteAddress'> & { channel: string | null; agent: string | undefined }> = [];
    const auth: Authenticator = {
      connect: (info) => {
        seen.push({ transport: info.transport, remoteAddress: info.remoteAddress, channel: info.url.searchParams.get('channel'), agent: info.headers['user-agent'] });
        return Promise.resolve({ user: 'u', anonymous: false });
      },
      canSubscribe: () => true,
      canPublish: () => true,
    };
    const gw = await startGateway({}, { auth });
    cleanup.push(() => gw.close());
    const ws = await RawWsClient.connect(`${gw.wsUrl}?channel=news`, { headers: { 'user-agent': 'probe-ws' } });
    cleanup.push(() => ws.terminate());
    const sse = new AbortController();
    cleanup.push(() => sse.abort());
    const stream = await fetch(`${gw.url}/sse?channel=news`, { headers: { 'user-agent': 'probe-sse' }, signal: sse.signal });
    expect(stream.status).toBe(200);
    const poll = await fetch(`${gw.url}/poll?channel=news&timeout=0`, { headers: { 'user-agent': 'probe-poll' } });
    expect(poll.status).toBe(200);
    expect(seen).toEqual([
      { transport: 'websocket', remoteAddress: '127.0.0.1', channel: 'news', agent: 'probe-ws' },
      { transport: 'sse', remoteAddress: '127.0.0.1', channel: 'news', agent: 'probe-sse' },
      { transport: 'poll', remoteAddress: '127.0.0.1', channel: 'news', agent: 'probe-poll' },
    ]);
  });

  it('is logged whole: serialised, it has the transport, headers, URL and address', async () => {
    const logged: unknown[] = [];
    const auth: Authenticator = {
      connect: (info) => {
        logged.push(JSON.parse(JSON.stringify(info)));
        return Promise.resolve({ user: 'u', anonymous: false });
      },
      canSubscribe: () => true,
      canPublish: () => true,
    };
    const gw = await startGateway({}, { auth });
    cleanup.push(() => gw.close());
    const poll = await fetch(`${gw.url}/poll?channel=news&timeout=0`, { headers: { 'user-agent': 'probe-log' } });
    expect(poll.status).toBe(200);
    expect(logged).toEqual([
      expect.objectContaining({
        transport: 'poll',
        remoteAddress: '127.0.0.1',
        url: `http://gateway/poll?channel=news&timeout=0`,
        headers: expect.objectContaining({ 'user-agent': 'probe-log' }) as unknown,
      }),
    ]);
  });
});
