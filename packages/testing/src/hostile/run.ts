/**
 * Replays an {@link Attack} against a gateway over a raw TCP socket and judges what came back:
 * every HTTP answer must be a well-formed HTTP/1.x response with an expected status (never a 5xx),
 * JSON error bodies must be `{ error: { code, reason } }` with a known code matching the status;
 * every WebSocket frame from the server must be well-formed (unmasked, no reserved bits, text JSON
 * frames of known types, no `internal` errors, known close codes); a request frame with a usable id
 * gets at most one answer, and exactly one while the connection stays open; a complete request is
 * never left hanging; slowloris connections are cut within their bound.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { ErrorCode, isErrorCode, type RequestId } from '@tidings/protocol';
import type { Attack, AttackClass, HttpAttack, WsAttack } from './attack.js';
import { clientFrame, Opcode } from '../raw-ws.js';

// ---------------------------------------------------------------------------------------------
// HTTP answers

/** One HTTP response as parsed from the wire. */
export interface HttpAnswer {
  readonly status: number;
  readonly statusLine: string;
  /** Lower-cased names; repeated headers keep every value. */
  readonly headers: ReadonlyMap<string, readonly string[]>;
  /** The body, de-chunked, as far as it arrived. */
  readonly body: Buffer;
  /** The whole body arrived (by content-length, the last chunk, or the close). */
  readonly complete: boolean;
  /** A body framed by neither length nor chunks: it runs to the close. */
  readonly untilClose: boolean;
  /** An answer that has no body by definition (to HEAD, 1xx, 204, 304). */
  readonly bodiless?: boolean;
}

export interface ParsedAnswers {
  readonly answers: HttpAnswer[];
  /** Why the bytes are not HTTP responses, when they are not. */
  readonly problem?: string;
  /** Bytes after a 101 answer (the upgraded protocol). */
  readonly upgraded?: Buffer;
}

const STATUS_LINE = /^HTTP\/1\.[01] ([1-5]\d\d)(?: [^\r\n]*)?$/;
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/;
const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

/** One value of a header (the first), lower-cased name. */
export function header(answer: HttpAnswer, name: string): string | undefined {
  return answer.headers.get(name)?.[0];
}

/** De-chunks a chunked body from `from`; returns the body, whether the last chunk arrived and where it ended. */
function dechunk(buf: Buffer, from: number): { body: Buffer; complete: boolean; end: number; problem?: string } {
  const parts: Buffer[] = [];
  let at = from;
  for (;;) {
    const eol = buf.indexOf(CRLF, at);
    if (eol === -1) return { body: Buffer.concat(parts), complete: false, end: buf.length };
    const line = buf.subarray(at, eol).toString('latin1');
    const m = /^([0-9a-fA-F]{1,8})(?:;.*)?$/.exec(line);
    if (m === null) return { body: Buffer.concat(parts), complete: false, end: buf.length, problem: `bad chunk size line ${JSON.stringify(line.slice(0, 40))}` };
    const size = parseInt(m[1] as string, 16);
    if (size === 0) {
      // Trailers (none expected) end with an empty line.
      const end = buf.indexOf(CRLF, eol + 2);
      if (end === -1) return { body: Buffer.concat(parts), complete: false, end: buf.length };
      if (end !== eol + 2) return { body: Buffer.concat(parts), complete: false, end: buf.length, problem: 'unexpected trailers' };
      return { body: Buffer.concat(parts), complete: true, end: end + 2 };
    }
    if (buf.length < eol + 2 + size + 2) {
      parts.push(buf.subarray(eol + 2, Math.min(buf.length, eol + 2 + size)));
      return { body: Buffer.concat(parts), complete: false, end: buf.length };
    }
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    if (!buf.subarray(eol + 2 + size, eol + 4 + size).equals(CRLF)) return { body: Buffer.concat(parts), complete: false, end: buf.length, problem: 'chunk not followed by CRLF' };
    at = eol + 4 + size;
  }
}

/**
 * Parses the HTTP responses in `buf` (everything received on one connection). `methods` are the
 * requests' methods in order (a HEAD answer has no body); `closed` says whether the connection
 * ended (a body without framing runs to the close).
 */
