// The sessions of a run: which columns each compares, at which rates, with which steps.
import { BROKER_STEPS } from './broker-session.mjs';
import { BROKER_KINDS } from './brokers.mjs';
import { OPT_IN_KINDS, SERVER_KINDS, serverInfo, serverLabel } from './servers.mjs';

const int = (x) => Math.round(x).toLocaleString('en-US');
const TRANSPORT = { ws: 'WebSocket', sse: 'SSE', poll: 'long-poll' };

/** Every session of a run with `cfg` (ids, columns, rates, steps), in run order. */
export function sessions(cfg) {
  const kinds = SERVER_KINDS.filter((k) => (cfg.servers === undefined ? !OPT_IN_KINDS.has(k) : cfg.servers.includes(k)));
  const PUBLISH = { http: '', batch: `, batches of ${cfg.pubBatch}`, connection: ', server connection' };

  /** A side: `kind` on `transport`, published by `publish`; `mixed` sessions name the transport. */
  function side(kind, transport, { publish = 'http', mixed = false } = {}) {
    const id = [kind, mixed ? transport : '', publish === 'http' ? '' : publish].filter(Boolean).join('-');
    const label = `${serverLabel(kind, transport)}${mixed && kind !== 'baseline' ? ` ${transport === 'ws' ? 'WS' : TRANSPORT[transport]}` : ''}${PUBLISH[publish]}`;
    return { id, kind, transport, publish, label };
  }

  /** The selected servers' sides of a transport (those that serve it; with a publish mode they support). */
  const sidesOf = (transport, list = kinds, opts = {}) =>
    list.filter((k) => kinds.includes(k) && serverInfo(k).transports.includes(transport) && serverInfo(k).publish.includes(opts.publish ?? 'http')).map((k) => side(k, transport, opts));

  /** A fan-out session: `subs` subscribers of one channel, reference `refRate` deliveries/s. */
  function fanout(id, transport, subs, refRate, ladderRounds) {
    return {
      id,
      kind: 'compare',
      title: `${TRANSPORT[transport]} fan-out: ${int(subs)} subscribers of one channel`,
      about: `Reference rate ${int(refRate)} deliveries/s (${+(refRate / subs).toFixed(2)} publications/s, one per pipelined HTTP request). Ratios: µs per delivery, median of the paired rounds' ratios; max sustained, ratio of the medians (higher is better).`,
      transport,
      subs,
      channels: 1,
      perPub: subs,
      rate: refRate / subs,
      steps: ['cpu', 'ladder'],
      sides: sidesOf(transport),
      ratios: [
        ['tidings', 'baseline'],
        ['tidings', 'nchan'],
        ['tidings', 'tidings-ref'],
        ['tidings', 'floor'],
        ['floor', 'nchan'],
      ],
      ladderRounds,
    };
  }

  /** A channels session: `cfg.channels` channels with one subscriber each, publications spread over them. */
  function channelsSession(id, sides, ratios, ladderRounds, what) {
    return {
      id,
      kind: 'compare',
      title: `${int(cfg.channels)} channels x 1 ${what} subscriber`,
      about: `Publications spread over the channels in turn, one per pipelined HTTP request unless the column says otherwise; each is one delivery, so µs per delivery is per publish+delivery. Reference rate ${int(cfg.channelsRefRate)} publications/s.`,
      subs: cfg.channels,
      channels: cfg.channels,
      // Each probe hears only its own channel: more of them, for as many latency samples.
      probes: Math.min(cfg.channels, 10 * cfg.probes),
      perPub: 1,
      rate: cfg.channelsRefRate,
      steps: ['cpu', 'ladder'],
      sides,
      ratios,
      ladderRounds,
    };
  }

  function idle(transport) {
    return {
      id: `idle-${transport}`,
      kind: 'idle',
      title: `Idle memory per ${TRANSPORT[transport]} connection`,
      about: `One server per column; connections added up to each count, then the server's RSS (and JS heap) after a settle and a full GC, less its reading before any connected, per connection. Nchan: its worker's RSS.`,
      steps: ['memory'],
      sizes: cfg.idleSizes,
      sides: sidesOf(transport),
    };
  }

    return [
    idle('ws'),
    idle('sse'),
    idle('poll'),
    {
      id: 'connect',
      kind: 'connect',
      title: `Connect-to-subscribed rate: ${int(cfg.connectSubs)} WebSocket connections`,
      about: `A fresh server per round; all connections opened at once, ${cfg.connectConcurrency} handshakes in flight, timed from the first until the last is subscribed.`,
      steps: ['connect'],
      subs: cfg.connectSubs,
      sides: sidesOf('ws'),
    },
    fanout('ws-small', 'ws', cfg.smallSubs, cfg.refRate, cfg.ladderRounds),
    fanout('ws-large', 'ws', cfg.largeSubs, cfg.refRate, 1),
    fanout('sse-small', 'sse', cfg.smallSubs, cfg.refRate, cfg.ladderRounds),
    fanout('sse-large', 'sse', cfg.largeSubs, cfg.refRate, cfg.ladderRounds),
    fanout('poll-large', 'poll', cfg.largeSubs, cfg.pollRefRate, cfg.ladderRounds),
    // What the SDK's long-poll fallback does for a client with two subscriptions: one poll of both.
    {
      ...fanout('poll-joint', 'poll', cfg.smallSubs, cfg.pollRefRate / 4, 1),
      title: `Long-poll fan-out: ${int(cfg.smallSubs)} subscribers of one channel, each polling it with a quiet channel of its own`,
      ownChannels: true,
      steps: ['cpu'],
      sides: sidesOf('poll', ['tidings', 'tidings-ref']),
      ratios: [['tidings', 'tidings-ref']],
    },
    channelsSession(
      'channels-ws',
      [...sidesOf('ws', ['baseline', 'floor', 'tidings', 'tidings-ref']), ...sidesOf('ws', ['tidings', 'floor'], { publish: 'batch' }), ...sidesOf('ws', ['tidings', 'floor'], { publish: 'connection' }), ...sidesOf('ws', ['nchan', 'socketio'])],
      [
        ['tidings', 'baseline'],
        ['tidings', 'tidings-ref'],
        ['tidings', 'nchan'],
        ['tidings-batch', 'nchan'],
        ['tidings-connection', 'baseline'],
        ['tidings', 'floor'],
        ['tidings-batch', 'floor-batch'],
        ['tidings-connection', 'floor-connection'],
        ['floor', 'nchan'],
      ],
      cfg.ladderRounds,
      'WebSocket',
    ),
    channelsSession(
      'channels-http',
      [...sidesOf('sse', ['tidings', 'nchan'], { mixed: true }), ...sidesOf('poll', ['tidings', 'nchan'], { mixed: true })],
      [
        ['tidings-sse', 'nchan-sse'],
        ['tidings-poll', 'nchan-poll'],
      ],
      1,
      'SSE or long-poll',
    ),
    // What metrics cost: the same gateway with and without them, side by side (ratio with / without).
    {
      id: 'metrics',
      kind: 'compare',
      title: 'Metrics cost',
      about: '',
      subs: cfg.smallSubs,
      channels: 1,
      perPub: cfg.smallSubs,
      rate: cfg.rate,
      steps: ['cpu'],
      sides: [side('tidings', 'ws'), side('tidings-no-metrics', 'ws')],
      ratios: [['tidings', 'tidings-no-metrics']],
      ladderRounds: 0,
    },
    { id: 'brokers', kind: 'brokers', brokers: BROKER_KINDS.filter((b) => cfg.brokers === undefined || cfg.brokers.includes(b)), steps: BROKER_STEPS },
  ];
}
