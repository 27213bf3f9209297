/**
 * Names, subjects and records of the NATS broker (`nats.ts`), as pure functions.
 *
 * A channel becomes one subject token: every character outside `[A-Za-z0-9_-@/:]` (channel names
 * contain `.`, which separates subject tokens) is written as `~` and two upper-case hex digits of
 * each of its UTF-8 bytes, and `~` itself likewise, so the encoding is reversible and the token never
 * holds `.`, `*`, `>` or white space. The default namespace ("") is the token `~`, which no named
 * namespace can be. With prefix `p`:
 *
 * | subject | stream | what |
 * |---|---|---|
 * | `p.h.<ns>.<name>` | `p_H` (default ns) / `p_H_<ns>` | a publication (history) |
 * | `p.k.<ns>.<name>.<key id>` | same | an idempotency receipt: where a keyed publish landed |
 * | `p.l.<ns>.<name>` | none (core NATS) | the live feed: publications republished by the stream once stored, and presence events |
 * | `p.t.<ns>.<name>` | `p_T` | the channel's tail: its epoch and the highest seq it reserved |
 * | `p.p.<node>.<ns>.<name>.<client>` | `p_P` | a presence entry |
 * | `p.n.<node>` | `p_N` | a node's presence lease |
 * @module
 */
import { createHash } from 'node:crypto';
import type { Channel, Position } from '@tidings/protocol';

/** Headers of a publication (and of its receipt). */
export const H_EPOCH = 'Tidings-Epoch';
export const H_SEQ = 'Tidings-Seq';
export const H_TYPE = 'Tidings-Type';
/** Stream sequence of the channel's previous publication when this one was stored (0: none held). */
export const H_PREV = 'Tidings-Prev';
/** On the live subject: a presence event (`join` or `leave`) rather than a publication. */
export const H_PRESENCE = 'Tidings-Presence';

const KEEP = /^[A-Za-z0-9_\-@/:]$/;

/** One subject token for any string, reversibly (see the module comment). */
export function encodeToken(text: string): string {
  let out = '';
  for (const ch of text) {
    if (KEEP.test(ch)) {
      out += ch;
      continue;
    }
    for (const byte of Buffer.from(ch, 'utf8')) out += `~${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The string {@link encodeToken} encoded. */
export function decodeToken(token: string): string {
  if (!token.includes('~')) return token;
  const bytes: number[] = [];
  for (let i = 0; i < token.length; ) {
    if (token[i] === '~') {
      bytes.push(parseInt(token.slice(i + 1, i + 3), 16));
      i += 3;
    } else {
      bytes.push(token.charCodeAt(i));
      i += 1;
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** A channel's namespace ("" for the default one) and its name within it. */
export function splitChannel(channel: Channel): { readonly ns: string; readonly name: string } {
  const colon = channel.indexOf(':');
  return colon === -1 ? { ns: '', name: channel } : { ns: channel.slice(0, colon), name: channel.slice(colon + 1) };
}

/** The token of a namespace: `~` for the default one. */
export const nsToken = (ns: string): string => (ns === '' ? '~' : ns);

/** The channel whose namespace and name tokens these are. */
export function channelOf(nsTok: string, nameTok: string): Channel {
  const name = decodeToken(nameTok);
  return nsTok === '~' ? name : `${nsTok}:${name}`;
}

/** Every subject and stream name the broker uses, for one prefix. */
export class Names {
  constructor(readonly prefix: string) {}

  /** The history stream of a namespace. */
  historyStream(ns: string): string {
    return ns === '' ? `${this.prefix}_H` : `${this.prefix}_H_${ns}`;
  }
  get tailStream(): string {
    return `${this.prefix}_T`;
  }
  get presenceStream(): string {
    return `${this.prefix}_P`;
  }
  get leaseStream(): string {
    return `${this.prefix}_N`;
  }

  /** Subjects captured by a namespace's history stream. */
  historySubjects(ns: string): string[] {
    const t = nsToken(ns);
    return [`${this.prefix}.h.${t}.*`, `${this.prefix}.k.${t}.*.*`];
  }
  /** The republish rule that turns stored publications into the live feed. */
  republish(ns: string): { src: string; dest: string } {
    const t = nsToken(ns);
    return { src: `${this.prefix}.h.${t}.*`, dest: `${this.prefix}.l.${t}.{{wildcard(1)}}` };
  }

  history(channel: Channel): string {
    return this.#of('h', channel);
  }
  live(channel: Channel): string {
    return this.#of('l', channel);
  }
  tail(channel: Channel): string {
    return this.#of('t', channel);
  }
  receipt(channel: Channel, keyId: string): string {
    return `${this.#of('k', channel)}.${keyId}`;
  }
  presence(node: string, channel: Channel, client: string): string {
    const { ns, name } = splitChannel(channel);
    return `${this.prefix}.p.${encodeToken(node)}.${nsToken(ns)}.${encodeToken(name)}.${encodeToken(client)}`;
  }
  /** Every presence entry of a channel, on any node. */
  presenceOfChannel(channel: Channel): string {
    const { ns, name } = splitChannel(channel);
    return `${this.prefix}.p.*.${nsToken(ns)}.${encodeToken(name)}.*`;
  }
  /** Every presence entry of a node. */
  presenceOfNode(nodeTok: string): string {
    return `${this.prefix}.p.${nodeTok}.>`;
  }
  lease(node: string): string {
    return `${this.prefix}.n.${encodeToken(node)}`;
  }
  get leases(): string {
    return `${this.prefix}.n.*`;
  }

  /** The channel of a live, history or presence-entry subject; undefined for anything else. */
  channelOfSubject(subject: string): Channel | undefined {
    const parts = subject.split('.');
    const kind = parts[1];
    if (parts[0] !== this.prefix) return undefined;
    if ((kind === 'l' || kind === 'h') && parts.length === 4) return channelOf(parts[2] as string, parts[3] as string);
    if (kind === 'p' && parts.length === 6) return channelOf(parts[3] as string, parts[4] as string);
    return undefined;
  }

  #of(kind: string, channel: Channel): string {
    const { ns, name } = splitChannel(channel);
    return `${this.prefix}.${kind}.${nsToken(ns)}.${encodeToken(name)}`;
  }
}