export function parseHttpAnswers(buf: Buffer, methods: readonly string[], closed: boolean): ParsedAnswers {
  const answers: HttpAnswer[] = [];
  let at = 0;
  while (at < buf.length) {
    const end = buf.indexOf(HEAD_END, at);
    if (end === -1) {
      const partial = buf.subarray(at).toString('latin1');
      const ok = 'HTTP/1.'.startsWith(partial.slice(0, 7)) || partial.startsWith('HTTP/1.');
      return ok && !closed ? { answers } : { answers, problem: `${closed ? 'connection closed inside a response head' : 'not an HTTP response'}: ${JSON.stringify(partial.slice(0, 120))}` };
    }
    const [statusLine = '', ...lines] = buf.subarray(at, end).toString('latin1').split('\r\n');
    const sm = STATUS_LINE.exec(statusLine);
    if (sm === null) return { answers, problem: `bad status line ${JSON.stringify(statusLine.slice(0, 120))}` };
    const status = Number(sm[1]);
    const headers = new Map<string, string[]>();
    for (const line of lines) {
      const hm = HEADER_LINE.exec(line);
      if (hm === null) return { answers, problem: `bad header line ${JSON.stringify(line.slice(0, 120))} after ${statusLine}` };
      const name = (hm[1] as string).toLowerCase();
      headers.set(name, [...(headers.get(name) ?? []), hm[2] as string]);
    }
    const bodyStart = end + 4;
    // Interim (1xx) answers precede the final answer to the same request.
    const finals = answers.filter((a) => a.status >= 200).length;
    const isHead = (methods[finals] ?? '').toUpperCase() === 'HEAD';
    if (status === 101) {
      answers.push({ status, statusLine, headers, body: Buffer.alloc(0), complete: true, untilClose: false });
      return { answers, upgraded: buf.subarray(bodyStart) };
    }
    const te = headers.get('transfer-encoding');
    const cl = headers.get('content-length');
    if (te !== undefined && cl !== undefined) return { answers, problem: `both transfer-encoding and content-length in ${statusLine}` };
    // A HEAD answer has no body, unless the request was refused before its method was known (Node's
    // parser gave up): then the body is there, announced by content-length.
    const bodiless = isHead && (bodyStart === buf.length || buf.subarray(bodyStart, bodyStart + 7).toString('latin1') === 'HTTP/1.'.slice(0, Math.min(7, buf.length - bodyStart)));
    if (bodiless || status === 204 || status === 304 || (status >= 100 && status < 200)) {
      answers.push({ status, statusLine, headers, body: Buffer.alloc(0), complete: true, untilClose: false, bodiless: true });
      at = bodyStart;
    } else if (te !== undefined) {
      if (te.length !== 1 || te[0]?.toLowerCase() !== 'chunked') return { answers, problem: `transfer-encoding ${JSON.stringify(te)}` };
      const { body, complete, end: next, problem } = dechunk(buf, bodyStart);
      if (problem !== undefined) return { answers, problem: `${problem} in the body of ${statusLine}` };
      answers.push({ status, statusLine, headers, body, complete, untilClose: false });
      if (!complete) return { answers };
      at = next;
    } else if (cl !== undefined) {
      if (cl.length !== 1 || !/^\d{1,15}$/.test(cl[0] as string)) return { answers, problem: `content-length ${JSON.stringify(cl)} in ${statusLine}` };
      const length = Number(cl[0]);
      const body = buf.subarray(bodyStart, bodyStart + length);
      answers.push({ status, statusLine, headers, body, complete: body.length === length, untilClose: false });
      if (body.length < length) return { answers };
      at = bodyStart + length;
    } else {
      answers.push({ status, statusLine, headers, body: buf.subarray(bodyStart), complete: closed, untilClose: true });
      return { answers };
    }
  }
  return { answers };
}

/**
 * Statuses the gateway may answer hostile input with: its error codes' statuses, plus Node's own
 * interim 100 and its 417 to an unknown `Expect`. No 5xx: `unavailable` only while draining,
 * `internal` never.
 */
export const HOSTILE_STATUSES: ReadonlySet<number> = new Set([100, 101, 200, 204, 400, 401, 403, 404, 405, 408, 409, 413, 415, 417, 429, 431, 501]);

