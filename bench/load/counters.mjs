// Shared state of one load generator: delivery counters and the latency reservoir, and the stamp
// reader every subscriber uses (each publication's data carries `"bt":<send time in us>`).
import { performance } from 'node:perf_hooks';

const MAX_SAMPLES = 200_000;

/** The current time in integer microseconds (the clock publishers stamp into `data.bt`). */
export function nowMicros() {
  return Math.round(performance.now() * 1000);
}

export class Counters {
  /** Message deliveries seen by all subscribers. */
  delivered = 0;
  /** Subscribers ready (subscribed) and subscribers that closed or failed. */
  ready = 0;
  closed = 0;
  failed = 0;
  /** Latency samples in microseconds are kept only while `sampling`. */
  sampling = false;
  /** Samples of publications stamped at or after `from` (us): the measured window's own. */
  from = Infinity;
  fresh = 0;
  #samples = new Float64Array(MAX_SAMPLES);
  #seen = 0;

  /** Records the latency of a message stamped `sentMicros` (reservoir sampling past the cap). */
  sample(sentMicros) {
    if (!this.sampling || sentMicros < 0) return;
    if (sentMicros >= this.from) this.fresh++;
    const latency = nowMicros() - sentMicros;
    const i = this.#seen++;
    if (i < MAX_SAMPLES) this.#samples[i] = latency;
    else {
      const j = Math.floor(Math.random() * (i + 1));
      if (j < MAX_SAMPLES) this.#samples[j] = latency;
    }
  }

  /** Percentiles (ms) of the samples taken since the last call, which clears them. */
  takeLatency() {
    const n = Math.min(this.#seen, MAX_SAMPLES);
    const sorted = this.#samples.slice(0, n).sort();
    const at = (q) => (n === 0 ? null : sorted[Math.min(n - 1, Math.floor(q * n))] / 1000);
    const result = { samples: this.#seen, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: n === 0 ? null : sorted[n - 1] / 1000 };
    this.#seen = 0;
    return result;
  }
}

export const STAMP = Buffer.from('"bt":');

/** Reads the unsigned integer that follows `"bt":` in `buf` between `from` and `to`; -1 if absent. */
export function readStamp(buf, from, to) {
  // A view ending at `to`: `buf` may be the shared read buffer, whose bytes past `to` are stale.
  const at = buf.subarray(0, to).indexOf(STAMP, from);
  if (at === -1) return -1;
  let value = 0;
  for (let k = at + STAMP.length; k < to; k++) {
    const c = buf[k];
    if (c < 48 || c > 57) break;
    value = value * 10 + (c - 48);
  }
  return value;
}

/**
 * Counts one delivery per stamp in `buf[from..to)` (whole messages only), and times each one when
 * the subscriber is a probe. For bodies holding any number of publications: SSE events, poll answers.
 */
export function deliverStamps(counters, probe, buf, from, to) {
  const view = buf.subarray(0, to);
  for (let at = view.indexOf(STAMP, from); at !== -1; at = view.indexOf(STAMP, at + STAMP.length)) {
    if (probe && counters.sampling) counters.sample(readStamp(buf, at, to));
    counters.delivered++;
  }
}
