// The open-loop rate ladder: each step publishes at a fixed rate, whatever is delivered, and is
// sustained when the deliveries kept up (the window's publications all delivered within a short
// drain, nothing skipped, lost or refused) with p99 under a bound. Levels are the reference rate
// times 2^(k/4). The first ladder of a side climbs from the reference (k = 0) in x2 steps until a
// step fails (or comes down the same way until one holds), then bisects twice (x1.41, x1.19);
// later ladders start at the first one's result (run twice if it fails the first time: it follows
// an idle pause) and move in x1.19 steps. A ladder whose steps are spent before a step failed above
// one that held keeps doubling until one fails (or it reaches the top), or halving until one holds
// (or the bottom fails). The figure is the median
// over the ladders of the highest rate sustained; the first failing step above it shows why it
// stopped there and which side ran out of CPU.

const K_MIN = -12;
/** The ladder's top: 64 times the reference rate. */
const K_MAX = 24;
/** Steps of the later ladders, which start near the result. */
const LATER_STEPS = 4;
const COARSE = 4;

/** Publications/s of level `k` above (or below) `rate`. */
export const levelRate = (rate, k) => rate * 2 ** (k / 4);

/**
 * Why a step was not sustained, or null when it was. Delivered within the window means keeping up:
 * at a steady latency the window's deliveries match its publications (give or take one), while a
 * server short of capacity falls behind by the shortfall, long before its p99 reaches the bound.
 * 90%: a pause of a tenth of the window (another process, a GC) is not a shortfall.
 */
export function verdict(m, cfg) {
  if (m.lost > 0) return 'subscribers lost';
  if (m.httpErrors > 0) return 'publishes refused';
  if (m.skipped > 0) return 'deliveries behind (publications skipped)';
  if (m.deliveredAtStop < 0.9 * m.published * m.perPublication - m.perPublication) return 'deliveries behind';
  if ((m.completeness ?? 0) < 0.99) return 'not all delivered';
  if (m.latency.p99 === null) return 'no latency samples';
  if (m.latency.p99 > cfg.ladderP99) return `p99 over ${cfg.ladderP99} ms`;
  return null;
}

/** Seconds of a step's window: at least `cfg.ladderDuration`, and long enough for 16 publications (at most 6 s). */
export const stepSeconds = (rate, cfg) => Math.max(cfg.ladderDuration, Math.min(6, 16 / rate));

/** What a ladder keeps of one step. */
function summary(k, rate, m, why) {
  return {
    k,
    rate,
    offered: rate * m.perPublication,
    // The window's publications, delivered: the rate offered as far as it was delivered.
    deliveriesPerSecond: (Math.min(1, m.completeness ?? 0) * m.published * m.perPublication) / m.seconds,
    sustained: why === null,
    why,
    latency: m.latency,
    cpu: m.cpu,
    saturated: m.saturated,
    completeness: m.completeness,
    published: m.published,
    deliveredInWindow: m.deliveredAtStop,
    publisherLagMs: m.publisherLagMs,
    seconds: m.seconds,
    otherLoad: m.otherLoad,
  };
}

/**
 * One ladder from level `start` in strides of `stride` levels for its first `most` steps, then x2
 * until it finds its limit (or the ladder's end); `measure(rate)` runs one window. Resolves with { best (k or null), steps, limit (the first failing step above best) }.
 */
