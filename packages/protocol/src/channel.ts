/**
 * Channel names: `namespace:name`, or a bare `name` in the default namespace (`""`).
 * The characters are chosen so a name is safe unescaped in an SSE `id:` line and a cursor:
 * `=` and `,` are cursor separators and never appear in a channel name.
 * @module
 */
import { TidingsError } from './codes.js';

/** A validated channel name. */
export type Channel = string;

/** Longest channel name accepted, in characters. */
export const MAX_CHANNEL_LENGTH = 200;

const NAMESPACE = /^[A-Za-z0-9_-]{1,32}$/;
const NAME = /^[A-Za-z0-9_.\-@/:]+$/;

/** The parts of a channel name. */
export interface ChannelParts {
  readonly namespace: string;
  readonly name: string;
}

/** Why `channel` is invalid, or undefined when it is valid. */
export function channelProblem(channel: unknown): string | undefined {
  if (typeof channel !== 'string') return 'channel must be a string';
  if (channel.length === 0) return 'channel must not be empty';
  if (channel.length > MAX_CHANNEL_LENGTH) return `channel is longer than ${MAX_CHANNEL_LENGTH} characters`;
  const colon = channel.indexOf(':');
  if (colon === -1) {
    return NAME.test(channel) ? undefined : 'channel may contain only letters, digits and _ . - @ / :';
  }
  const namespace = channel.slice(0, colon);
  const name = channel.slice(colon + 1);
  if (!NAMESPACE.test(namespace)) return 'namespace must be 1-32 letters, digits, _ or -';
  if (name.length === 0) return 'channel name after the namespace must not be empty';
  return NAME.test(name) ? undefined : 'channel may contain only letters, digits and _ . - @ / :';
}

/** True when `channel` is a valid channel name. */
export function isChannel(channel: unknown): channel is Channel {
  return channelProblem(channel) === undefined;
}

/** Splits a valid channel into namespace and name; throws `bad_channel` when invalid. */
export function parseChannel(channel: unknown): ChannelParts {
  const problem = channelProblem(channel);
  if (problem !== undefined) throw new TidingsError('bad_channel', problem);
  const c = channel as string;
  const colon = c.indexOf(':');
  return colon === -1 ? { namespace: '', name: c } : { namespace: c.slice(0, colon), name: c.slice(colon + 1) };
}

/** Message types: dot-separated words such as `chat.message`; never contain `:` (reserved for control events). */
const MESSAGE_TYPE = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;

/** Longest message type accepted. */
export const MAX_TYPE_LENGTH = 64;

/**
 * Types an SSE event may not be named: a plain EventSource fires its own `onerror` / `onopen` for an
 * event named `error` / `open`, which an application takes for a failed or new connection.
 */
const RESERVED_TYPES: ReadonlySet<string> = new Set(['error', 'open']);

/** Why `type` is not a valid message type, or undefined. */
export function messageTypeProblem(type: unknown): string | undefined {
  if (typeof type !== 'string') return 'type must be a string';
  if (type.length === 0 || type.length > MAX_TYPE_LENGTH) return `type must be 1-${MAX_TYPE_LENGTH} characters`;
  if (RESERVED_TYPES.has(type)) return `type '${type}' is reserved (an EventSource takes it for its own ${type} event)`;
  return MESSAGE_TYPE.test(type) ? undefined : 'type must be dot-separated words of letters, digits, _ or -';
}
