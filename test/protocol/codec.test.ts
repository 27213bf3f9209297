/**
 * The JSON codec: exact wire text of the hot-path encoders, and decoding of untrusted client
 * frames into typed frames or coded errors.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  channelProblem,
  decodeMessage,
  encodeMessage,
  encodeMessageFrame,
  encodePollResponse,
  encodeSubscribeReply,
  encodeWelcome,
  isErrorCode,
  PROTOCOL_VERSION,
  jsonCodec,
  messageTypeProblem,
  positionProblem,
  TidingsError,
  type ClientFrame,
  type ErrorCode,
  type Gap,
  type Json,
  type Message,
} from '@tidings/protocol';
import { channelArb, messageTypeArb, positionArb, stringOf } from './arbitraries.js';

const RUNS = { numRuns: 1000 };
const FRAME_TYPES = ['subscribe', 'unsubscribe', 'publish', 'rpc', 'ping', 'presence'] as const;
/** True when no number in `v` is an integer past 2^53 - 1 below 1e21, which JSON.stringify writes as an integer literal parseJson refuses. */
function numbersKept(v: unknown): boolean {
  if (typeof v === 'number') return !Number.isInteger(v) || Number.isSafeInteger(v) || Math.abs(v) >= 1e21;
  if (typeof v !== 'object' || v === null) return true;
  return Object.values(v).every(numbersKept);
}
/** Any JSON value parseJson accepts back from its JSON.stringify text. */
const keptJsonValueArb = fc.jsonValue().filter(numbersKept) as fc.Arbitrary<Json>;
/** Every code decodeClient may throw. */
const DECODE_CODES: readonly ErrorCode[] = ['bad_json', 'bad_frame', 'bad_channel', 'bad_position', 'bad_request'];

function decodeError(text: string): TidingsError {
  try {
    jsonCodec.decodeClient(text);
  } catch (err) {
    expect(err).toBeInstanceOf(TidingsError);
    return err as TidingsError;
  }
  throw new Error(`expected ${text} to be rejected`);
}

/** decodeClient either returns a well-formed frame or throws a coded TidingsError. */
function checkDecode(text: string): ClientFrame | undefined {
  let frame: ClientFrame;
  try {
    frame = jsonCodec.decodeClient(text);
  } catch (err) {
    if (!(err instanceof TidingsError)) throw new Error(`non-TidingsError for ${text}: ${String(err)}`);
    expect(isErrorCode(err.code)).toBe(true);
    expect(DECODE_CODES).toContain(err.code);
    expect(err.status).toBe(400);
    return undefined;
  }
  expect(FRAME_TYPES).toContain(frame.type);
  switch (frame.type) {
    case 'subscribe':
      expect(channelProblem(frame.channel)).toBeUndefined();
      if (frame.since !== undefined) expect(positionProblem(frame.since)).toBeUndefined();
      break;
    case 'unsubscribe':
      expect(channelProblem(frame.channel)).toBeUndefined();
      break;
    case 'publish':
      expect(channelProblem(frame.message.channel)).toBeUndefined();
      expect(frame.message.data).not.toBeUndefined();
      if (frame.message.type !== undefined) expect(messageTypeProblem(frame.message.type)).toBeUndefined();
      break;
    case 'rpc':
      expect(frame.method).toMatch(/^[A-Za-z0-9_.\-/]{1,64}$/);
      expect(frame.id).toBeDefined();
      break;
    case 'ping':
      break;
    case 'presence':
      expect(channelProblem(frame.channel)).toBeUndefined();
      expect(frame.id).toBeDefined();
      break;
  }
  if (frame.id !== undefined) {
    expect(typeof frame.id === 'string' ? frame.id.length >= 1 && frame.id.length <= 64 : Number.isSafeInteger(frame.id)).toBe(true);
  }
  return frame;
}

