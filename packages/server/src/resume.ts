/**
 * The resume merge, as a pure function. A subscription joins the live feed first and buffers,
 * then reads history; this decides what the client gets: every publication after its position
 * exactly once and in seq order, from history and the live buffer together, with an explicit gap
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
 * Splits the live buffer around the epoch of the history read (`epoch`). The buffer is in arrival
 * order, so publications of another epoch that arrived before the last one of `epoch` predate the
 * read (stale: dropped); those after it started a newer epoch. With no publication of `epoch` in the
 * buffer, foreign ones are taken as stale: if they were newer, the next live publication of their
 * epoch reveals the change and the subscription reports it as a gap.
 */
function splitLive(live: readonly Publication[], epoch: string): { current: Publication[]; newer: Publication[] } {
  let lastCurrent = -1;
  live.forEach((pub, i) => {
    if (pub.position.epoch === epoch) lastCurrent = i;
  });
  const current: Publication[] = [];
  const newer: Publication[] = [];
  live.forEach((pub, i) => {
    if (pub.position.epoch === epoch) current.push(pub);
    else if (lastCurrent !== -1 && i > lastCurrent) newer.push(pub);
  });
  return { current, newer };
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
  let lostAny = false;
  let last: Position = top;
  const gapTo = (to: Position, reason: Gap['reason']): void => {
    lostAny = true;
    if (!ephemeral) steps.push({ gap: { channel, from: last, to, reason } });
    last = to;
  };
  const resuming = since !== undefined && !ephemeral;
  if (resuming) {
    if (since.epoch !== top.epoch) {
      last = since;
      gapTo(top, 'epoch');
    } else if (since.seq > top.seq) {
      throw new TidingsError('bad_position', `position ${since.seq} is ahead of ${channel} (latest is ${top.seq})`);
    } else {
      last = since;
    }
  }
  const { current, newer } = splitLive(live, top.epoch);
  // History and the buffer overlap; together, in seq order, they cover as much as can be recovered.
  const known = [...page.publications.filter((p) => p.position.epoch === top.epoch), ...current].sort(
    (a, b) => a.position.seq - b.position.seq,
  );
  let tailChecked = !resuming;
  for (const pub of known) {
    const p = pub.position;
    if (p.seq <= last.seq) continue;
    if (!tailChecked && p.seq > top.seq) {
      tailChecked = true;
      if (last.seq < top.seq) gapTo(top, page.evicted ?? 'trimmed');
    }
    if (p.seq > last.seq + 1) gapTo({ epoch: p.epoch, seq: p.seq - 1 }, p.seq - 1 <= top.seq ? (page.evicted ?? 'trimmed') : 'trimmed');
    steps.push({ pub });
    last = p;
  }
  // Nothing held the publications up to the top: they were evicted.
  if (!tailChecked && last.seq < top.seq) gapTo(top, page.evicted ?? 'trimmed');
  for (const pub of newer) {
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
  return { steps, last, recovered: resuming && !lostAny };
}

/**
 * Plans the next part of a replay that continues from `since` (where its client is) towards `target`
 * (where its first plan ended: what it goes live after), with a history read of at most `limit`
 * publications. It plans up to the read's last publication when the read stopped short of `target`
 * (`more`: there is more to read), else up to `target`; publications after `target` are not its
 * business but the live buffer's. When the channel is no longer in `target`'s epoch, the read is
 * planned to its end with the whole live buffer, as {@link planResume} does (`whole`).
 */
export function planPart(
  channel: string,
  since: Position,
  page: HistoryPage,
  live: readonly Publication[],
  limit: number,
  target: Position,
): ResumePlan & { readonly more: boolean; readonly whole: boolean } {
  const { top } = page;
  // Another epoch: the caller read it whole, or only the epoch's change matters (no page publication does).
  if (since.epoch !== target.epoch || top.epoch !== target.epoch) return { ...planResume(channel, since, page, live, false), more: false, whole: true };
  const upTo = (p: Publication, seq: number): boolean => p.position.epoch === target.epoch && p.position.seq <= seq;
  const publications = page.publications.filter((p) => upTo(p, target.seq));
  const cut = publications[publications.length - 1]?.position;
  if (page.publications.length >= limit && cut !== undefined && cut.seq < Math.min(target.seq, top.seq)) {
    const part = planResume(channel, since, { ...page, top: cut, publications }, live.filter((p) => upTo(p, cut.seq)), false);
    return { ...part, more: true, whole: false };
  }
  // The rest up to the target, with the history's top where the target is past it (live publications reached further).
  const end = target.seq <= top.seq ? target : top;
  return { ...planResume(channel, since, { ...page, top: end, publications }, live.filter((p) => upTo(p, target.seq)), false), more: false, whole: false };
}