async function climb(measure, { start, stride, most, retryFirst = false }, session, cfg, show) {
  const steps = [];
  const test = async (k) => {
    const rate = levelRate(session.rate, k);
    const m = await measure(rate);
    const step = summary(k, rate, m, verdict(m, cfg));
    steps.push(step);
    show(step);
    return step.sustained;
  };
  // The next stride, with `room` levels left before the ladder's end: its own while its steps last,
  // then x2, so that a ladder reports its limit, not where its steps ran out.
  const next = (room) => (steps.length < most ? stride : Math.max(stride, Math.min(COARSE, room)));
  let best = null;
  let failed = null;
  let k = start;
  let held = await test(k);
  // A later ladder's first step comes straight after an idle pause, at a level the first ladder
  // reached warm, from below: failing it once may be the pause (a heap and socket buffers shrunk
  // while idle), so it is run again, on top of the ladder's steps, before the ladder steps down.
  if (!held && retryFirst) {
    most += 1;
    held = await test(k);
  }
  if (held) {
    // Up until a step fails, to the top of the ladder.
    best = k;
    while (k + stride <= K_MAX) {
      k += next(K_MAX - k);
      if (!(await test(k))) {
        failed = k;
        break;
      }
      best = k;
    }
  } else {
    // Down until a step holds, to the bottom of the ladder.
    failed = k;
    while (k - stride >= K_MIN) {
      k -= next(k - K_MIN);
      if (await test(k)) {
        best = k;
        break;
      }
      failed = k;
    }
  }
  // Bisect between the highest step sustained and the one above it that failed.
  for (let half = stride / 2; half >= 1 && best !== null && failed === best + 2 * half && steps.length < most; half /= 2) {
    if (await test(best + half)) best += half;
    else failed = best + half;
  }
  const limit = steps.find((s) => s.k === failed) ?? null;
  // Where no step failed, the ladder reached its top.
  return { best, steps, limit, end: limit !== null ? 'failed' : 'top' };
}

/**
 * Runs `rounds` ladders for every side, the sides' order reversed every other round. `measure(side,
 * rate)` runs one window (it may throw: the side is then dropped by `guard`). Resolves with
 * { [sideId]: { max, bestK, rounds, at, limit, end ('failed' or 'top'), loadBound, ladders } }.
 */
export async function runLadders(sides, session, cfg, log, rounds, measure, guard) {
  const ladders = new Map(sides.map((s) => [s.id, []]));
  const fmt = (x) => Math.round(x).toLocaleString('en-US');
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? sides : [...sides].reverse();
    for (const side of order) {
      if (side.dropped) continue;
      const first = ladders.get(side.id)[0];
      if (round > 0 && first?.best === null) continue;
      const [start, stride, most] = round === 0 ? [0, COARSE, cfg.ladderSteps] : [first.best, 1, LATER_STEPS];
      log(`  ladder ${round + 1}/${rounds} ${side.label}: from ${fmt(levelRate(session.rate, start) * session.perPub)} deliveries/s, x${(2 ** (stride / 4)).toFixed(2)} steps`);
      const show = (s) =>
        log(`    ${fmt(s.offered)}/s offered: ${fmt(s.deliveriesPerSecond)}/s, p50 ${s.latency.p50?.toFixed(1)} p99 ${s.latency.p99?.toFixed(1)} ms, server ${Math.round(s.cpu.server * 100)}% load ${Math.round(s.cpu.load * 100)}%: ${s.sustained ? 'sustained' : s.why}`);
      const ladder = await guard(side, () => climb((rate) => measure(side, rate), { start, stride, most, retryFirst: round > 0 }, session, cfg, show));
      if (ladder !== undefined) ladders.get(side.id).push(ladder);
    }
  }
  const out = {};
  for (const side of sides) {
    const all = ladders.get(side.id);
    if (all.length === 0) continue;
    // The window that sustained the best step: a step retried after a noisy window has two.
    const bestStep = (l) => (l.best === null ? null : l.steps.find((s) => s.k === l.best && s.sustained));
    const value = (l) => bestStep(l)?.deliveriesPerSecond ?? 0;
    const mid = [...all].sort((a, b) => value(a) - value(b))[Math.floor((all.length - 1) / 2)];
    const at = bestStep(mid);
    const limit = mid.limit;
    out[side.id] = {
      max: value(mid),
      bestK: mid.best,
      rounds: all.map(value),
      at,
      limit,
      end: mid.end,
      // Where the step that failed had the load generator out of CPU, the server's figure is a lower bound.
      loadBound: limit !== null && (limit.saturated === 'load generator' || limit.saturated === 'both' || limit.why === 'publisher behind'),
      ladders: all,
    };
  }
  return out;
}
