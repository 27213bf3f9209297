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
  const serverCpu = num('BENCH_SERVER_CPU', 0, 0);
  return Object.freeze({
    quick,
    serverCpu,
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
    deadline: num('BENCH_DEADLINE', 1500, 480),
    /** Broker session: the Redis / NATS server's core and the second gateway node's (default: the server core). */
    brokerCpu: num('BENCH_BROKER_CPU', serverCpu, serverCpu),
    node2Cpu: num('BENCH_NODE2_CPU', serverCpu, serverCpu),
    /** Broker session: WebSocket subscribers of the fan-out steps. */
    brokerSubs: num('BENCH_BROKER_SUBS', 1000, 200),
    /** Broker session: rounds of every step, the brokers' order reversed every other round; each broker's figure is its median round. */
    brokerRounds: num('BENCH_BROKER_ROUNDS', 3, 1),
    /** Broker session: seconds of each measured publish window. */
    pubDuration: num('BENCH_PUB_DURATION', 5, 2),
    /** Broker session: keep-alive publisher connections per node, and requests pipelined on each. */
    pubConnections: num('BENCH_PUB_CONNECTIONS', 8, 8),
    pubDepth: num('BENCH_PUB_DEPTH', 4, 4),
    /** Broker session: publications per request of the batched variant (1 or 0: no batched variant). */
    pubBatch: num('BENCH_PUB_BATCH', 10, 10),
    /** Broker session: channels the publish steps spread their requests over, in turn. */
    pubChannels: num('BENCH_PUB_CHANNELS', 1, 1),
    /** Only these sessions (ws-small, ws-large, sse-small, sse-large, brokers), steps (memory, cpu, max; publish, fanout, publish-2, fanout-2), servers and brokers. */
    only: list('BENCH_ONLY'),
    steps: list('BENCH_STEPS'),
    servers: list('BENCH_SERVERS'),
    brokers: list('BENCH_BROKERS'),
    /** Write V8 CPU profiles of servers and load generators to bench/results/profiles/ (see bench/profile.mjs). */
    profile: process.env.BENCH_PROFILE === '1',
    channel: 'bench',
  });
}