/**
 * An idempotency key's id, unique per channel: the `Nats-Msg-Id` of the publish (JetStream
 * deduplicates it per stream, one stream per namespace) and the last token of its receipt.
 */
export function keyId(channel: Channel, key: string): string {
  return createHash('sha256').update(`${channel}\n${key}`, 'utf8').digest('base64url');
}

/**
 * A channel's tail record (subject `p.t.<ns>.<name>`, one per channel, never expiring): the life it
 * was written in, the channel's epoch, and a reservation: `seq` is at least every seq ever stored in
 * the epoch, and `base` the seq that was stored when the reservation was made. Written before the
 * publications it covers are stored, so it survives their expiry.
 */
export interface TailRecord {
  readonly life: string;
  readonly epoch: string;
  readonly base: number;
  readonly seq: number;
}

export function encodeTail(t: TailRecord): string {
  return `${t.life} ${t.epoch} ${t.base} ${t.seq}`;
}

export function decodeTail(text: string): TailRecord | undefined {
  const [life, epoch, base, seq] = text.split(' ');
  if (life === undefined || epoch === undefined || base === undefined || seq === undefined) return undefined;
  const b = Number(base);
  const s = Number(seq);
  if (!Number.isSafeInteger(b) || !Number.isSafeInteger(s) || b < 0 || s < b) return undefined;
  return { life, epoch, base: b, seq: s };
}

/** A position from publication (or receipt) headers; undefined when they do not hold one. */
export function positionOf(get: (name: string) => string): Position | undefined {
  const epoch = get(H_EPOCH);
  const seq = Number(get(H_SEQ));
  if (epoch === '' || !Number.isSafeInteger(seq) || seq < 1) return undefined;
  return { epoch, seq };
}

/** A presence entry as stored and announced (`x`: when it expires, ms since the epoch; absent in events). */
export interface PresenceRecord {
  readonly c: string;
  readonly u: string;
  readonly i: string | null;
  readonly n: string;
  readonly x?: number;
}

/** Life of a namespace: derived from when its history stream and the tail stream were created, so re-creating either (a store that lost its data) changes every epoch derived from it. */
export function lifeOf(tailCreated: string, historyCreated: string): string {
  const digest = createHash('sha256').update(`${tailCreated}|${historyCreated}`, 'utf8').digest();
  return digest.readUIntBE(0, 6).toString(36).padStart(8, '0').slice(-8) + digest.readUIntBE(6, 6).toString(36).padStart(8, '0').slice(-8);
}

/**
 * The stream sequence and server timestamp (ms) of a message delivered by a consumer, from its
 * reply subject (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`, or the
 * 2.10+ form with domain and account hash before the stream).
 */
export function ackInfo(reply: string): { readonly seq: number; readonly time: number; readonly pending: number } | undefined {
  const t = reply.split('.');
  if (t[0] !== '$JS' || t[1] !== 'ACK') return undefined;
  const at = t.length === 9 ? 5 : t.length >= 11 ? 7 : -1;
  if (at < 0) return undefined;
  const seq = Number(t[at]);
  const nanos = t[at + 2] ?? '';
  const time = /^\d{1,20}$/.test(nanos) ? Number(BigInt(nanos) / 1_000_000n) : 0;
  const pending = Number(t[at + 3]);
  return Number.isSafeInteger(seq) ? { seq, time, pending: Number.isSafeInteger(pending) ? pending : -1 } : undefined;
}
