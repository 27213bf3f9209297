/**
 * The hostile-input model: attack classes, the shape of an attack (the exact bytes to send, when,
 * and what the gateway owes in return), the context generators draw from, and byte-level helpers.
 * @module
 */
import fc from 'fast-check';
import type { Position, RequestId } from '@tidings/protocol';

/** The families of hostile input; every attack belongs to one. */
export const ATTACK_CLASSES = ['request-line', 'headers', 'query', 'cursor', 'body', 'ws-frames', 'ws-json', 'slowloris', 'flood'] as const;
export type AttackClass = (typeof ATTACK_CLASSES)[number];

/** One write on the connection, `delayMs` after the previous one. */
export interface TimedWrite {
  readonly delayMs: number;
  readonly bytes: Buffer;
}

/** Bytes sent on a plain TCP connection to the HTTP port. */
export interface HttpAttack {
  readonly kind: 'http';
  readonly cls: AttackClass;
  readonly label: string;
  readonly writes: readonly TimedWrite[];
  /** Methods of the requests in the bytes, in order as built (a HEAD answer has no body). */
  readonly methods: readonly string[];
  /** The bytes hold at least one complete request (or the gateway's timeouts owe a 408): silence until the deadline is a hang. */
  readonly owed: boolean;
  /** When set, every answer must have one of these statuses. */
  readonly statuses?: readonly number[];
  /** The gateway must close the connection within this many ms of connecting (slowloris). */
  readonly cutWithinMs?: number;
}

/** One WebSocket frame (or any bytes) sent after a valid handshake. */
export interface WsStep {
  readonly delayMs: number;
  readonly bytes: Buffer;
  /** Well-formed requests in these bytes, by id: each is owed exactly one reply, error or pong. */
  readonly replyIds?: readonly RequestId[];
  /** Valid close codes sent in these bytes, which the server may echo. */
  readonly closeCodes?: readonly number[];
  /** After these bytes the stream may no longer be frame-aligned (a lying length, random bytes): nothing later is owed a reply. */
  readonly desync?: boolean;
}

/** A WebSocket connection: a valid upgrade to `path`, then raw frames. */
export interface WsAttack {
  readonly kind: 'ws';
  readonly cls: AttackClass;
  readonly label: string;
  readonly path: string;
  /** Header lines the upgrade request carries besides the handshake's own (credentials). */
  readonly headers?: readonly string[];
  /** The request itself is hostile (its query, its size): the upgrade may be refused with a coded HTTP error instead. */
  readonly upgradeMayBeRefused?: boolean;
  readonly steps: readonly WsStep[];
  /** How the attacker leaves: drop the TCP connection, or send a close frame first. */
  readonly end: 'destroy' | 'close';
  /** The gateway must end the connection within this many ms of the upgrade (a peer that never answers pings). */
  readonly cutWithinMs?: number;
  /** When set, the server must close with one of these codes. */
  readonly expectClose?: readonly number[];
  /**
   * Read nothing after the handshake until every step is written and then this many ms more (a
   * client that does not read while it sends; the wait lets the gateway work through what its
   * kernel buffered).
   */
  readonly pauseReadingMs?: number;
  /**
   * What this client is owed exceeds what kernel buffers and the gateway's write bound can hold: the
   * gateway must shed it (close 4001, or cut the connection) having sent it at most
   * `RunOptions.shedBoundBytes`.
   */
  readonly mustBeShed?: boolean;
}

export type Attack = HttpAttack | WsAttack;

/** What the generators need to know about the gateway under attack. */
export interface HostileContext {
  readonly apiKey: string;
  /** Channels with their real current position, to forge cursors from. Never under `forbiddenPrefix`. */
  readonly known: ReadonlyArray<{ readonly channel: string; readonly position: Position }>;
  readonly maxPayload: number;
  readonly maxBody: number;
  readonly maxBatch: number;
  readonly maxSubscriptions: number;
  readonly headersTimeout: number;
  readonly requestTimeout: number;
  readonly pingInterval: number;
  /** Namespaces by role: clients may publish in `open` and `ephemeral`, not in `locked`; the auth hook refuses `secret`. */
  readonly namespaces: { readonly open: string; readonly locked: string; readonly ephemeral: string; readonly secret: string };
  /** Rpc methods the gateway registered. */
  readonly rpcMethods: readonly string[];
  /** A `token` query value the auth hook refuses. */
  readonly deniedToken: string;
  /** Channel prefix no attack may name (the bystanders' namespace, with its colon). */
  readonly forbiddenPrefix: string;
  /** A channel where clients may publish, whose history holds large publications (a few hundred KiB in all), and its epoch: resuming it from seq 0 replays them all. */
  readonly bulky?: { readonly channel: string; readonly epoch: string };
  /** The gateway's per-connection write bound (default 64 KiB): floods are sized to owe twice that plus the kernel's buffers. */
  readonly maxBufferedBytes?: number;
  /** How long a flooding client keeps not reading after its last write (default 2 s; longer when the gateway is busy with much else). */
  readonly floodPauseMs?: number;
}