describe('encodeMessage / encodeMessageFrame / encodePollResponse', () => {
  const pos = { epoch: 'ab12cd34', seq: 46 };

  it('encodes a message without a type', () => {
    expect(encodeMessage('news', pos, undefined, '{"x":1}')).toBe('{"channel":"news","position":{"epoch":"ab12cd34","seq":46},"data":{"x":1}}');
  });

  it('encodes a message with a type', () => {
    expect(encodeMessage('chat:room-1', { epoch: 'E', seq: 0 }, 'chat.message', '"hi"')).toBe(
      '{"channel":"chat:room-1","position":{"epoch":"E","seq":0},"type":"chat.message","data":"hi"}',
    );
  });

  it('encodes scalar and nested data verbatim', () => {
    expect(encodeMessage('a/b@c.d', { epoch: 'Z9', seq: Number.MAX_SAFE_INTEGER }, undefined, 'null')).toBe(
      '{"channel":"a/b@c.d","position":{"epoch":"Z9","seq":9007199254740991},"data":null}',
    );
    expect(encodeMessage('n', { epoch: 'e', seq: 1 }, 't', '[1,{"a":"é\\n"}]')).toBe(
      '{"channel":"n","position":{"epoch":"e","seq":1},"type":"t","data":[1,{"a":"é\\n"}]}',
    );
  });

  it('wraps a message in a message frame', () => {
    const m = encodeMessage('news', pos, undefined, '1');
    expect(encodeMessageFrame(m)).toBe('{"type":"message","message":{"channel":"news","position":{"epoch":"ab12cd34","seq":46},"data":1}}');
  });

  it('encodes a poll response', () => {
    const m1 = encodeMessage('news', { epoch: 'e', seq: 5 }, undefined, '{"i":5}');
    const m2 = encodeMessage('news', { epoch: 'e', seq: 6 }, 'x.y', '{"i":6}');
    const gap: Gap = { channel: 'news', from: { epoch: 'e', seq: 1 }, to: { epoch: 'e', seq: 4 }, reason: 'trimmed' };
    expect(encodePollResponse([m1, m2], [gap], 'news=e.6')).toBe(
      '{"messages":[' +
        '{"channel":"news","position":{"epoch":"e","seq":5},"data":{"i":5}},' +
        '{"channel":"news","position":{"epoch":"e","seq":6},"type":"x.y","data":{"i":6}}],' +
        '"gaps":[{"channel":"news","from":{"epoch":"e","seq":1},"to":{"epoch":"e","seq":4},"reason":"trimmed"}],' +
        '"cursor":"news=e.6"}',
    );
    expect(encodePollResponse([], [], '')).toBe('{"messages":[],"gaps":[],"cursor":""}');
  });

  it('matches JSON.stringify of the Message byte for byte, for any JSON data', () => {
    fc.assert(
      fc.property(channelArb, positionArb, fc.option(messageTypeArb, { nil: undefined }), keptJsonValueArb, (channel, position, type, data) => {
        const dataJson = JSON.stringify(data);
        const text = encodeMessage(channel, position, type, dataJson);
        const expected = JSON.parse(JSON.stringify(data)) as Json;
        const message: Message = type === undefined ? { channel, position, data: expected } : { channel, position, type, data: expected };
        expect(JSON.parse(text)).toEqual(message);
        expect(Object.keys(JSON.parse(text) as object)).toEqual(type === undefined ? ['channel', 'position', 'data'] : ['channel', 'position', 'type', 'data']);
        expect(decodeMessage(text)).toEqual(message);
        // Splicing is exactly what JSON.stringify would produce: nothing needed escaping.
        const ordered = type === undefined ? { channel, position: { epoch: position.epoch, seq: position.seq }, data } : { channel, position: { epoch: position.epoch, seq: position.seq }, type, data };
        expect(text).toBe(JSON.stringify(ordered));
        expect(encodeMessageFrame(text)).toBe(jsonCodec.encodeServer({ type: 'message', message: JSON.parse(text) as Message }));
      }),
      RUNS,
    );
  });
});

