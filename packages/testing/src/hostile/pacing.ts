/**
 * Attacks in time: slowloris pacing of headers, bodies and WebSocket frames, and floods from
 * clients that never read.
 * @module
 */
import fc from 'fast-check';
import { clientFrame, Opcode } from '../raw-ws.js';
import { wsFramesAttackArb, wsJsonAttackArb } from './websocket.js';
import { bodyAttackArb, cursorAttackArb, headersArb, queryAttackArb, requestLineArb } from './http.js';
import { buildRequest, latin1, type Attack, type AttackClass, type HostileContext, type HttpAttack, type TimedWrite, type WsAttack, type WsStep } from './attack.js';
// ---------------------------------------------------------------------------------------------
// Slowloris

/** Margin over a timeout for the gateway's periodic check (`connectionsCheckingInterval`, at most 1 s) and scheduling. */
export function cutBound(timeoutMs: number): number {
  return timeoutMs + 2 * Math.min(1000, timeoutMs) + 1000;
}

/**
 * Slowloris pacing: headers dribbled a few bytes at a time (or never sent at all), bodies dribbled
 * after complete headers (by length and chunked), and a WebSocket frame dribbled by a peer that
 * never answers pings. The gateway must cut each at its timeout: 408 for HTTP, the heartbeat sweep
 * for WebSocket.
 */
export function slowlorisAttackArb(ctx: HostileContext): fc.Arbitrary<Attack> {
  const every = fc.integer({ min: 20, max: 150 });
  const chunk = fc.integer({ min: 1, max: 4 });
  /** Writes of `size` bytes every `ms` for a second past `limitMs`: what a request must be longer than, so it never completes in time. */
  const dribbled = (size: number, ms: number, limitMs: number): number => size * Math.ceil((limitMs + 1000) / ms);
  const dribble = (text: Buffer, size: number, ms: number, limitMs: number): TimedWrite[] => {
    const out: TimedWrite[] = [];
    const count = Math.ceil((limitMs + 1000) / ms);
    for (let i = 0; i < count; i++) {
      const part = text.subarray((i * size) % text.length, ((i * size) % text.length) + size);
      out.push({ delayMs: ms, bytes: part.length > 0 ? part : latin1('a') });
    }
    return out;
  };
  const headerCut = cutBound(ctx.headersTimeout);
  const bodyCut = cutBound(ctx.requestTimeout);
  const open = ctx.namespaces.open;
  const headers: fc.Arbitrary<Attack> = fc.tuple(fc.constantFrom('/healthz', `/sse?channel=${open}:slow`, `/poll?channel=${open}:slow`, '/ws', '/api/publish'), chunk, every).map(([path, size, ms]) => {
    // Longer than what can be dribbled before the cut (and, at up to ~3 KB, under the 16 KB header limit).
    const text = latin1(`GET ${path} HTTP/1.1\r\nhost: gateway\r\nx-pad: ${'a'.repeat(dribbled(size, ms, headerCut) + 500)}`);
    return { kind: 'http', cls: 'slowloris', label: `headers of GET ${path} at ${size} B / ${ms} ms`, writes: dribble(text, size, ms, headerCut), methods: ['GET'], owed: true, statuses: [408], cutWithinMs: headerCut } satisfies HttpAttack;
  });
  const silent: fc.Arbitrary<Attack> = fc.constantFrom('', 'G', 'GET / HTTP/1.1\r\n').map((start) => ({
    kind: 'http',
    cls: 'slowloris',
    label: `connection that sends ${JSON.stringify(start)} and then nothing`,
    writes: [{ delayMs: 0, bytes: latin1(start) }],
    methods: ['GET'],
    owed: true,
    statuses: [408],
    cutWithinMs: headerCut,
  }));
  const body: fc.Arbitrary<Attack> = fc.tuple(fc.constantFrom('/api/publish', '/send', '/rpc'), fc.boolean(), chunk, every).map(([path, chunked, size, ms]) => {
    // Longer than what can be dribbled before the cut: the body never completes in time.
    const length = dribbled(size, ms, bodyCut) + 500;
    const head = buildRequest(`POST ${path} HTTP/1.1`, ['host: gateway', `authorization: Bearer ${ctx.apiKey}`, 'content-type: application/json', chunked ? 'transfer-encoding: chunked' : `content-length: ${length}`]);
    const pieces = chunked ? latin1(`1\r\n \r\n`) : latin1(' '.repeat(64));
    return {
      kind: 'http',
      cls: 'slowloris',
      label: `${chunked ? 'chunked ' : ''}body of POST ${path} at ${size} B / ${ms} ms`,
      writes: [{ delayMs: 0, bytes: Buffer.concat([head, latin1(chunked ? 'b\r\n{"channel":\r\n' : '{"channel":')]) }, ...dribble(pieces, chunked ? pieces.length : size, ms, bodyCut)],
      methods: ['POST'],
      owed: true,
      statuses: [408],
      cutWithinMs: bodyCut,
    } satisfies HttpAttack;
  });
  const wsCut = 2 * ctx.pingInterval + 1500;
  const ws: fc.Arbitrary<Attack> = fc.tuple(chunk, fc.integer({ min: 100, max: 300 })).map(([size, ms]) => {
    // One frame, dribbled from its start and never finished within the window (so no frame ever completes).
    const count = Math.ceil((wsCut + 2000) / ms);
    const pad = Math.min(ctx.maxPayload - 40, size * count + 100);
    const frame = clientFrame(Opcode.text, `{"type":"ping","pad":"${'s'.repeat(pad)}"}`);
    const steps: WsStep[] = [];
    for (let i = 0; i < count && (i + 1) * size < frame.length; i++) steps.push({ delayMs: ms, bytes: frame.subarray(i * size, (i + 1) * size) });
    return { kind: 'ws', cls: 'slowloris', label: `WebSocket frame at ${size} B / ${ms} ms, no pongs`, path: '/ws', steps, end: 'destroy', cutWithinMs: wsCut } satisfies WsAttack;
  });
  return fc.oneof({ arbitrary: headers, weight: 3 }, { arbitrary: silent, weight: 1 }, { arbitrary: body, weight: 3 }, { arbitrary: ws, weight: 1 });
}