// ---------------------------------------------------------------------------------------------
// Building blocks

export const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
export const ALNUM = `${LETTERS}0123456789`;
export const NAME_CHARS = `${ALNUM}_.-@/:`;
export const SEQ36 = '0123456789abcdefghijklmnopqrstuvwxyz';
export const latin1 = (text: string): Buffer => Buffer.from(text, 'latin1');
const chars = (set: string): fc.Arbitrary<string> => fc.constantFrom(...set.split(''));
export const stringOf = (set: string, minLength: number, maxLength: number): fc.Arbitrary<string> => fc.string({ unit: chars(set), minLength, maxLength });
/** Any byte as a latin1 character: request text is sent byte for byte. */
const byteChar = fc.integer({ min: 0, max: 255 }).map((b) => String.fromCharCode(b));
export const bytesText = (maxLength: number): fc.Arbitrary<string> => fc.string({ unit: byteChar, maxLength });
/** Latin1 text of the UTF-8 bytes of `text` (for building requests with unicode in them). */
export const utf8AsLatin1 = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');

/** Printable characters that break parsers: separators, quotes, escapes, controls. */
const NASTY = ['', ' ', '\t', '%', '%%', '%zz', '%0', '%00', '%C0%AF', '%FF', '\\', '"', "'", '<', '>', '#', '?', '&', '=', ',', ';', ':', '/', '..', '\u0000', '\r', '\n', '\u00ff', '\u0080'];
const nastyChar = fc.constantFrom(...NASTY);

/** Byte-level mutations of a text: insert, delete, replace or repeat a piece, at a few places. */
export function mutationArb(base: fc.Arbitrary<string>, extra: fc.Arbitrary<string> = nastyChar): fc.Arbitrary<string> {
  const op = fc.record({ at: fc.nat(), kind: fc.constantFrom('insert', 'delete', 'replace', 'repeat', 'truncate'), piece: fc.oneof(extra, nastyChar) });
  return fc.tuple(base, fc.array(op, { minLength: 1, maxLength: 4 })).map(([text, ops]) => {
    let t = text;
    for (const { at, kind, piece } of ops) {
      const i = t.length === 0 ? 0 : at % (t.length + 1);
      if (kind === 'insert') t = t.slice(0, i) + piece + t.slice(i);
      else if (kind === 'delete') t = t.slice(0, i) + t.slice(i + 1 + (at % 3));
      else if (kind === 'replace') t = t.slice(0, i) + piece + t.slice(i + 1);
      else if (kind === 'repeat') t = t.slice(0, i) + t.slice(i, i + 8).repeat(2 + (at % 5)) + t.slice(i + 8);
      else t = t.slice(0, i);
    }
    return t;
  });
}

/** Builds one request's bytes: request line, raw header lines, blank line, body. */
export function buildRequest(requestLine: string, headerLines: readonly string[], body: Buffer | string = '', eol = '\r\n'): Buffer {
  const head = `${requestLine}${eol}${headerLines.map((h) => `${h}${eol}`).join('')}${eol}`;
  return Buffer.concat([latin1(head), typeof body === 'string' ? latin1(body) : body]);
}

export const once = (bytes: Buffer): TimedWrite[] => [{ delayMs: 0, bytes }];

/** Escapes bytes for a failure message: printable ASCII as is, the rest as \xNN, at most `max` bytes. */
export function escapeBytes(bytes: Buffer, max = 400): string {
  let out = '';
  for (const b of bytes.subarray(0, max)) {
    if (b === 0x0d) out += '\\r';
    else if (b === 0x0a) out += '\\n';
    else if (b >= 0x20 && b < 0x7f && b !== 0x5c) out += String.fromCharCode(b);
    else out += `\\x${b.toString(16).padStart(2, '0')}`;
  }
  return bytes.length > max ? `${out}... (${bytes.length} bytes)` : out;
}

/** A one-line description of an attack, with its bytes (for failure messages and counterexamples). */
export function describeAttack(attack: Attack, max = 300): string {
  if (attack.kind === 'http') {
    const delays = attack.writes.some((w) => w.delayMs > 0) ? ` in ${attack.writes.length} writes` : '';
    return `[${attack.cls}] ${attack.label}${delays}: ${escapeBytes(Buffer.concat(attack.writes.map((w) => w.bytes)), max)}`;
  }
  const frames = attack.steps.map((s) => escapeBytes(s.bytes, 60)).join(' | ');
  return `[${attack.cls}] ${attack.label} on ${attack.path} (${attack.steps.length} frames, end ${attack.end}): ${frames.slice(0, max)}`;
}