/** What is wrong with one answer (empty when nothing is). `uncoded` is set for an error body that is not JSON. */
export function judgeHttpAnswer(answer: HttpAnswer): { problems: string[]; uncoded: boolean } {
  const problems: string[] = [];
  const { status } = answer;
  if (!HOSTILE_STATUSES.has(status)) problems.push(`status ${status} (${answer.statusLine})`);
  const type = (header(answer, 'content-type') ?? '').toLowerCase();
  const text = answer.body.toString('utf8');
  let uncoded = false;
  if (status === 101) {
    if ((header(answer, 'upgrade') ?? '').toLowerCase() !== 'websocket') problems.push('101 without upgrade: websocket');
    if (header(answer, 'sec-websocket-accept') === undefined) problems.push('101 without sec-websocket-accept');
  } else if (answer.bodiless === true) {
    // Nothing to judge but the status.
  } else if (type.startsWith('application/json')) {
    if (answer.complete) {
      type ErrorShape = { error?: { code?: unknown; reason?: unknown } } | null;
      let value: ErrorShape | undefined;
      try {
        value = JSON.parse(text) as ErrorShape;
      } catch {
        problems.push(`${status} with a JSON content type but a body that is not JSON: ${JSON.stringify(text.slice(0, 120))}`);
      }
      if (status >= 400 && value !== undefined) {
        const error = value?.error;
        const keys = typeof value === 'object' && value !== null ? Object.keys(value) : [];
        if (error === undefined || keys.length !== 1) problems.push(`${status} body is not { error }: ${text.slice(0, 160)}`);
        else if (!isErrorCode(error.code)) problems.push(`${status} with unknown error code ${JSON.stringify(error.code)}`);
        else if (ErrorCode[error.code] !== status) problems.push(`error code ${error.code} (${ErrorCode[error.code]}) answered with status ${status}`);
        else if (typeof error.reason !== 'string') problems.push(`${status} error without a reason`);
      }
    }
  } else if (type.startsWith('text/event-stream')) {
    if (status !== 200) problems.push(`event stream with status ${status}`);
    if (answer.body.length > 0 && !text.startsWith('retry: ')) problems.push(`event stream does not start with retry: ${JSON.stringify(text.slice(0, 60))}`);
  } else if (status >= 400 && !(status === 400 && answer.body.length === 0 && type === '')) {
    // Answers written by Node or by `ws` before the gateway sees the request (a missing Host, a bad
    // Sec-WebSocket-Key) are plain text; they are well-formed, but not coded. Counted, not failed.
    uncoded = true;
  }
  return { problems, uncoded };
}

// ---------------------------------------------------------------------------------------------
// WebSocket frames from the server

export interface ServerWsFrame {
  readonly fin: boolean;
  readonly rsv: number;
  readonly opcode: number;
  readonly masked: boolean;
  readonly payload: Buffer;
}

/** Parses complete frames in `buf`; `rest` is an incomplete frame at the end. */
export function parseServerFrames(buf: Buffer): { frames: ServerWsFrame[]; rest: Buffer; problem?: string } {
  const frames: ServerWsFrame[] = [];
  let at = 0;
  while (buf.length - at >= 2) {
    const b0 = buf[at] as number;
    const b1 = buf[at + 1] as number;
    let len = b1 & 0x7f;
    let head = 2;
    if (len === 126) {
      if (buf.length - at < 4) break;
      len = buf.readUInt16BE(at + 2);
      head = 4;
    } else if (len === 127) {
      if (buf.length - at < 10) break;
      const big = buf.readBigUInt64BE(at + 2);
      if (big > 2n ** 31n) return { frames, rest: buf.subarray(at), problem: `server frame declares ${big} bytes` };
      len = Number(big);
      head = 10;
    }
    const masked = (b1 & 0x80) !== 0;
    if (masked) head += 4;
    if (buf.length - at < head + len) break;
    const payload = Buffer.from(buf.subarray(at + head, at + head + len));
    if (masked) {
      const key = buf.subarray(at + head - 4, at + head);
      for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (key[i & 3] as number);
    }
    frames.push({ fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 7, opcode: b0 & 0x0f, masked, payload });
    at += head + len;
  }
  return { frames, rest: buf.subarray(at) };
}

/**
 * Close codes the gateway (or `ws` for it) may send to a hostile peer, besides echoing the peer's own:
 * 4503 is a connection limit (attackers sharing one user's token run into its per-user cap).
 */
export const HOSTILE_CLOSE_CODES: ReadonlySet<number> = new Set([1000, 1002, 1007, 1009, 4001, 4002, 4003, 4401, 4503]);
const SERVER_FRAME_TYPES = new Set(['welcome', 'reply', 'error', 'message', 'gap', 'pong', 'heartbeat', 'join', 'leave']);

