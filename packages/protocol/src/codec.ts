/**
 * The codec turns frames into text and back. The JSON codec is the only one today; the interface
 * leaves room for a binary one. The publication encoders build text by concatenation from an
 * already-encoded `data`, so the hot path never re-serialises a payload.
 * @module
 */
import { TidingsError } from './codes.js';
import { PROTOCOL_VERSION, type ClientFrame, type Gap, type Message, type RequestId, type ServerFrame, type SubscribeResult } from './frames.js';
import { scanJson } from './json.js';
import type { Position } from './position.js';
import { toClientFrame } from './validate.js';

/** Frame (de)serialisation for one wire format. */
export interface Codec {
  readonly name: string;
  /** Parses and validates an untrusted client frame; throws `bad_json` or `bad_frame`. */
  decodeClient(text: string): ClientFrame;
  encodeServer(frame: ServerFrame): string;
  /** Parses a server frame (trusted peer: shape is checked only for `type`). */
  decodeServer(text: string): ServerFrame;
  encodeClient(frame: ClientFrame): string;
}

/**
 * Parses untrusted JSON text (HTTP bodies, WebSocket frames, CLI input). Throws `bad_json` for
 * nesting deeper than `MAX_JSON_DEPTH` (refused before parsing), for malformed text (the
 * parser's message), and for a number `JSON.parse` would change: one that overflows to ±Infinity, a non-zero
 * literal that underflows to 0, or an integer beyond 2^53 - 1 (`Number.MAX_SAFE_INTEGER`).
 */
export function parseJson(text: string): unknown {
  const numberProblem = scanJson(text);
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (err) {
    throw new TidingsError('bad_json', `malformed JSON: ${(err as Error).message.slice(0, 120)}`);
  }
  // Refused only once the text is known to be JSON, so malformed text keeps the parser's message.
  if (numberProblem !== undefined) throw new TidingsError('bad_json', numberProblem);
  return value;
}

/** The JSON codec. */
export const jsonCodec: Codec = {
  name: 'json',
  decodeClient: (text) => toClientFrame(parseJson(text)),
  encodeServer: (frame) => JSON.stringify(frame),
  decodeServer(text) {
    // The server already held every payload to the limits of parseJson; its frames wrap a payload in
    // a few more levels of nesting, so they are parsed as they are.
    let value: unknown;
    try {
      value = JSON.parse(text) as unknown;
    } catch (err) {
      throw new TidingsError('bad_json', `malformed JSON: ${(err as Error).message.slice(0, 120)}`);
    }
    if (typeof value !== 'object' || value === null || typeof (value as { type?: unknown }).type !== 'string') {
      throw new TidingsError('bad_frame', 'server frame must be an object with a type');
    }
    return value as ServerFrame;
  },
  encodeClient: (frame) => JSON.stringify(frame),
};

/**
 * The JSON text of a {@link Message}, from `data` already encoded as JSON. Channel names, epochs and
 * message types are validated to characters that need no JSON escaping, so they are spliced in as-is.
 */
export function encodeMessage(channel: string, position: Position, type: string | undefined, dataJson: string, ephemeral = false): string {
  const head = `{"channel":"${channel}","position":{"epoch":"${position.epoch}","seq":${position.seq}}`;
  const flag = ephemeral ? ',"ephemeral":true' : '';
  return type === undefined ? `${head}${flag},"data":${dataJson}}` : `${head},"type":"${type}"${flag},"data":${dataJson}}`;
}

/**
 * The JSON text of the `reply` to a subscribe, as `JSON.stringify` would write it. Its channel and
 * epoch are validated names that need no escaping, so they are spliced in as-is: a connection's
 * first frames are built without walking an object.
 */
export function encodeSubscribeReply(id: RequestId, result: SubscribeResult): string {
  const { channel, position, recovered } = result;
  return `{"type":"reply","id":${JSON.stringify(id)},"result":{"channel":"${channel}","position":{"epoch":"${position.epoch}","seq":${position.seq}},"recovered":${recovered}}}`;
}

/** The JSON text of a `welcome` frame, as `JSON.stringify` would write it. */
export function encodeWelcome(session: string, heartbeat: number): string {
  return `{"type":"welcome","version":${PROTOCOL_VERSION},"session":${JSON.stringify(session)},"heartbeat":${heartbeat}}`;
}

/** A `message` frame around an encoded message. */
export function encodeMessageFrame(messageJson: string): string {
  return `{"type":"message","message":${messageJson}}`;
}

/** A long-poll response body from encoded messages. */
export function encodePollResponse(messageJsons: readonly string[], gaps: readonly Gap[], cursor: string): string {
  return `{"messages":[${messageJsons.join(',')}],"gaps":${JSON.stringify(gaps)},"cursor":${JSON.stringify(cursor)}}`;
}

/** Decodes a message from its JSON text (used by clients and tests). */
export function decodeMessage(text: string): Message {
  return parseJson(text) as Message;
}
