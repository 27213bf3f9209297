/**
 * One table of error codes for every transport: an HTTP status for the HTTP endpoints, and the
 * same code string in WebSocket `error` frames. Close codes live in {@link CloseCode}.
 * @module
 */

/** Error codes with the HTTP status each maps to. */
export const ErrorCode = {
  bad_json: 400,
  bad_frame: 400,
  bad_request: 400,
  bad_channel: 400,
  bad_cursor: 400,
  bad_position: 400,
  /** Presence was asked of a channel whose namespace does not have `presence: true`. */
  presence_disabled: 400,
  request_timeout: 408,
  unknown_namespace: 404,
  unauthorized: 401,
  /** The client's token expired: get a new one and refresh (or reconnect with it). */
  token_expired: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  not_subscribed: 409,
  already_subscribed: 409,
  too_large: 413,
  unsupported_media_type: 415,
  limit_exceeded: 429,
  header_too_large: 431,
  unknown_method: 501,
  internal: 500,
  unavailable: 503,
  storage_full: 507,
  timeout: 504,
} as const;

/** A machine-readable error code. */
export type ErrorCode = keyof typeof ErrorCode;

/** HTTP status for an error code. */
export function httpStatus(code: ErrorCode): number {
  return ErrorCode[code];
}

/** True when `value` names a known error code. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ErrorCode, value);
}

/**
 * WebSocket close codes. 1xxx are RFC 6455 codes; 4xxx are ours. `reconnect` tells a client
 * whether to come back, and `immediate` whether to skip the backoff delay.
 */
export const CloseCode = {
  normal: { code: 1000, reconnect: false, immediate: false },
  going_away: { code: 1001, reconnect: true, immediate: false },
  protocol_error: { code: 1002, reconnect: false, immediate: false },
  policy: { code: 1008, reconnect: false, immediate: false },
  too_large: { code: 1009, reconnect: true, immediate: false },
  internal: { code: 1011, reconnect: true, immediate: false },
  /** A dependency (the broker's history) is failing: reconnect with backoff and resume; nothing was skipped. */
  unavailable: { code: 1013, reconnect: true, immediate: false },
  /** Server restarting or draining: come back at once (with a small random spread) and resume. */
  restart: { code: 4000, reconnect: true, immediate: true },
  /** The client fell too far behind; reconnect and resume from the last position. */
  slow_consumer: { code: 4001, reconnect: true, immediate: false },
  /** No pong within the heartbeat window. */
  heartbeat_timeout: { code: 4002, reconnect: true, immediate: false },
  /** Too many bad frames in a row: the peer does not speak this protocol. */
  bad_protocol: { code: 4003, reconnect: false, immediate: false },
  /** Credentials rejected: do not reconnect with the same credentials. */
  unauthorized: { code: 4401, reconnect: false, immediate: false },
  /** The token expired: get a new one from the token provider, then reconnect at once. */
  token_expired: { code: 4403, reconnect: true, immediate: true },
  /** The server is shedding load; reconnect with backoff. */
  overloaded: { code: 4503, reconnect: true, immediate: false },
} as const;

/** A named close reason. */
export type CloseName = keyof typeof CloseCode;

/** An error carrying a code from {@link ErrorCode} and a human-readable reason. */
export class TidingsError extends Error {
  override readonly name = 'TidingsError';
  readonly code: ErrorCode;
  /** The channel a refusal is about, when one channel of several was refused (SSE, long polling). */
  readonly channel: string | undefined;

  constructor(code: ErrorCode, reason: string, channel?: string) {
    super(reason);
    this.code = code;
    this.channel = channel;
  }

  /** HTTP status matching the code. */
  get status(): number {
    return httpStatus(this.code);
  }

  /** The same refusal, naming the channel it is about. */
  about(channel: string): TidingsError {
    return this.channel === channel ? this : new TidingsError(this.code, this.message, channel);
  }

  /** The wire shape `{ code, reason, channel? }`. */
  toJSON(): { code: ErrorCode; reason: string; channel?: string } {
    return this.channel === undefined ? { code: this.code, reason: this.message } : { code: this.code, reason: this.message, channel: this.channel };
  }
}
