/**
 * WebSocket attacks: frames at the byte level (fragments, invalid UTF-8, reserved bits, unmasked,
 * lying lengths, oversized) and valid-but-hostile protocol frames.
 * @module
 */
import fc from 'fast-check';
import { parseJson, type RequestId } from '@tidings/protocol';
import { clientFrame, Opcode } from '../raw-ws.js';
import { channels, cursorArb, positions } from './values.js';
import { ALNUM, mutationArb, stringOf, type HostileContext, type WsAttack, type WsStep } from './attack.js';
import { publicationArb, queryArb } from './http.js';
// ---------------------------------------------------------------------------------------------
// WebSocket

const CLOSE_CODES_VALID = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999];
const CLOSE_CODES_INVALID = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535];

/** A frame body for the protocol: the JSON object before the id is filled in, and whether it carries one. */
interface JsonFrame {
  readonly value: Record<string, unknown>;
  /** Give it a unique integer id (owed one reply), none, or a hostile one (no reply can be matched). */
  readonly id: 'unique' | 'none' | { readonly hostile: unknown };
}

/** Valid-but-hostile protocol frames, and malformed ones. */
function jsonFrameArb(ctx: HostileContext): fc.Arbitrary<JsonFrame> {
  const ch = channels(ctx);
  const pos = positions(ctx);
  const idMode = fc.oneof(
    { arbitrary: fc.constant<'unique'>('unique'), weight: 8 },
    { arbitrary: fc.constant<'none'>('none'), weight: 2 },
    { arbitrary: fc.constantFrom(1.5, -0.5, '', 'x'.repeat(65), null, {}, [], true, 2 ** 53).map((hostile) => ({ hostile })), weight: 1 },
  );
  const subscribe = fc.record({ channel: ch.any, since: fc.option(pos.any, { nil: undefined }) }).map((f) => ({ type: 'subscribe', ...f }));
  const unsubscribe = ch.any.map((channel) => ({ type: 'unsubscribe', channel }));
  const publish = publicationArb(ctx).map((message) => ({ type: 'publish', message }));
  const rpc = fc
    .record({ method: fc.oneof(fc.constantFrom(...ctx.rpcMethods, 'nope', 'toString', '__proto__', 'x'.repeat(65), 1), stringOf(`${ALNUM}_.-/`, 1, 64)), data: fc.option(fc.jsonValue({ maxDepth: 3 }), { nil: undefined }) })
    .map((f) => ({ type: 'rpc', ...f }));
  const ping = fc.constant({ type: 'ping' });
  const junk = fc.oneof(
    fc.constantFrom({ type: 'nope' }, { type: '' }, { type: 1 }, { type: null }, {}, { type: 'welcome' }, { type: 'reply', result: {} }, { type: 'message', message: {} }, { type: 'subscribe' }, { type: 'publish' }, { type: 'rpc' }),
    fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 4 }),
  );
  const value = fc.oneof({ arbitrary: subscribe, weight: 4 }, { arbitrary: unsubscribe, weight: 2 }, { arbitrary: publish, weight: 3 }, { arbitrary: rpc, weight: 2 }, { arbitrary: ping, weight: 2 }, { arbitrary: junk, weight: 2 });
  return fc.tuple(value, idMode).map(([v, id]) => ({ value: v, id }));
}