/** The close code of a close frame, or undefined for an empty payload. */
export function closeCodeOf(frame: ServerWsFrame): number | undefined {
  return frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : undefined;
}

/** What is wrong with one server frame. `echoable` are the valid codes the peer sent in its own close frames. */
export function judgeServerFrame(frame: ServerWsFrame, echoable: readonly number[]): string[] {
  const problems: string[] = [];
  if (frame.masked) problems.push('server frame is masked');
  if (frame.rsv !== 0) problems.push(`server frame has RSV bits ${frame.rsv}`);
  if (!frame.fin) problems.push('server frame is fragmented');
  switch (frame.opcode) {
    case Opcode.text: {
      let value: { type?: unknown; error?: { code?: unknown; reason?: unknown } } | undefined;
      try {
        value = JSON.parse(frame.payload.toString('utf8')) as typeof value;
      } catch {
        problems.push(`text frame is not JSON: ${frame.payload.toString('utf8').slice(0, 120)}`);
        break;
      }
      if (typeof value !== 'object' || value === null || !SERVER_FRAME_TYPES.has(String(value.type))) problems.push(`unknown server frame ${frame.payload.toString('utf8').slice(0, 120)}`);
      else if (value.type === 'error') {
        const code = value.error?.code;
        if (!isErrorCode(code)) problems.push(`error frame with unknown code ${JSON.stringify(code)}`);
        else if (code === 'internal') problems.push(`error frame with code internal: ${frame.payload.toString('utf8').slice(0, 160)}`);
        if (typeof value.error?.reason !== 'string') problems.push('error frame without a reason');
      }
      break;
    }
    case Opcode.close: {
      if (frame.payload.length === 1 || frame.payload.length > 125) problems.push(`close frame payload of ${frame.payload.length} bytes`);
      const code = closeCodeOf(frame);
      if (code !== undefined && !HOSTILE_CLOSE_CODES.has(code) && !echoable.includes(code)) problems.push(`close code ${code} (${frame.payload.subarray(2).toString('utf8')})`);
      break;
    }
    case Opcode.ping:
    case Opcode.pong:
      if (frame.payload.length > 125) problems.push('control frame over 125 bytes');
      break;
    default:
      problems.push(`server frame with opcode ${frame.opcode}`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Running attacks

/**
 * The most a never-reading client can be sent before a gateway that bounds what it writes sheds it:
 * the kernel's largest send buffer (the gateway's end) and twice its default receive buffer (the
 * client's end, which does not grow while nothing is read), twice the gateway's bound, and 1 MiB
 * of slack. Read from `/proc` on Linux; Linux defaults elsewhere.
 */
export function shedBound(maxBufferedBytes: number): number {
  const field = (path: string, i: number, fallback: number): number => {
    try {
      return Number(readFileSync(path, 'utf8').trim().split(/\s+/)[i]) || fallback;
    } catch {
      return fallback;
    }
  };
  const send = field('/proc/sys/net/ipv4/tcp_wmem', 2, 4 * 1024 * 1024);
  const receive = field('/proc/sys/net/ipv4/tcp_rmem', 1, 128 * 1024);
  return send + 2 * receive + 2 * maxBufferedBytes + 1024 * 1024;
}

export interface RunOptions {
  /** Give up on an HTTP attack after this many ms (cover the longest poll hold). */
  readonly httpDeadlineMs: number;
  /** Give up on a WebSocket attack this many ms after its last write. */
  readonly wsDeadlineMs: number;
  /** After the last write, an answer is taken as complete once nothing arrived for this long. */
  readonly idleMs: number;
  /** The most a client that must be shed may receive (see {@link shedBound}). */
  readonly shedBoundBytes: number;
  /** How long past a slow connection's bound to keep watching, so a late cut is reported with its time (default 1000). */
  readonly cutGraceMs?: number;
}

export const DEFAULT_RUN_OPTIONS: RunOptions = { httpDeadlineMs: 3000, wsDeadlineMs: 2500, idleMs: 120, shedBoundBytes: shedBound(4 * 1024 * 1024) };

/** What one attack got. */
export interface AttackOutcome {
  readonly attack: Attack;
  /** Broken promises: each one fails the run. */
  readonly violations: string[];
  /** Statuses of the HTTP answers received (the upgrade's 101 included). */
  readonly statuses: number[];
  /** Error codes received: in JSON error bodies and WebSocket error frames. */
  readonly codes: string[];
  /** Close code the server sent (WebSocket), 0 for a close without a code, undefined for none. */
  readonly closeCode: number | undefined;
  /** The connection ended from the server's side (or by reset) before the attacker left. */
  readonly closedByServer: boolean;
  /** A complete request was answered by closing the connection without a response. */
  readonly droppedSilently: boolean;
  /** Error answers that were not coded JSON (written by Node or `ws`, not the gateway). */
  readonly uncoded: number;
  readonly bytesSent: number;
  readonly elapsed: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The `error.code` in a JSON text, if it is one. */
function errorCodeIn(text: string): string | undefined {
  try {
    const code = (JSON.parse(text) as { error?: { code?: unknown } } | null)?.error?.code;
    return typeof code === 'string' ? code : undefined;
  } catch {
    return undefined;
  }
}

/** Runs one attack against 127.0.0.1:`port`. Never rejects: everything that goes wrong is a violation in the outcome. */
export function runAttack(port: number, attack: Attack, options: RunOptions = DEFAULT_RUN_OPTIONS): Promise<AttackOutcome> {
  return attack.kind === 'http' ? runHttp(port, attack, options) : runWs(port, attack, options);
}

function runHttp(port: number, attack: HttpAttack, options: RunOptions): Promise<AttackOutcome> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    const chunks: Buffer[] = [];
    let lastData = started;
    let closed = false;
    let closedAt = 0;
    let writesDone = false;
    let bytesSent = 0;
    let settled = false;
    const deadline = attack.cutWithinMs !== undefined ? attack.cutWithinMs + (options.cutGraceMs ?? 1000) : options.httpDeadlineMs;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearInterval(ticker);
      socket.destroy();
      const received = Buffer.concat(chunks);
      const parsed = parseHttpAnswers(received, attack.methods, closed);
      const violations: string[] = [];
      if (parsed.problem !== undefined) violations.push(`malformed answer: ${parsed.problem}`);
      let uncoded = 0;
      parsed.answers.forEach((a, i) => {
        const last = i === parsed.answers.length - 1;
        if (!a.complete && (!last || closed) && !a.untilClose) violations.push(`answer ${a.statusLine} cut short (${a.body.length} bytes of body)`);
        const judged = judgeHttpAnswer(a);
        violations.push(...judged.problems);
        if (judged.uncoded) uncoded += 1;
        if (attack.statuses !== undefined && !attack.statuses.includes(a.status)) violations.push(`status ${a.status}, expected ${attack.statuses.join(' or ')}`);
      });
      const answered = parsed.answers.length > 0;
      if (attack.owed && !answered && !closed) violations.push(`no answer within ${deadline} ms and the connection is still open`);
      if (attack.cutWithinMs !== undefined) {
        if (!closed) violations.push(`slow connection not cut within ${deadline} ms`);
        else if (closedAt - started > attack.cutWithinMs) violations.push(`slow connection cut after ${closedAt - started} ms, bound ${attack.cutWithinMs} ms`);
      }
      resolve({
        attack,
        violations,
        statuses: parsed.answers.map((a) => a.status),
        codes: parsed.answers.flatMap((a) => {
          const code = a.status >= 400 && a.complete ? errorCodeIn(a.body.toString('utf8')) : undefined;
          return code === undefined ? [] : [code];
        }),
        closeCode: undefined,
        closedByServer: closed,
        droppedSilently: attack.owed && !answered && closed,
        uncoded,
        bytesSent,
        elapsed: Date.now() - started,
      });
    };
    const complete = (): boolean => {
      const parsed = parseHttpAnswers(Buffer.concat(chunks), attack.methods, false);
      const last = parsed.answers.at(-1);
      // A stream (SSE, an upgrade) counts as answered once its head arrived.
      return last !== undefined && (last.complete || last.untilClose || parsed.upgraded !== undefined || (header(last, 'content-type') ?? '').startsWith('text/event-stream'));
    };
    const ticker = setInterval(() => {
      const now = Date.now();
      // At the deadline, read what already arrived first (timers run before I/O after a busy spell).
      if (closed || now - started > deadline) setImmediate(finish);
      else if (attack.cutWithinMs === undefined && writesDone && now - lastData >= options.idleMs && chunks.length > 0 && complete()) finish();
    }, 20);
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      lastData = Date.now();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      closedAt = Date.now();
      finish();
    });
    socket.on('connect', () => {
      void (async () => {
        for (const w of attack.writes) {
          if (w.delayMs > 0) await sleep(w.delayMs);
          if (closed || settled || socket.destroyed) break;
          socket.write(w.bytes);
          bytesSent += w.bytes.length;
        }
        writesDone = true;
        lastData = Math.max(lastData, Date.now());
      })();
    });
  });
}

