/**
 * Validation of untrusted input shared by every entry point (WebSocket frames, the HTTP publish
 * API, client upstream over HTTP). Each function returns a typed value or throws a coded error.
 * @module
 */
import { channelProblem, messageTypeProblem } from './channel.js';
import { TidingsError } from './codes.js';
import type { ClientFrame, Json, PublishRequest, RequestId } from './frames.js';
import { toPosition } from './position.js';

/** Longest idempotency key accepted. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 128;
const MAX_ID_LENGTH = 64;
/** Longest token a refresh frame may carry. */
export const MAX_TOKEN_LENGTH = 16_384;
const METHOD = /^[A-Za-z0-9_.\-/]{1,64}$/;
/** A UTF-16 surrogate not part of a pair (with the `u` flag, a pair is one code point, not `Cs`). */
const LONE_SURROGATE = /\p{Cs}/u;

type Obj = Record<string, unknown>;

function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function channelOf(value: unknown): string {
  const problem = channelProblem(value);
  if (problem !== undefined) throw new TidingsError('bad_channel', problem);
  return value as string;
}

function requestId(value: unknown, required: boolean): RequestId | undefined {
  if (value === undefined && !required) return undefined;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
  if (typeof value === 'string' && value.length > 0 && value.length <= MAX_ID_LENGTH) return value;
  throw new TidingsError('bad_frame', `id must be an integer or a string of 1-${MAX_ID_LENGTH} characters`);
}

/** Validates a publish request (HTTP body element or WebSocket `publish` message). */
export function toPublishRequest(value: unknown): PublishRequest {
  if (!isObject(value)) throw new TidingsError('bad_request', 'a publication must be an object { channel, data }');
  const channel = channelOf(value.channel);
  if (!('data' in value) || value.data === undefined) {
    throw new TidingsError('bad_request', 'a publication needs data (any JSON value)');
  }
  const out: { channel: string; data: Json; type?: string; idempotencyKey?: string } = {
    channel,
    data: value.data as Json,
  };
  if (value.type !== undefined) {
    const problem = messageTypeProblem(value.type);
    if (problem !== undefined) throw new TidingsError('bad_request', problem);
    if (value.type !== 'message') out.type = value.type as string;
  }
  if (value.idempotencyKey !== undefined) {
    const key = value.idempotencyKey;
    if (typeof key !== 'string' || key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
      throw new TidingsError('bad_request', `idempotencyKey must be a string of 1-${MAX_IDEMPOTENCY_KEY_LENGTH} characters`);
    }
    // A lone surrogate has no UTF-8 form: brokers that store keys as UTF-8 would take different keys
    // for one (each becomes U+FFFD) and drop a publication as a duplicate.
    if (LONE_SURROGATE.test(key)) throw new TidingsError('bad_request', 'idempotencyKey must be well-formed Unicode (it has a lone surrogate)');
    out.idempotencyKey = key;
  }
  return out;
}

/** Validates a parsed client frame. */
export function toClientFrame(value: unknown): ClientFrame {
  if (!isObject(value)) throw new TidingsError('bad_frame', 'a frame must be a JSON object with a type');
  switch (value.type) {
    case 'subscribe': {
      const id = requestId(value.id, false);
      const channel = channelOf(value.channel);
      const since = value.since === undefined ? undefined : toPosition(value.since);
      return { type: 'subscribe', id, channel, since };
    }
    case 'unsubscribe':
      return { type: 'unsubscribe', id: requestId(value.id, false), channel: channelOf(value.channel) };
    case 'publish':
      return { type: 'publish', id: requestId(value.id, false), message: toPublishRequest(value.message) };
    case 'rpc': {
      const id = requestId(value.id, true) as RequestId;
      if (typeof value.method !== 'string' || !METHOD.test(value.method)) {
        throw new TidingsError('bad_frame', 'rpc method must be 1-64 letters, digits or _ . - /');
      }
      return value.data === undefined
        ? { type: 'rpc', id, method: value.method }
        : { type: 'rpc', id, method: value.method, data: value.data as Json };
    }
    case 'ping':
      return { type: 'ping', id: requestId(value.id, false) };
    case 'presence':
      return { type: 'presence', id: requestId(value.id, true) as RequestId, channel: channelOf(value.channel) };
    case 'refresh': {
      const token = value.token;
      if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
        throw new TidingsError('bad_frame', `refresh needs a token of 1-${MAX_TOKEN_LENGTH} characters`);
      }
      return { type: 'refresh', id: requestId(value.id, false), token };
    }
    default:
      throw new TidingsError(
        'bad_frame',
        typeof value.type === 'string' ? `unknown frame type '${value.type.slice(0, 32)}'` : 'frame type must be a string',
      );
  }
}

/** The request id of a frame that failed validation, when it has a usable one. */
export function requestIdOf(value: unknown): RequestId | undefined {
  if (!isObject(value)) return undefined;
  try {
    return requestId(value.id, false);
  } catch {
    return undefined;
  }
}
