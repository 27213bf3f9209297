/**
 * Reading many messages of a subject filter from a JetStream stream, in stream order, with what a
 * NATS 2.9 server offers (batched direct gets need 2.11): an ephemeral pull consumer in memory
 * (`filter_subject`, the singular form 2.9 accepts), pulled with `no_wait`, then deleted (its
 * `inactive_threshold` removes it anyway if the delete is lost).
 * @module
 */
import { createInbox, nanos, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, type JetStreamManager } from '@nats-io/jetstream';
import { ackInfo } from './nats-codec.js';

/** A message as a consumer delivered it. */
export interface Delivered {
  readonly subject: string;
  /** Stream sequence. */
  readonly seq: number;
  /** Server timestamp, ms since the epoch. */
  readonly time: number;
  readonly headers: MsgHdrs | undefined;
  readonly data: Uint8Array;
}

/** Most messages asked for in one pull. */
const PULL_BATCH = 1000;

/** Every message held under `filter`, oldest first, at most `max`. */
export async function readAll(nc: NatsConnection, jsm: JetStreamManager, stream: string, filter: string, max: number, timeout: number): Promise<Delivered[]> {
  const ci = await jsm.consumers.add(stream, {
    filter_subject: filter,
    deliver_policy: DeliverPolicy.All,
    ack_policy: AckPolicy.None,
    mem_storage: true,
    num_replicas: 1,
    inactive_threshold: nanos(Math.max(2 * timeout, 5000)),
  });
  try {
    const out: Delivered[] = [];
    while (out.length < max) {
      const more = await pull(nc, `$JS.API.CONSUMER.MSG.NEXT.${stream}.${ci.name}`, Math.min(max - out.length, PULL_BATCH), timeout, out);
      if (!more) break;
    }
    return out;
  } finally {
    jsm.consumers.delete(stream, ci.name).catch(() => undefined);
  }
}

/** One pull of up to `batch` messages into `out`; resolves whether more may be held. */
function pull(nc: NatsConnection, api: string, batch: number, timeout: number, out: Delivered[]): Promise<boolean> {
  return new Promise<boolean>((resolve, reject) => {
    let got = 0;
    const inbox = createInbox();
    const finish = (more: boolean | Error): void => {
      clearTimeout(timer);
      sub.unsubscribe();
      if (more instanceof Error) reject(more);
      else resolve(more);
    };
    const timer = setTimeout(() => finish(new Error(`no answer to a pull from ${api} within ${timeout} ms`)), timeout);
    const sub = nc.subscribe(inbox, {
      callback: (err, msg) => {
        if (err !== null) {
          finish(err);
          return;
        }
        // A status (404 no messages, 408 the no_wait pull ended): nothing more now.
        if (msg.headers !== undefined && msg.headers.code > 0) {
          finish(false);
          return;
        }
        const info = ackInfo(msg.reply ?? '');
        if (info === undefined) return;
        out.push({ subject: msg.subject, seq: info.seq, time: info.time, headers: msg.headers, data: msg.data });
        got += 1;
        if (info.pending === 0) finish(false);
        else if (got >= batch) finish(true);
      },
    });
    nc.publish(api, JSON.stringify({ batch, no_wait: true }), { reply: inbox });
  });
}