/** Whether the protocol reads `text` as JSON at all (it refuses, among others, integers beyond 2^53 that `JSON.stringify` writes for large doubles). */
function readable(text: string): boolean {
  try {
    parseJson(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * A frame's text with its id; `replyId` when a reply with that id is owed: the frame has a usable
 * id and is readable JSON (an unreadable frame's error cannot carry an id, see protocol.md).
 */
function frameText(frame: JsonFrame, nextId: () => number): { text: string; replyId?: RequestId } {
  if (frame.id === 'none') return { text: JSON.stringify(frame.value) };
  if (frame.id === 'unique') {
    const id = nextId();
    const text = JSON.stringify({ ...frame.value, id });
    return readable(text) ? { text, replyId: id } : { text };
  }
  return { text: JSON.stringify({ ...frame.value, id: frame.id.hostile }) };
}

/** Splits `payload` into `n` fragments: text (or binary) first, continuations after, FIN on the last. */
function fragments(opcode: number, payload: Buffer, n: number, interleave?: Buffer): Buffer[] {
  const size = Math.max(1, Math.ceil(payload.length / n));
  const parts: Buffer[] = [];
  for (let i = 0; i < payload.length || i === 0; i += size) parts.push(payload.subarray(i, i + size));
  const out: Buffer[] = [];
  parts.forEach((part, i) => {
    out.push(clientFrame(i === 0 ? opcode : Opcode.continuation, part, { fin: i === parts.length - 1 }));
    if (interleave !== undefined && i === 0 && parts.length > 1) out.push(interleave);
  });
  return out;
}

/** Byte sequences that are not valid UTF-8. */
const INVALID_UTF8 = [[0xff], [0xfe, 0xff], [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]].map((b) => Buffer.from(b));

type FrameGen = (nextId: () => number) => WsStep[];

/**
 * WebSocket frames at the byte level: whole and fragmented text (in order, with control frames
 * between fragments, and out of order), binary, invalid UTF-8 (also split across fragments),
 * reserved bits and opcodes, unmasked frames, lying lengths, oversized payloads, control frames
 * that are too long or fragmented, and close frames with valid and invalid codes and reasons.
 */
export function wsFramesAttackArb(ctx: HostileContext): fc.Arbitrary<WsAttack> {
  const json = jsonFrameArb(ctx);
  const step = (bytes: Buffer, extra: Partial<WsStep> = {}): WsStep => ({ delayMs: 0, bytes, ...extra });
  const whole: fc.Arbitrary<FrameGen> = json.map((f) => (next) => {
    const { text, replyId } = frameText(f, next);
    return [step(clientFrame(Opcode.text, text), replyId === undefined ? {} : { replyIds: [replyId] })];
  });
  const fragmented: fc.Arbitrary<FrameGen> = fc.tuple(json, fc.integer({ min: 2, max: 6 }), fc.boolean()).map(([f, n, ping]) => (next) => {
    const { text, replyId } = frameText(f, next);
    const frames = fragments(Opcode.text, Buffer.from(text, 'utf8'), n, ping ? clientFrame(Opcode.ping, 'between') : undefined);
    return frames.map((b, i) => step(b, i === frames.length - 1 && replyId !== undefined ? { replyIds: [replyId] } : {}));
  });
  const outOfOrder: fc.Arbitrary<FrameGen> = fc.tuple(json, fc.constantFrom('continuation-first', 'two-starts', 'no-fin-then-text', 'fin-missing', 'control-fragmented', 'reversed')).map(([f, how]) => (next) => {
    const text = Buffer.from(frameText(f, next).text, 'utf8');
    const half = Math.max(1, text.length >> 1);
    const [a, b] = [text.subarray(0, half), text.subarray(half)];
    switch (how) {
      case 'continuation-first':
        return [step(clientFrame(Opcode.continuation, a, { fin: false })), step(clientFrame(Opcode.continuation, b))];
      case 'two-starts':
        return [step(clientFrame(Opcode.text, a, { fin: false })), step(clientFrame(Opcode.text, b, { fin: false }))];
      case 'no-fin-then-text':
        return [step(clientFrame(Opcode.text, a, { fin: false })), step(clientFrame(Opcode.text, text))];
      case 'fin-missing':
        return [step(clientFrame(Opcode.text, a, { fin: false })), step(clientFrame(Opcode.continuation, b, { fin: false }))];
      case 'control-fragmented':
        return [step(clientFrame(Opcode.ping, a, { fin: false })), step(clientFrame(Opcode.continuation, b))];
      default: {
        const frames = fragments(Opcode.text, text, 3);
        return frames.reverse().map((x) => step(x));
      }
    }
  });
  const invalidUtf8: fc.Arbitrary<FrameGen> = fc.tuple(fc.constantFrom(...INVALID_UTF8), fc.constantFrom('whole', 'inside-json', 'split-valid', 'split-invalid', 'close-reason')).map(([bad, how]): FrameGen => (next) => {
    const inJson = Buffer.concat([Buffer.from('{"type":"ping","id":"'), bad, Buffer.from('"}')]);
    switch (how) {
      case 'whole':
        return [step(clientFrame(Opcode.text, bad))];
      case 'inside-json':
        return [step(clientFrame(Opcode.text, inJson))];
      case 'split-valid': {
        // A valid multi-byte character split across two fragments is fine.
        const id = `€${next()}`;
        const euro = Buffer.from(`{"type":"ping","id":"${id}"}`, 'utf8');
        const at = euro.indexOf(0xe2) + 1;
        return [step(clientFrame(Opcode.text, euro.subarray(0, at), { fin: false })), step(clientFrame(Opcode.continuation, euro.subarray(at)), { replyIds: [id] })];
      }
      case 'split-invalid':
        return [step(clientFrame(Opcode.text, inJson.subarray(0, 20), { fin: false })), step(clientFrame(Opcode.continuation, inJson.subarray(20)))];
      default: {
        const payload = Buffer.concat([Buffer.from([0x03, 0xe8]), bad]);
        return [step(clientFrame(Opcode.close, payload))];
      }
    }
  });
  const binary: fc.Arbitrary<FrameGen> = fc.oneof(fc.uint8Array({ maxLength: 200 }), json.map((f) => Buffer.from(JSON.stringify(f.value), 'utf8'))).map((bytes) => () => [step(clientFrame(Opcode.binary, Buffer.from(bytes)))]);
  const control: fc.Arbitrary<FrameGen> = fc.oneof(
    fc.tuple(fc.constantFrom(Opcode.ping, Opcode.pong), fc.integer({ min: 0, max: 125 })).map(([op, n]) => () => [step(clientFrame(op, Buffer.alloc(n, 0x61)))]),
    fc.tuple(fc.constantFrom(Opcode.ping, Opcode.pong), fc.integer({ min: 126, max: 4000 })).map(([op, n]) => () => [step(clientFrame(op, Buffer.alloc(n, 0x61)))]),
    fc.tuple(fc.constantFrom(...CLOSE_CODES_VALID), fc.string({ maxLength: 40 })).map(([code, reason]) => () => {
      const payload = Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason, 'utf8').subarray(0, 123)]);
      return [step(clientFrame(Opcode.close, payload), { closeCodes: [code] })];
    }),
    fc.constantFrom(...CLOSE_CODES_INVALID).map((code) => () => [step(clientFrame(Opcode.close, Buffer.from([code >> 8, code & 0xff])))]),
    fc.constantFrom(Buffer.from([0x03]), Buffer.alloc(0), Buffer.alloc(126, 0x41)).map((payload) => () => [step(clientFrame(Opcode.close, payload))]),
  );
  const reserved: fc.Arbitrary<FrameGen> = fc.oneof(
    fc.constantFrom(3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf).map((op): FrameGen => () => [step(clientFrame(op, '{"type":"ping"}'))]),
    fc.tuple(fc.integer({ min: 1, max: 7 }), fc.constantFrom(Opcode.text, Opcode.binary, Opcode.ping)).map(([rsv, op]): FrameGen => () => [step(clientFrame(op, '{"type":"ping"}', { rsv }))]),
    json.map((f): FrameGen => (next) => [step(clientFrame(Opcode.text, frameText(f, next).text, { mask: false }))]),
  );
  const lying: fc.Arbitrary<FrameGen> = fc.tuple(json, fc.integer({ min: -20, max: 200 }).filter((d) => d !== 0)).map(([f, delta]) => (next) => {
    const text = frameText(f, next).text;
    const real = Buffer.byteLength(text);
    return [step(clientFrame(Opcode.text, text, { declaredLength: Math.max(0, real + delta) }), { desync: true })];
  });
  const oversized: fc.Arbitrary<FrameGen> = fc.oneof(
    fc.integer({ min: ctx.maxPayload + 1, max: ctx.maxPayload * 3 }).map((n) => () => [step(clientFrame(Opcode.text, `{"type":"ping","id":"${'x'.repeat(n)}"}`))]),
    fc.constantFrom(ctx.maxPayload + 1, 2 ** 31, 2 ** 53 - 1, 2 ** 53, Number.MAX_SAFE_INTEGER * 2).map((declared) => () => [step(clientFrame(Opcode.text, 'x', { declaredLength: declared }))]),
    fc.integer({ min: 2, max: 40 }).map((n) => () => fragments(Opcode.text, Buffer.alloc(ctx.maxPayload + 10, 0x61), n).map((b) => step(b))),
  );
  const garbage: fc.Arbitrary<FrameGen> = fc.uint8Array({ minLength: 1, maxLength: 64 }).map((bytes) => () => [step(Buffer.from(bytes), { desync: true })]);
  const gen = fc.oneof(
    { arbitrary: whole, weight: 5 },
    { arbitrary: fragmented, weight: 3 },
    { arbitrary: outOfOrder, weight: 2 },
    { arbitrary: invalidUtf8, weight: 2 },
    { arbitrary: binary, weight: 1 },
    { arbitrary: control, weight: 2 },
    { arbitrary: reserved, weight: 2 },
    { arbitrary: lying, weight: 1 },
    { arbitrary: oversized, weight: 1 },
    { arbitrary: garbage, weight: 1 },
  );
  return fc.tuple(fc.array(gen, { minLength: 1, maxLength: 6 }), fc.constantFrom<'destroy' | 'close'>('destroy', 'close'), fc.boolean()).map(([gens, end, merged]) => {
    let id = 0;
    const next = (): number => ++id;
    const steps = gens.flatMap((g) => g(next));
    // Everything in one TCP write, or one frame per write.
    return {
      kind: 'ws',
      cls: 'ws-frames',
      label: `${steps.length} raw frames${merged ? ' in one write' : ''}`,
      path: '/ws',
      steps: merged ? oneWrite(steps) : steps,
      end,
    } satisfies WsAttack;
  });
}

/** All steps as one TCP write, keeping what each owed. */
function oneWrite(steps: readonly WsStep[]): WsStep[] {
  const cut = steps.findIndex((s) => s.desync === true);
  const aligned = cut === -1 ? steps : steps.slice(0, cut);
  return [
    {
      delayMs: 0,
      bytes: Buffer.concat(steps.map((s) => s.bytes)),
      replyIds: aligned.flatMap((s) => s.replyIds ?? []),
      closeCodes: aligned.flatMap((s) => s.closeCodes ?? []),
      desync: cut !== -1,
    },
  ];
}

/**
 * Valid-but-hostile JSON frames: subscribe floods past `maxSubscriptions`, subscribe/unsubscribe
 * churn, forged `since`, publishes to forbidden, unknown and ephemeral namespaces, rpc to unknown
 * methods, ping floods, requests past the in-flight bound, and frames with hostile ids; over a
 * connection whose credentials may be refused.
 */
export function wsJsonAttackArb(ctx: HostileContext): fc.Arbitrary<WsAttack> {
  const json = jsonFrameArb(ctx);
  const ch = channels(ctx);
  const pos = positions(ctx);
  const frames: fc.Arbitrary<JsonFrame[]> = fc.oneof(
    { arbitrary: fc.array(json, { minLength: 1, maxLength: 12 }), weight: 4 },
    { arbitrary: fc.integer({ min: ctx.maxSubscriptions - 2, max: ctx.maxSubscriptions + 30 }).map((n) => Array.from({ length: n }, (_, i): JsonFrame => ({ value: { type: 'subscribe', channel: `${ctx.namespaces.open}:flood${i}` }, id: 'unique' }))), weight: 1 },
    { arbitrary: fc.array(ch.fresh, { minLength: 1, maxLength: 10 }).map((cs) => cs.flatMap((c): JsonFrame[] => [{ value: { type: 'subscribe', channel: c }, id: 'unique' }, { value: { type: 'unsubscribe', channel: c }, id: 'unique' }, { value: { type: 'subscribe', channel: c }, id: 'unique' }])), weight: 1 },
    { arbitrary: fc.array(fc.tuple(ch.known, pos.forged), { minLength: 1, maxLength: 6 }).map((xs) => xs.map(([channel, since]): JsonFrame => ({ value: { type: 'subscribe', channel, since }, id: 'unique' }))), weight: 2 },
    { arbitrary: fc.array(fc.tuple(fc.constantFrom(ctx.namespaces.locked, ctx.namespaces.secret, 'nope', ctx.namespaces.ephemeral, ctx.namespaces.open, 'typing', 'demo'), fc.jsonValue({ maxDepth: 2 })), { minLength: 1, maxLength: 10 }).map((xs) => xs.map(([ns, data]): JsonFrame => ({ value: { type: 'publish', message: { channel: `${ns}:p`, data } }, id: 'unique' }))), weight: 2 },
    { arbitrary: fc.integer({ min: 50, max: 200 }).map((n) => Array.from({ length: n }, (_, i): JsonFrame => ({ value: i % 3 === 0 ? { type: 'rpc', method: 'slow' } : { type: 'ping' }, id: 'unique' }))), weight: 1 },
    { arbitrary: fc.integer({ min: 1, max: 60 }).map((n) => Array.from({ length: n }, (_, i): JsonFrame => ({ value: { type: 'rpc', method: `unknown.m${i}` }, id: 'unique' }))), weight: 1 },
  );
  const junkText = fc.oneof(fc.string({ maxLength: 60 }), mutationArb(json.map((f) => JSON.stringify(f.value))), fc.constantFrom('{', '[]', 'null', '1', '""', '{"type":"subscribe","channel":"open:x","channel":"nope:x"}', `${'['.repeat(100)}${']'.repeat(100)}`, `{"type":"ping","id":${'1'.repeat(400)}}`));
  const extra = fc.array(junkText, { maxLength: 3 });
  const path = fc.oneof(
    { arbitrary: fc.constantFrom('/ws', '/ws', '/ws', `/ws?token=${ctx.deniedToken}`, '/ws?token=x&channel=a', '/ws?%zz', '/ws?token=').map((p) => ({ p, hostile: false })), weight: 6 },
    { arbitrary: connectSubscribeArb(ctx), weight: 3 },
  );
  // Mostly an ordinary client; sometimes the backend's server connection (the API key as a bearer token), or a wrong bearer.
  const credentials = fc.oneof(
    { arbitrary: fc.constant<readonly string[]>([]), weight: 6 },
    { arbitrary: fc.constantFrom<readonly string[]>([`authorization: Bearer ${ctx.apiKey}`], ['authorization: Bearer wrong-key-0123456789'], ['authorization: Basic eDp5'], [`authorization: Bearer ${ctx.apiKey}`, 'authorization: Bearer x']), weight: 2 },
  );
  return fc.tuple(frames, extra, path, fc.constantFrom<'destroy' | 'close'>('destroy', 'close'), fc.boolean(), credentials).map(([fs, junk, { p, hostile }, end, merged, headers]) => {
    let id = 0;
    const next = (): number => ++id;
    const steps: WsStep[] = fs.map((f) => {
      const { text, replyId } = frameText(f, next);
      return { delayMs: 0, bytes: clientFrame(Opcode.text, text), ...(replyId === undefined ? {} : { replyIds: [replyId] }) };
    });
    for (const j of junk) steps.splice(steps.length >> 1, 0, { delayMs: 0, bytes: clientFrame(Opcode.text, j) });
    return {
      kind: 'ws',
      cls: 'ws-json',
      label: `${fs.length} frames (${[...new Set(fs.map((f) => String(f.value.type)))].join(',')})${junk.length > 0 ? ` + ${junk.length} junk` : ''}${merged ? ' in one write' : ''} on ${p.slice(0, 60)}${headers.length > 0 ? ` with ${headers.join(', ').slice(0, 30)}` : ''}`,
      path: p,
      headers,
      ...(hostile ? { upgradeMayBeRefused: true } : {}),
      steps: merged ? oneWrite(steps) : steps,
      end,
      // Only the plain denied-token path must be refused: a hostile query may name another token first.
      ...(p.includes(ctx.deniedToken) && headers.length === 0 && !hostile ? { expectClose: [4401] } : {}),
    } satisfies WsAttack;
  });
}

/**
 * Subscriptions in the connect request (`/ws?channel=..&cursor=..`): known channels with forged or
 * real cursors, and every hostile stream query (bad names, lists over the bound, junk parameters).
 */
function connectSubscribeArb(ctx: HostileContext): fc.Arbitrary<{ p: string; hostile: boolean }> {
  const known = fc.uniqueArray(fc.constantFrom(...ctx.known.map((k) => k.channel)), { minLength: 1, maxLength: 4 });
  const good = fc.tuple(known, fc.option(cursorArb(ctx), { nil: undefined })).map(([cs, cursor]) => {
    const q = cs.map((c) => `channel=${encodeURIComponent(c)}`).join('&');
    // A forged cursor can be long enough (thousands of bytes) for the request head to be refused.
    return { p: `/ws?${q}${cursor === undefined ? '' : `&cursor=${encodeURIComponent(cursor)}`}`, hostile: cursor !== undefined };
  });
  return fc.oneof(good, queryArb(ctx).map((q) => ({ p: `/ws?${q}`, hostile: true })));
}
