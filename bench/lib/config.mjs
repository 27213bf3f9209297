// Benchmark settings: full-run defaults, BENCH_QUICK=1 smoke-run defaults, and BENCH_* overrides.
const quick = process.env.BENCH_QUICK === '1';

function list(name) {
  const text = process.env[name];
  return text === undefined || text === '' ? undefined : text.split(',').map((x) => x.trim());
}

function num(name, full, small) {
  const text = process.env[name];
  const value = text === undefined || text === '' ? (quick ? small : full) : Number(text);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a non-negative number (got ${text})`);
  return value;
}

/** Every knob, with the environment variable that overrides it. */
export function loadConfig() {
  return Object.freeze({
    quick,
    serverCpu: num('BENCH_SERVER_CPU', 0, 0),
    loadCpu: num('BENCH_LOAD_CPU', 1, 1),
    /** Subscribers in the *-small sessions (fixed-rate CPU and saturation). */
    smallSubs: num('BENCH_SMALL_SUBS', 1000, 200),
    /** Subscribers in the *-large sessions (idle memory, and saturation for WebSocket). */
    largeSubs: num('BENCH_LARGE_SUBS', 10000, 1000),
    /** Publications per second in the fixed-rate CPU run (x smallSubs deliveries per second). */
    rate: num('BENCH_RATE', 50, 100),
    /** Alternating rounds of the fixed-rate CPU step (odd: each server's figure is its median round). */
    rounds: num('BENCH_ROUNDS', 5, 3),
    /** Seconds of each measured window of the CPU step. */
    cpuDuration: num('BENCH_CPU_DURATION', 6, 3),
    /** Alternating rounds of the 1k saturation step; each server's figure is its best round. */
    maxRounds: num('BENCH_MAX_ROUNDS', 2, 2),
    /** Seconds of warm-up before each measured window. */
    warmup: num('BENCH_WARMUP', 2, 1),
    /** Seconds of each measured window. */
    duration: num('BENCH_DURATION', 8, 3),
    /** Publications allowed in flight (published but not yet delivered to all) in saturation runs. */
    window: num('BENCH_WINDOW', 4, 4),
    /** Seconds to let the server settle before and after opening idle connections. */
    settle: num('BENCH_SETTLE', 3, 1),
    /** Bytes of padding in each publication's data. */
    payload: num('BENCH_PAYLOAD', 64, 64),
    /** Subscribers whose every message is timed (spread evenly over all subscribers). */
    probes: num('BENCH_PROBES', 100, 50),
    /** Handshakes in flight while connecting. */
    connectConcurrency: num('BENCH_CONNECT_CONCURRENCY', 200, 200),
    /** Busy fraction of a core by other processes above which a measurement waits for quiet. */
    quiet: num('BENCH_QUIET', 0.1, 0.1),
    /** Seconds the whole run may spend waiting for quiet cores and re-measuring contended windows. */
    quietBudget: num('BENCH_QUIET_BUDGET', 120, 20),
    /** Hard cap on the whole run, in seconds; children are killed when it expires. */
    deadline: num('BENCH_DEADLINE', 900, 300),
    /** Only these sessions (ws-small, ws-large, sse-small, sse-large), steps (memory, cpu, max) and servers. */
    only: list('BENCH_ONLY'),
    steps: list('BENCH_STEPS'),
    servers: list('BENCH_SERVERS'),
    /** Write V8 CPU profiles of servers and load generators to bench/results/profiles/ (see bench/profile.mjs). */
    profile: process.env.BENCH_PROFILE === '1',
    channel: 'bench',
  });
}
