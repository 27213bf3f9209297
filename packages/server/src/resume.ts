/**
 * The resume merge, as a pure function. A subscription joins the live feed first and buffers,
 * then reads history; this decides what the client gets: every publication after its position
 * exactly once and in seq order, history first and buffered live after, with an explicit gap
 * wherever publications could not be recovered.
 * @module
 */
import { TidingsError, type Gap, type Position } from '@tidings/protocol';
import type { HistoryPage, Publication } from './brokers/broker.js';

/** One thing to send, in order. */
export type ResumeStep = { readonly gap: Gap; readonly pub?: undefined } | { readonly pub: Publication; readonly gap?: undefined };

/** What to send a (re)subscribing client. */
export interface ResumePlan {
  readonly steps: ResumeStep[];
  /** The position after the plan: the next live publication must follow it. */
  readonly last: Position;
  /** True when `since` was given and nothing was lost. */
  readonly recovered: boolean;
}

/**
 * Plans a resume of `channel` from `since` (undefined: start from the page's top, "now").
 * `page` is history read after joining the live feed; `live` is what the feed delivered meanwhile.
 * Ephemeral channels promise no resume, so they never report gaps.
 * Throws `bad_position` when `since` is ahead of the channel in the same epoch.
 */
export function planResume(
  channel: string,
  since: Position | undefined,
  page: HistoryPage,
  live: readonly Publication[],
  ephemeral: boolean,
): ResumePlan {
  const { top } = page;
  const steps: ResumeStep[] = [];
  let last: Position = top;
  let lostAny = false;
  const gapTo = (to: Position, reason: Gap['reason']): void => {
    lostAny = true;
    if (!ephemeral) steps.push({ gap: { channel, from: last, to, reason } });
  };
  if (since !== undefined && !ephemeral) {
    if (since.epoch !== top.epoch) {
      last = since;
      gapTo(top, 'epoch');
      last = top;
    } else if (since.seq > top.seq) {
      throw new TidingsError('bad_position', `position ${since.seq} is ahead of ${channel} (latest is ${top.seq})`);
    } else {
      last = since;
      for (const pub of page.publications) {
        const p = pub.position;
        if (p.epoch !== last.epoch || p.seq <= last.seq) continue;
        if (p.seq > last.seq + 1) gapTo({ epoch: p.epoch, seq: p.seq - 1 }, page.evicted ?? 'trimmed');
        steps.push({ pub });
        last = p;
      }
      // History holds nothing between `last` and the top: those were evicted.
      if (last.seq < top.seq) {
        gapTo(top, page.evicted ?? 'trimmed');
        last = top;
      }
    }
  }
  for (const pub of live) {
    const p = pub.position;
    if (p.epoch === last.epoch) {
      if (p.seq <= last.seq) continue;
      if (p.seq > last.seq + 1) gapTo({ epoch: p.epoch, seq: p.seq - 1 }, 'trimmed');
    } else {
      gapTo({ epoch: p.epoch, seq: p.seq - 1 }, 'epoch');
    }
    steps.push({ pub });
    last = p;
  }
  return { steps, last, recovered: since !== undefined && !ephemeral && !lostAny };
}