/**
 * Never-reading clients: a WebSocket client that sends megabytes of valid requests whose answers
 * are larger than they are (errors for unknown rpc methods and for unsubscribing what was never
 * subscribed), or that resumes a channel of large publications from its start and publishes
 * megabytes into it (all of which come back to it), and reads nothing until the gateway has worked
 * through it all. What the gateway owes it is twice what the kernel buffers on both ends can hold
 * (about 4.5 MiB on loopback) plus the gateway's bound, so a gateway that bounds what it writes
 * must shed it, and the client must never receive more than those buffers and the bound
 * (`mustBeShed`).
 */
export function floodAttackArb(ctx: HostileContext): fc.Arbitrary<WsAttack> {
  /** MiB of answers owed: twice the kernel's buffers on loopback (about 4.5 MiB) plus the gateway's bound. */
  const owed = 2 * (4.5 + (ctx.maxBufferedBytes ?? 64 * 1024) / 1024 / 1024);
  /** Requests whose answers are bigger than they are (about 2.4 and 1.8 times), and how many MiB of them it takes. */
  const kinds: Array<{ make: (i: number) => string; mib: number }> = [
    { make: (i) => `{"type":"rpc","id":${i},"method":"m${i % 10}"}`, mib: owed / 2.3 },
    { make: (i) => `{"type":"unsubscribe","id":${i},"channel":"c${i % 10}"}`, mib: owed / 1.7 },
  ];
  const flood = (label: string, steps: WsStep[]): WsAttack => ({ kind: 'ws', cls: 'flood', label, path: '/ws', steps, end: 'destroy', pauseReadingMs: ctx.floodPauseMs ?? 2000, mustBeShed: true });
  const plain: fc.Arbitrary<WsAttack> = fc.tuple(fc.constantFrom(...kinds), fc.double({ min: 1, max: 1.25, noNaN: true })).map(([{ make, mib }, factor]) => {
    // One batch of frames, written again and again: the same bytes, so building it is cheap.
    const batch = Buffer.concat(Array.from({ length: 1000 }, (_, i) => clientFrame(Opcode.text, make(i))));
    const count = Math.ceil((mib * factor * 1024 * 1024) / batch.length);
    return flood(
      `never-reading client sending ${Math.round((count * batch.length) / 1024)} KiB of ${make(0)}`,
      Array.from({ length: count }, () => ({ delayMs: 0, bytes: batch })),
    );
  });
  const { bulky } = ctx;
  if (bulky === undefined) return plain;
  // Resume a channel of large publications from its start (its whole history comes back), then
  // publish into it: every publication comes back too. Nothing here depends on timing.
  const since = JSON.stringify({ epoch: bulky.epoch, seq: 0 });
  const sub = clientFrame(Opcode.text, `{"type":"subscribe","channel":"${bulky.channel}","since":${since}}`);
  // The whole frame must stay within maxPayload: the data leaves room for the frame's own JSON.
  const pub = clientFrame(Opcode.text, `{"type":"publish","message":{"channel":"${bulky.channel}","data":"${'f'.repeat(ctx.maxPayload - 200)}"}}`);
  const batch = Buffer.concat(Array.from({ length: 16 }, () => pub));
  const replay: fc.Arbitrary<WsAttack> = fc.integer({ min: Math.ceil(owed), max: Math.ceil(owed * 1.2) }).map((mib) =>
    flood(`never-reading client resuming ${bulky.channel} from seq 0 and publishing ${mib} MiB into it`, [
      { delayMs: 0, bytes: sub },
      ...Array.from({ length: Math.ceil((mib * 1024 * 1024) / batch.length) }, () => ({ delayMs: 0, bytes: batch })),
    ]),
  );
  return fc.oneof(plain, replay);
}

/** The arbitrary of each attack class. */
export function hostileArbitraries(ctx: HostileContext): Record<AttackClass, fc.Arbitrary<Attack>> {
  return {
    'request-line': requestLineArb(ctx),
    headers: headersArb(ctx),
    query: queryAttackArb(ctx),
    cursor: cursorAttackArb(ctx),
    body: bodyAttackArb(ctx),
    'ws-frames': wsFramesAttackArb(ctx),
    'ws-json': wsJsonAttackArb(ctx),
    slowloris: slowlorisAttackArb(ctx),
    flood: floodAttackArb(ctx),
  };
}

