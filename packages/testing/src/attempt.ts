/**
 * One subscription attempt on one transport, reduced to what a security test compares: admitted
 * (subscribed), or refused, and how (HTTP status and error code, WebSocket close code, or an `error`
 * frame for the subscribe). Credentials go where a browser would put them: the `token` query
 * parameter (WebSocket, SSE), the bearer header (long polling, SSE with `header`), or a cookie; an
 * `origin` is sent as the Origin header.
 * @module
 */
import WebSocket from 'ws';

export type AttemptTransport = 'websocket' | 'sse' | 'poll';

export interface AttemptOptions {
  readonly token?: string;
  /** Send the token as `Authorization: Bearer` rather than the `token` query parameter (not on WebSocket). */
  readonly header?: boolean;
  /** A raw Cookie header. */
  readonly cookie?: string;
  readonly origin?: string;
  /** The `X-Forwarded-For` header: the client's address to a gateway that trusts its proxy. */
  readonly forwardedFor?: string;
}

export type AttemptOutcome =
  | { readonly result: 'subscribed' }
  | { readonly result: 'http'; readonly status: number; readonly code: string | undefined }
  | { readonly result: 'close'; readonly code: number }
  | { readonly result: 'error'; readonly code: string };

const codeOf = (body: string): string | undefined => {
  try {
    return (JSON.parse(body) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
};

export async function attemptSubscribe(baseUrl: string, transport: AttemptTransport, channel: string, opts: AttemptOptions = {}): Promise<AttemptOutcome> {
  const headers: Record<string, string> = {};
  if (opts.cookie !== undefined) headers.cookie = opts.cookie;
  if (opts.origin !== undefined) headers.origin = opts.origin;
  if (opts.forwardedFor !== undefined) headers['x-forwarded-for'] = opts.forwardedFor;
  const useHeader = opts.token !== undefined && (opts.header === true || transport === 'poll');
  if (useHeader) headers.authorization = `Bearer ${opts.token ?? ''}`;
  const tokenQuery = opts.token !== undefined && !useHeader ? `token=${encodeURIComponent(opts.token)}&` : '';

  if (transport === 'websocket') return attemptWs(`${baseUrl.replace(/^http/, 'ws')}/ws?${tokenQuery}`, channel, headers);
  const path = transport === 'sse' ? '/sse' : '/poll';
  const url = `${baseUrl}${path}?${tokenQuery}channel=${encodeURIComponent(channel)}${transport === 'poll' ? '&timeout=0' : ''}`;
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 5000);
  try {
    const res = await fetch(url, { headers, signal: ac.signal });
    if (res.status !== 200) return { result: 'http', status: res.status, code: codeOf(await res.text()) };
    if (transport === 'poll') {
      await res.text();
      return { result: 'subscribed' };
    }
    // SSE: every channel is subscribed before the stream opens with its welcome (or says why not).
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let text = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      const error = /event: tidings:error\ndata: (.*)\n/.exec(text);
      if (error?.[1] !== undefined) return { result: 'error', code: (JSON.parse(error[1]) as { code: string }).code };
      if (text.includes('event: tidings:welcome')) return { result: 'subscribed' };
    }
    return { result: 'close', code: 0 };
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

function attemptWs(url: string, channel: string, headers: Record<string, string>): Promise<AttemptOutcome> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers });
    const done = (outcome: AttemptOutcome): void => {
      clearTimeout(timer);
      ws.removeAllListeners();
      ws.on('error', () => undefined);
      ws.terminate();
      resolve(outcome);
    };
    const timer = setTimeout(() => done({ result: 'close', code: 0 }), 5000);
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => done({ result: 'http', status: res.statusCode ?? 0, code: codeOf(body) }));
    });
    ws.on('open', () => ws.send(JSON.stringify({ type: 'subscribe', id: 1, channel })));
    ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as { type: string; id?: number; error?: { code: string } };
      if (frame.type === 'reply' && frame.id === 1) done({ result: 'subscribed' });
      if (frame.type === 'error' && frame.id === 1) done({ result: 'error', code: frame.error?.code ?? '' });
    });
    ws.on('close', (code) => done({ result: 'close', code }));
    ws.on('error', () => done({ result: 'close', code: 0 }));
  });
}