function runWs(port: number, attack: WsAttack, options: RunOptions): Promise<AttackOutcome> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    let head = Buffer.alloc(0);
    let upgradedAt = 0;
    let frameBytes: Buffer = Buffer.alloc(0);
    const frames: ServerWsFrame[] = [];
    let frameProblem: string | undefined;
    let lastData = started;
    let lastWrite = started;
    let closed = false;
    let closedAt = 0;
    let writesDone = false;
    let bytesSent = 0;
    let settled = false;
    let handshake: HttpAnswer | undefined;
    const owed: RequestId[] = [];
    const echoable: number[] = [1000];
    const answersTo = (id: RequestId): number =>
      frames.filter((f) => {
        if (f.opcode !== Opcode.text) return false;
        try {
          const v = JSON.parse(f.payload.toString('utf8')) as { type?: string; id?: RequestId };
          return (v.type === 'reply' || v.type === 'error' || v.type === 'pong') && v.id === id;
        } catch {
          return false;
        }
      }).length;
    const serverClosed = (): boolean => closed || frames.some((f) => f.opcode === Opcode.close);
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearInterval(ticker);
      const violations: string[] = [];
      // Judged before leaving: a request still unanswered on an open connection is a hang, however the attacker then leaves.
      if (!serverClosed()) {
        for (const id of owed) if (answersTo(id) === 0) violations.push(`request ${JSON.stringify(id)} never answered on an open connection`);
      }
      const done = (): void => {
        socket.destroy();
        if (handshake === undefined) violations.push(closed ? 'closed during the handshake' : `no handshake answer: ${JSON.stringify(head.toString('latin1').slice(0, 120))}`);
        else if (handshake.status !== 101 && attack.upgradeMayBeRefused === true) violations.push(...judgeHttpAnswer(handshake).problems);
        else if (handshake.status !== 101) violations.push(`valid upgrade answered ${handshake.statusLine}`);
        if (frameProblem !== undefined) violations.push(frameProblem);
        for (const f of frames) violations.push(...judgeServerFrame(f, echoable));
        const texts = frames.filter((f) => f.opcode === Opcode.text);
        const first = texts[0]?.payload.toString('utf8') ?? '';
        if (texts.length > 0 && !first.startsWith('{"type":"welcome"')) violations.push(`first frame is not welcome: ${first.slice(0, 100)}`);
        const closeFrame = frames.find((f) => f.opcode === Opcode.close);
        const closeCode = closeFrame === undefined ? undefined : (closeCodeOf(closeFrame) ?? 0);
        const byServer = serverClosed();
        for (const id of owed) {
          const n = answersTo(id);
          if (n > 1) violations.push(`request ${JSON.stringify(id)} answered ${n} times`);
        }
        if (attack.mustBeShed === true) {
          if (closeCode !== undefined && closeCode !== 4001) violations.push(`a client that had to be shed was closed with ${closeCode}, not 4001`);
          if (!byServer) violations.push(`a never-reading client owed more than its bound was not shed: it read ${received} bytes and the connection is still open`);
          else if (received > options.shedBoundBytes) violations.push(`a never-reading client was sent ${received} bytes before being shed (bound ${options.shedBoundBytes})`);
        }
        if (attack.expectClose !== undefined && attack.expectClose.length > 0 && (closeCode === undefined || !attack.expectClose.includes(closeCode))) {
          violations.push(
            `closed with ${closeCode ?? 'no close frame'}, expected ${attack.expectClose.join(' or ')} ` +
              `(TCP ${closed ? `closed after ${closedAt - started} ms` : 'open'}, ${frames.length} frames received, finished after ${Date.now() - started} ms)`,
          );
        }
        if (attack.cutWithinMs !== undefined) {
          if (!closed) violations.push(`silent WebSocket peer not cut within ${attack.cutWithinMs + (options.cutGraceMs ?? 1500)} ms`);
          else if (closedAt - upgradedAt > attack.cutWithinMs) violations.push(`silent WebSocket peer cut after ${closedAt - upgradedAt} ms, bound ${attack.cutWithinMs} ms`);
        }
        resolve({
          attack,
          violations,
          statuses: handshake === undefined ? [] : [handshake.status],
          codes: texts.flatMap((f) => {
            const code = errorCodeIn(f.payload.toString('utf8'));
            return code === undefined ? [] : [code];
          }),
          closeCode,
          closedByServer: byServer,
          droppedSilently: false,
          uncoded: 0,
          bytesSent,
          elapsed: Date.now() - started,
        });
      };
      if (attack.end === 'close' && !serverClosed() && socket.writable) {
        // Leave politely: a close frame, then wait briefly for the server's close.
        socket.write(clientFrame(Opcode.close, Buffer.from([0x03, 0xe8])));
        const waitClose = setInterval(() => {
          if (serverClosed() || Date.now() - lastWrite > 500) {
            clearInterval(waitClose);
            done();
          }
        }, 20);
        lastWrite = Date.now();
      } else done();
    };
    // Until the writes (and a deliberate pause in reading after them) are done, the deadline waits for them.
    const deadline = (): number =>
      attack.cutWithinMs !== undefined
        ? upgradedAt + attack.cutWithinMs + (options.cutGraceMs ?? 1500)
        : lastWrite + options.wsDeadlineMs + (writesDone ? 0 : (attack.pauseReadingMs ?? 0));
    const ticker = setInterval(() => {
      const now = Date.now();
      if (closed) return finish();
      // At a deadline, read what already arrived first (timers run before I/O after a busy spell).
      if (handshake === undefined) {
        if (now - started > options.httpDeadlineMs) setImmediate(finish);
        return;
      }
      if (now > deadline()) return void setImmediate(finish);
      if (attack.cutWithinMs !== undefined || !writesDone) return;
      const replied = owed.every((id) => answersTo(id) > 0);
      if (now - lastData >= options.idleMs && (replied || serverClosed())) finish();
    }, 20);
    /** Bytes received after the handshake. */
    let received = 0;
    const onFrames = (chunk: Buffer): void => {
      received += chunk.length;
      frameBytes = frameBytes.length === 0 ? chunk : Buffer.concat([frameBytes, chunk]);
      const parsed = parseServerFrames(frameBytes);
      frames.push(...parsed.frames);
      frameBytes = Buffer.from(parsed.rest);
      if (parsed.problem !== undefined) frameProblem ??= parsed.problem;
    };
    socket.on('data', (chunk: Buffer) => {
      lastData = Date.now();
      if (handshake !== undefined) return onFrames(chunk);
      head = Buffer.concat([head, chunk]);
      const parsed = parseHttpAnswers(head, ['GET'], false);
      if (parsed.problem !== undefined) {
        handshake = { status: 0, statusLine: parsed.problem, headers: new Map(), body: Buffer.alloc(0), complete: true, untilClose: false };
        return finish();
      }
      const answer = parsed.answers[0];
      if (answer === undefined) return;
      handshake = answer;
      upgradedAt = Date.now();
      if (answer.status !== 101) return finish();
      if (parsed.upgraded !== undefined && parsed.upgraded.length > 0) onFrames(parsed.upgraded);
      if (attack.pauseReadingMs !== undefined) socket.pause();
      void send();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      closedAt = Date.now();
      finish();
    });
    const send = async (): Promise<void> => {
      let aligned = true;
      for (const step of attack.steps) {
        if (step.delayMs > 0) await sleep(step.delayMs);
        if (closed || settled || socket.destroyed) break;
        if (aligned) {
          owed.push(...(step.replyIds ?? []));
          echoable.push(...(step.closeCodes ?? []));
        }
        if (step.desync === true) aligned = false;
        socket.write(step.bytes);
        bytesSent += step.bytes.length;
        lastWrite = Date.now();
      }
      if (attack.pauseReadingMs !== undefined && !closed) {
        // Everything handed to the socket (not necessarily taken: a gateway that shed this client stops
        // reading it); give the gateway time to work through it, then read what it kept for us.
        // Unsolicited pongs (RFC 6455 allows them) keep the heartbeat sweep from cutting a client it cannot see answering.
        const pong = clientFrame(Opcode.pong, '');
        const keepAlive = setInterval(() => socket.write(pong), 250);
        await sleep(attack.pauseReadingMs);
        clearInterval(keepAlive);
        lastWrite = Date.now();
        socket.resume();
      }
      // Idle is measured from the end of writing (or of the pause), not from the handshake.
      lastData = Math.max(lastData, Date.now());
      writesDone = true;
    };
    socket.on('connect', () => {
      socket.write(
        `GET ${attack.path} HTTP/1.1\r\nhost: gateway\r\nconnection: Upgrade\r\nupgrade: websocket\r\n${(attack.headers ?? []).map((h) => `${h}\r\n`).join('')}` +
          `sec-websocket-version: 13\r\nsec-websocket-key: ${randomBytes(16).toString('base64')}\r\n\r\n`,
      );
    });
  });
}

