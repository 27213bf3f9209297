// Shared state of one load generator: delivery counters, the latency reservoir and the gate hook
// that lets a closed-loop publisher react to deliveries without polling.
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
  /** When `delivered` reaches `gate`, `onGate` runs (closed-loop publishing). */
  gate = Infinity;
  onGate = () => undefined;
  /** Latency samples in microseconds are kept only while `sampling`. */
  sampling = false;
  #samples = new Float64Array(MAX_SAMPLES);
  #seen = 0;

  /** Counts one delivery and runs the gate hook when due. */
  deliver() {
    if (++this.delivered >= this.gate) this.onGate();
  }

  /** Records the latency of a message stamped `sentMicros` (reservoir sampling past the cap). */
  sample(sentMicros) {
    if (!this.sampling) return;
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

/** Reads the unsigned integer that follows `"bt":` in `buf` between `from` and `to`; -1 if absent. */
export function readStamp(buf, from, to) {
  const at = buf.indexOf(STAMP, from);
  if (at === -1 || at >= to) return -1;
  let value = 0;
  for (let k = at + STAMP.length; k < to; k++) {
    const c = buf[k];
    if (c < 48 || c > 57) break;
    value = value * 10 + (c - 48);
  }
  return value;
}

export const STAMP = Buffer.from('"bt":');