describe('encodeSubscribeReply / encodeWelcome', () => {
  it('write exactly what JSON.stringify of the frame writes, for any id, channel, position, session and heartbeat', () => {
    const id = fc.oneof(fc.integer(), fc.string({ maxLength: 64 }), fc.string({ unit: 'binary', maxLength: 16 }));
    fc.assert(
      fc.property(id, channelArb, positionArb, fc.boolean(), fc.string({ unit: 'binary', maxLength: 40 }), fc.nat(), (id, channel, position, recovered, session, heartbeat) => {
        const result = { channel, position: { epoch: position.epoch, seq: position.seq }, recovered };
        expect(encodeSubscribeReply(id, result)).toBe(jsonCodec.encodeServer({ type: 'reply', id, result }));
        expect(encodeWelcome(session, heartbeat)).toBe(jsonCodec.encodeServer({ type: 'welcome', version: PROTOCOL_VERSION, session, heartbeat }));
      }),
      RUNS,
    );
  });
});

describe('decodeClient', () => {
  it.each<[string, ClientFrame]>([
    ['{"type":"subscribe","channel":"news"}', { type: 'subscribe', id: undefined, channel: 'news', since: undefined }],
    [
      '{"type":"subscribe","id":7,"channel":"chat:r1","since":{"epoch":"ab12","seq":46,"x":1}}',
      { type: 'subscribe', id: 7, channel: 'chat:r1', since: { epoch: 'ab12', seq: 46 } },
    ],
    ['{"type":"unsubscribe","id":"u-1","channel":"news"}', { type: 'unsubscribe', id: 'u-1', channel: 'news' }],
    [
      '{"type":"publish","id":1,"message":{"channel":"news","data":{"a":[1,null]}}}',
      { type: 'publish', id: 1, message: { channel: 'news', data: { a: [1, null] } } },
    ],
    [
      '{"type":"publish","message":{"channel":"news","data":null,"type":"chat.message","idempotencyKey":"k1"}}',
      { type: 'publish', id: undefined, message: { channel: 'news', data: null, type: 'chat.message', idempotencyKey: 'k1' } },
    ],
    // The default type 'message' is normalised away.
    ['{"type":"publish","message":{"channel":"news","data":0,"type":"message"}}', { type: 'publish', id: undefined, message: { channel: 'news', data: 0 } }],
    ['{"type":"rpc","id":"r1","method":"room/join","data":{"room":1}}', { type: 'rpc', id: 'r1', method: 'room/join', data: { room: 1 } }],
    ['{"type":"rpc","id":0,"method":"a.b-c_d"}', { type: 'rpc', id: 0, method: 'a.b-c_d' }],
    ['{"type":"ping"}', { type: 'ping', id: undefined }],
    ['{"type":"ping","id":-3}', { type: 'ping', id: -3 }],
  ])('decodes %s', (text, frame) => {
    const decoded = jsonCodec.decodeClient(text);
    expect(decoded).toEqual(frame);
    // Keys the validator did not produce are not carried over.
    expect(Object.keys(decoded).every((k) => k in frame)).toBe(true);
  });

  it('keeps rpc data absent when not given and present when null', () => {
    expect('data' in jsonCodec.decodeClient('{"type":"rpc","id":1,"method":"m"}')).toBe(false);
    expect(jsonCodec.decodeClient('{"type":"rpc","id":1,"method":"m","data":null}')).toEqual({ type: 'rpc', id: 1, method: 'm', data: null });
  });

  it.each<[string, ErrorCode]>([
    ['', 'bad_json'],
    ['not json', 'bad_json'],
    ['{"type":"ping"', 'bad_json'],
    ["{'type':'ping'}", 'bad_json'],
    ['{"type":"ping"} x', 'bad_json'],
    ['null', 'bad_frame'],
    ['[{"type":"ping"}]', 'bad_frame'],
    ['"ping"', 'bad_frame'],
    ['42', 'bad_frame'],
    ['{}', 'bad_frame'],
    ['{"type":"nope"}', 'bad_frame'],
    ['{"type":"PING"}', 'bad_frame'],
    ['{"type":7}', 'bad_frame'],
    ['{"type":"subscribe","channel":"a b"}', 'bad_channel'],
    ['{"type":"subscribe"}', 'bad_channel'],
    ['{"type":"subscribe","channel":""}', 'bad_channel'],
    ['{"type":"unsubscribe","channel":"x,y"}', 'bad_channel'],
    ['{"type":"subscribe","channel":"a","since":{"epoch":"e","seq":-1}}', 'bad_position'],
    ['{"type":"subscribe","channel":"a","since":"e.1"}', 'bad_position'],
    ['{"type":"subscribe","channel":"a","since":null}', 'bad_position'],
    ['{"type":"subscribe","channel":"a","since":{"epoch":"e-1","seq":1}}', 'bad_position'],
    ['{"type":"subscribe","channel":"a","since":{"epoch":"e","seq":1.5}}', 'bad_position'],
    ['{"type":"subscribe","id":null,"channel":"a"}', 'bad_frame'],
    ['{"type":"subscribe","id":1.5,"channel":"a"}', 'bad_frame'],
    ['{"type":"ping","id":""}', 'bad_frame'],
    [`{"type":"ping","id":"${'i'.repeat(65)}"}`, 'bad_frame'],
    ['{"type":"ping","id":{}}', 'bad_frame'],
    ['{"type":"rpc","method":"m"}', 'bad_frame'],
    ['{"type":"rpc","id":1}', 'bad_frame'],
    ['{"type":"rpc","id":1,"method":"a b"}', 'bad_frame'],
    ['{"type":"rpc","id":1,"method":""}', 'bad_frame'],
    [`{"type":"rpc","id":1,"method":"${'m'.repeat(65)}"}`, 'bad_frame'],
    ['{"type":"publish"}', 'bad_request'],
    ['{"type":"publish","message":[]}', 'bad_request'],
    ['{"type":"publish","message":{"channel":"a"}}', 'bad_request'],
    ['{"type":"publish","message":{"channel":"a","data":1,"type":"a:b"}}', 'bad_request'],
    ['{"type":"publish","message":{"channel":"a","data":1,"idempotencyKey":""}}', 'bad_request'],
    [`{"type":"publish","message":{"channel":"a","data":1,"idempotencyKey":"${'k'.repeat(129)}"}}`, 'bad_request'],
    ['{"type":"publish","message":{"channel":"a=b","data":1}}', 'bad_channel'],
  ])('rejects %s with %s', (text, code) => {
    expect(decodeError(text).code).toBe(code);
  });

  it('takes an idempotency key only as well-formed Unicode: one with a lone surrogate has no UTF-8 form to keep it apart from others', () => {
    const decoded = (key: string): unknown => jsonCodec.decodeClient(JSON.stringify({ type: 'publish', message: { channel: 'a', data: 1, idempotencyKey: key } }));
    // Each of these is U+FFFD once written as UTF-8: three different keys, one stored key.
    for (const lone of ['\ud800', '\udc00', 'a\udbffb', '\ude00\ud83d']) expect(() => decoded(lone), JSON.stringify(lone)).toThrow(/well-formed/);
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }).filter((k) => k.length <= 128), (key) => {
        expect(decoded(key)).toMatchObject({ message: { idempotencyKey: key } });
      }),
    );
  });

  it('accepts an idempotency key of exactly 128 characters and an id of 64', () => {
    const key = 'k'.repeat(128);
    const id = 'i'.repeat(64);
    expect(jsonCodec.decodeClient(`{"type":"publish","id":"${id}","message":{"channel":"a","data":1,"idempotencyKey":"${key}"}}`)).toEqual({
      type: 'publish',
      id,
      message: { channel: 'a', data: 1, idempotencyKey: key },
    });
  });

  it('only ever returns a known frame or throws a coded TidingsError, on arbitrary strings', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), stringOf('{}[]":,tyeping01 ', 0, 30)), (text) => {
        checkDecode(text);
      }),
      RUNS,
    );
  });

  it('only ever returns a known frame or throws a coded TidingsError, on arbitrary JSON values', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        checkDecode(JSON.stringify(value));
      }),
      RUNS,
    );
  });

  it('only ever returns a known frame or throws a coded TidingsError, on frame-shaped objects', () => {
    const loose = fc.oneof(fc.jsonValue({ maxDepth: 2 }), channelArb, positionArb);
    /** Mostly `valid`, sometimes anything: every branch of the validator is reached. */
    const mostly = <T,>(valid: fc.Arbitrary<T>): fc.Arbitrary<unknown> => fc.oneof({ arbitrary: valid, weight: 4 }, { arbitrary: loose, weight: 1 });
    const frameish = fc.record(
      {
        type: fc.oneof({ arbitrary: fc.constantFrom(...FRAME_TYPES), weight: 6 }, fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 1 })),
        id: mostly(fc.oneof(fc.integer(), fc.string({ minLength: 1, maxLength: 64 }), fc.string({ maxLength: 70 }), fc.double())),
        channel: mostly(channelArb),
        since: mostly(positionArb),
        method: mostly(stringOf('ab/._- :', 0, 70)),
        data: loose,
        message: mostly(
          fc.record(
            { channel: mostly(channelArb), data: loose, type: mostly(messageTypeArb), idempotencyKey: mostly(fc.string({ maxLength: 130 })) },
            { requiredKeys: ['data'] },
          ),
        ),
      },
      { requiredKeys: ['type'] },
    );
    const seen = new Map<string, number>();
    fc.assert(
      fc.property(frameish, (value) => {
        const frame = checkDecode(JSON.stringify(value));
        const key = frame?.type ?? 'error';
        seen.set(key, (seen.get(key) ?? 0) + 1);
      }),
      { numRuns: 3000 },
    );
    // Every frame type is actually reached, as well as rejection.
    for (const t of [...FRAME_TYPES, 'error']) expect(seen.get(t) ?? 0, t).toBeGreaterThan(15);
  });

  it('round-trips generated valid frames through encodeClient/decodeClient', () => {
    const id = fc.option(fc.oneof(fc.integer(), stringOf('abc123', 1, 64)), { nil: undefined });
    const frame: fc.Arbitrary<ClientFrame> = fc.oneof(
      fc.record({ type: fc.constant('subscribe' as const), id, channel: channelArb, since: fc.option(positionArb, { nil: undefined }) }),
      fc.record({ type: fc.constant('unsubscribe' as const), id, channel: channelArb }),
      fc.record({
        type: fc.constant('publish' as const),
        id,
        message: fc.record({ channel: channelArb, data: keptJsonValueArb }),
      }),
      fc.record({ type: fc.constant('rpc' as const), id: fc.integer(), method: stringOf('abc/._-', 1, 64) }),
      fc.record({ type: fc.constant('ping' as const), id }),
      fc.record({ type: fc.constant('presence' as const), id: fc.integer(), channel: channelArb }),
    );
    fc.assert(
      fc.property(frame, (f) => {
        expect(jsonCodec.decodeClient(jsonCodec.encodeClient(f))).toEqual(JSON.parse(JSON.stringify(f)));
      }),
      RUNS,
    );
  });
});

describe('decodeServer', () => {
  it('accepts an object with a string type and rejects anything else', () => {
    expect(jsonCodec.decodeServer('{"type":"pong","id":1}')).toEqual({ type: 'pong', id: 1 });
    expect(() => jsonCodec.decodeServer('{"type":1}')).toThrow('server frame must be an object with a type');
    expect(() => jsonCodec.decodeServer('null')).toThrow(TidingsError);
    try {
      jsonCodec.decodeServer('nope');
      expect.unreachable();
    } catch (err) {
      expect((err as TidingsError).code).toBe('bad_json');
    }
  });
});
