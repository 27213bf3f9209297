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

function nums(name, full, small) {
  const given = list(name);
  const values = given === undefined ? (quick ? small : full) : given.map(Number);
  if (values.some((x) => !Number.isInteger(x) || x < 1)) throw new Error(`${name} must be whole numbers of at least 1 (got ${process.env[name]})`);
  return values;
}

/** Every knob, with the environment variable that overrides it. */
export function loadConfig() {
  const serverCpu = num('BENCH_SERVER_CPU', 0, 0);
  return Object.freeze({
    quick,
    serverCpu,
    loadCpu: num('BENCH_LOAD_CPU', 1, 1),
    /** Subscribers of the *-small fan-out sessions (one channel). */
    smallSubs: num('BENCH_SMALL_SUBS', 1000, 200),
    /** Subscribers of the *-large fan-out sessions (one channel). */
    largeSubs: num('BENCH_LARGE_SUBS', 10000, 1000),
    /** Channels of the channels-* sessions, one subscriber each. */
    channels: num('BENCH_CHANNELS', 10000, 1000),
    /** Idle connections at which memory is read (cumulative, one server process per transport). */
    idleSizes: nums('BENCH_IDLE_SIZES', [1000, 10000, 19000], [200, 1000, 2000]),
    /** WebSocket connections opened at once by the connect session. */
    connectSubs: num('BENCH_CONNECT_SUBS', 19000, 2000),
    /** Rounds of the connect session (a fresh server per round; the figure is the median). */
    connectRounds: num('BENCH_CONNECT_ROUNDS', 3, 1),
    /** Reference rate of the fan-out cpu step, in deliveries per second (publications/s x subscribers). */
    refRate: num('BENCH_REF_RATE', 50000, 50000),
    /** Reference rate of the long-poll fan-out, in deliveries per second. */
    pollRefRate: num('BENCH_POLL_REF_RATE', 20000, 10000),
    /** Reference rate of the channels-* sessions, in publications (= deliveries) per second. */
    channelsRefRate: num('BENCH_CHANNELS_REF_RATE', 4000, 2000),
    /** Publications/s of the fixed-rate steps of the metrics and brokers sessions (x 1,000 subscribers). */
    rate: num('BENCH_RATE', 50, 100),
    /** Alternated rounds of the cpu step (each side's figure is its median round). */
    rounds: num('BENCH_ROUNDS', 3, 1),
    /** Seconds of each measured window of the cpu step. */
    cpuDuration: num('BENCH_CPU_DURATION', 4, 2),
    /** Alternated rounds of the rate ladder where a target compares its figure (elsewhere 1). */
    ladderRounds: num('BENCH_LADDER_ROUNDS', 3, 1),
    /** Seconds of warm-up and of the measured window of each ladder step. */
    ladderWarmup: num('BENCH_LADDER_WARMUP', 1, 0.5),
    ladderDuration: num('BENCH_LADDER_DURATION', 2, 1),
    /** Most steps of a column's first ladder (its later ones take at most 4). */
    ladderSteps: num('BENCH_LADDER_STEPS', 10, 4),
    /** A ladder step is sustained only with p99 at most this many ms. */
    ladderP99: num('BENCH_LADDER_P99', 1000, 1000),
    /** Seconds of warm-up before each cpu window. */
    warmup: num('BENCH_WARMUP', 2, 1),
    /** Seconds to let the server settle before and after opening idle connections. */
    settle: num('BENCH_SETTLE', 3, 1),
    /** Bytes of padding in each publication's data. */
    payload: num('BENCH_PAYLOAD', 64, 64),
    /** Subscribers whose every message is timed (spread evenly over all subscribers). */
    probes: num('BENCH_PROBES', 100, 50),
    /** Handshakes in flight while connecting. */
    connectConcurrency: num('BENCH_CONNECT_CONCURRENCY', 200, 200),
    /** Keep-alive connections of the open-loop HTTP publisher (requests pipelined on each, in turn). */
    pubSockets: num('BENCH_PUB_SOCKETS', 4, 4),
    /** Busy fraction of a core by other processes above which a measurement waits for quiet. */
    quiet: num('BENCH_QUIET', 0.1, 0.1),
    /** Seconds the whole run may spend waiting for quiet cores and re-measuring contended windows. */
    quietBudget: num('BENCH_QUIET_BUDGET', 180, 20),
    /** Hard cap on the whole run, in seconds; children are killed when it expires. */
    deadline: num('BENCH_DEADLINE', 4200, 1200),
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
    /** Publications per request of the batched variants (broker publish step, channels-ws); 1 or 0: none. */
    pubBatch: num('BENCH_PUB_BATCH', 10, 10),
    /** Broker session: channels the publish steps spread their requests over, in turn. */
    pubChannels: num('BENCH_PUB_CHANNELS', 1, 1),
    /** Only these sessions, steps, servers and brokers (see bench/README.md). */
    only: list('BENCH_ONLY'),
    steps: list('BENCH_STEPS'),
    servers: list('BENCH_SERVERS'),
    brokers: list('BENCH_BROKERS'),
    /** Write V8 CPU profiles of Node servers and load generators to bench/results/profiles/ (see bench/profile.mjs). */
    profile: process.env.BENCH_PROFILE === '1',
    channel: 'bench',
  });
}