/** Runs `attacks` with at most `concurrency` at once; outcomes in input order. */
export async function runAttacks(port: number, attacks: readonly Attack[], concurrency: number, options: RunOptions = DEFAULT_RUN_OPTIONS): Promise<AttackOutcome[]> {
  const out: AttackOutcome[] = new Array<AttackOutcome>(attacks.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < attacks.length) {
      const i = next++;
      out[i] = await runAttack(port, attacks[i] as Attack, options);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, attacks.length) }, worker));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tallies

/** Counts over many outcomes, per attack class: inputs, statuses, close codes, silent drops, uncoded errors. */
export class HostileTally {
  readonly perClass = new Map<AttackClass, { inputs: number; bytes: number; violations: number }>();
  readonly statuses = new Map<number, number>();
  readonly codes = new Map<string, number>();
  readonly closeCodes = new Map<string, number>();
  /** Requests answered by a silent close: count and one example, by label. */
  readonly dropped = new Map<string, { count: number; example: string }>();
  /** Uncoded error answers by status line. */
  readonly uncoded = new Map<string, number>();
  violations: string[] = [];

  get inputs(): number {
    let n = 0;
    for (const c of this.perClass.values()) n += c.inputs;
    return n;
  }

  add(o: AttackOutcome, describe: (a: Attack) => string): void {
    const c = this.perClass.get(o.attack.cls) ?? { inputs: 0, bytes: 0, violations: 0 };
    c.inputs += 1;
    c.bytes += o.bytesSent;
    c.violations += o.violations.length;
    this.perClass.set(o.attack.cls, c);
    for (const s of o.statuses) this.statuses.set(s, (this.statuses.get(s) ?? 0) + 1);
    for (const code of o.codes) this.codes.set(code, (this.codes.get(code) ?? 0) + 1);
    if (o.attack.kind === 'ws') {
      const key = o.closeCode === undefined ? (o.closedByServer ? 'tcp close' : 'open') : String(o.closeCode);
      this.closeCodes.set(key, (this.closeCodes.get(key) ?? 0) + 1);
    }
    if (o.droppedSilently) {
      const key = o.attack.label.replace(/"[^"]*"/g, '"..."').slice(0, 60);
      const d = this.dropped.get(key) ?? { count: 0, example: describe(o.attack).slice(0, 200) };
      d.count += 1;
      this.dropped.set(key, d);
    }
    if (o.uncoded > 0) this.uncoded.set(o.attack.cls, (this.uncoded.get(o.attack.cls) ?? 0) + o.uncoded);
    for (const v of o.violations) this.violations.push(`${v}\n    input: ${describe(o.attack)}`);
  }

  /** A short multi-line summary. */
  summary(): string {
    const lines = [`${this.inputs} hostile inputs`];
    for (const [cls, c] of this.perClass) lines.push(`  ${cls.padEnd(13)} ${String(c.inputs).padStart(5)} inputs ${String(Math.round(c.bytes / 1024)).padStart(7)} KiB sent  ${c.violations} violations`);
    const fmt = (m: Map<string | number, number>): string => [...m].sort((a, b) => String(a[0]).localeCompare(String(b[0]))).map(([k, v]) => `${k}:${v}`).join(' ');
    lines.push(`  HTTP statuses: ${fmt(this.statuses)}`);
    lines.push(`  error codes: ${fmt(this.codes)}`);
    lines.push(`  WebSocket endings: ${fmt(this.closeCodes)}`);
    if (this.uncoded.size > 0) lines.push(`  uncoded (plain text) error answers by class: ${fmt(this.uncoded)}`);
    for (const [k, d] of this.dropped) lines.push(`  closed without an answer, ${d.count}x ${k}, e.g. ${d.example}`);
    return lines.join('\n');
  }
}
