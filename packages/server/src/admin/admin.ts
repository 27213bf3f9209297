/**
 * The `/admin` live dashboard. While anyone watches, every node publishes a snapshot of itself once
 * a second on an internal ephemeral channel (`_admin:nodes`, a namespace no client can name) and hears
 * every other node's there, so whichever node a browser reaches streams the whole cluster: its own
 * snapshot goes straight into its view (so a node whose broker is down still shows itself, broker
 * down), the others' come through the broker.
 *
 * Publishing only while watched keeps an idle cluster's broker quiet (no traffic, and no state: the
 * channel's stream is created by its first publish), and needs no message of its own: a node with an
 * admin stream open publishes, its snapshots say how many streams it holds, and a node that heard such
 * a snapshot from a live node publishes too. So the other nodes appear on a page within about two
 * intervals, and stop publishing once the last watcher's node has been silent for STALE_AFTER. A call
 * of `GET /admin/state` counts as a watcher for a few seconds.
 *
 * Routes: `GET /admin` (the page: a shell with a login form), `GET /admin/uplot.js|css`,
 * `POST /admin/login|logout`, and behind the login (cookie, or `Authorization: Bearer`):
 * `GET /admin/events` (SSE: `hello`, then a `tick` every second), `GET /admin/state` (the
 * current tick as JSON, for scripts) and `POST /admin/publish` (the publish API's body and answer).
 * @module
 */
import { parseChannel, TidingsError, type Channel } from '@tidings/protocol';
import type { HttpHandler, Route } from '../admission.js';
import type { Broker, Publication } from '../brokers/broker.js';
import { handlePublish } from '../http/publish.js';
import { sendJson } from '../http/respond.js';
import type { Logger } from '../log.js';
import type { GatewayOptions } from '../options.js';
import type { Origin, Publisher } from '../publisher.js';
import { adminPage, uplotFile } from './assets.js';
import { AdminAuth } from './auth.js';
import { parseSnapshot, SnapshotTaker, type NodeSnapshot, type NodeSources } from './snapshot.js';
import { AdminStreams, sseEvent } from './streams.js';
import { ClusterView, GONE_AFTER, SNAPSHOT_INTERVAL, STALE_AFTER } from './view.js';

export const ADMIN_NAMESPACE = '_admin';
export const ADMIN_CHANNEL: Channel = `${ADMIN_NAMESPACE}:nodes`;

/** The charts' moving window, in seconds. */
export const CHART_WINDOW = 180;

/** How long a closing node waits for its goodbye snapshot to be published, in ms. */
const BYE_TIMEOUT = 1000;
/** A call of `GET /admin/state` counts as a watcher this long, in ms. */
const STATE_WATCH = 5000;
/** Publishes from the dashboard: the server API's rights, idempotency keys of their own (an operator's key never makes the backend's a duplicate). */
const ADMIN_ORIGIN: Origin = { kind: 'api', scope: 'admin' };

export interface AdminParts {
  readonly sources: Omit<NodeSources, 'hasPresence'>;
  readonly broker: Pick<Broker, 'publish' | 'subscribe' | 'unsubscribe'>;
  readonly publisher: Publisher;
  readonly options: GatewayOptions;
  readonly apiKey: string;
  readonly log: Logger;
}

export class Admin {
  readonly auth: AdminAuth;
  readonly #view = new ClusterView();
  readonly #streams = new AdminStreams();
  readonly #taker: SnapshotTaker;
  #timer: NodeJS.Timeout | undefined;
  /** A publish of a snapshot is in flight. */
  #sending = false;
  /** Someone watched at the last tick, so this node published. */
  #watched = false;
  /** Until when a `GET /admin/state` counts as a watcher. */
  #stateWatchUntil = 0;
  #closed = false;

  constructor(private readonly parts: AdminParts) {
    const { options, log } = parts;
    this.auth = new AdminAuth({
      apiKey: parts.apiKey,
      adminToken: options.adminToken,
      trustProxy: options.trustProxy,
      audit: (accepted, address) => log[accepted ? 'info' : 'warn']({ address }, accepted ? 'admin login' : 'admin login refused'),
    });
    const hasPresence = (channel: Channel): boolean => {
      const { namespace } = parseChannel(channel);
      return Object.hasOwn(options.namespaces, namespace) && options.namespaces[namespace]?.presence === true;
    };
    this.#taker = new SnapshotTaker({ ...parts.sources, hasPresence }, (err) => log.warn({ err }, 'admin: presence counts failed'));
  }

  get #node(): string {
    return this.parts.sources.node;
  }

  /** The dashboard's routes, for the gateway's route table. */
  routes(): Array<[string, Route]> {
    const { publisher, options } = this.parts;
    const guarded =
      (handler: HttpHandler): HttpHandler =>
      (req, res, admitted) => {
        this.auth.check(req);
        return handler(req, res, admitted);
      };
    const route = (r: Omit<Route, 'access' | 'transport'>): Route => ({ access: 'public', transport: 'http', ...r });
    return [
      ['/admin', route({ GET: (_req, res) => adminPage(res) })],
      ['/admin/uplot.js', route({ GET: (_req, res) => uplotFile(res, 'js') })],
      ['/admin/uplot.css', route({ GET: (_req, res) => uplotFile(res, 'css') })],
      ['/admin/login', route({ POST: (req, res) => this.auth.login(req, res) })],
      ['/admin/logout', route({ POST: (req, res) => this.auth.logout(req, res) })],
      ['/admin/events', route({ stream: { contentType: 'text/event-stream; charset=utf-8' }, GET: guarded((_req, res) => this.#openStream(res)) })],
      ['/admin/state', route({ GET: guarded((_req, res) => this.#state(res)) })],
      ['/admin/publish', route({ POST: guarded((req, res) => handlePublish(req, res, publisher, ADMIN_ORIGIN, options)) })],
    ];
  }

  /** Hears the cluster and starts publishing this node's snapshots (after the broker started). */
  async start(): Promise<void> {
    await this.parts.broker.subscribe(ADMIN_CHANNEL);
    this.#taker.start();
    this.#timer = setInterval(() => this.#tick(), SNAPSHOT_INTERVAL).unref();
    this.#tick();
  }

  /** A publication of the admin channel, from the broker's feed. */
  receive(pub: Publication): void {
    const s = parseSnapshot(pub.data);
    // This node's own snapshots went into the view directly.
    if (s !== undefined && s.node !== this.#node) this.#view.receive(s, Date.now());
  }

  /** Ends the admin streams and says goodbye to the other nodes (at most BYE_TIMEOUT). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const started = this.#timer !== undefined;
    clearInterval(this.#timer);
    this.#streams.closeAll();
    if (!started) return;
    const bye: NodeSnapshot = { ...this.#taker.take(Date.now(), false, 0), bye: true };
    this.#taker.stop();
    if (this.#watched) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.#send(bye), new Promise<void>((resolve) => (timer = setTimeout(resolve, BYE_TIMEOUT)))]);
      clearTimeout(timer);
    }
    await this.parts.broker.unsubscribe(ADMIN_CHANNEL).catch(() => undefined);
  }

  #openStream(res: Parameters<HttpHandler>[1]): void {
    const now = Date.now();
    const hello = { node: this.#node, interval: SNAPSHOT_INTERVAL, staleAfter: STALE_AFTER, goneAfter: GONE_AFTER, window: CHART_WINDOW };
    this.#streams.open(res, sseEvent('hello', hello) + sseEvent('tick', this.#view.tick(now, this.#node)));
  }

  #state(res: Parameters<HttpHandler>[1]): void {
    const now = Date.now();
    this.#stateWatchUntil = now + STATE_WATCH;
    sendJson(res, 200, this.#view.tick(now, this.#node));
  }

  #tick(): void {
    const now = Date.now();
    const watchers = this.#streams.size + (now < this.#stateWatchUntil ? 1 : 0);
    this.#watched = watchers > 0 || this.#view.watchers(now) > 0;
    const snapshot = this.#taker.take(now, this.#watched, watchers);
    this.#view.receive(snapshot, now);
    // One publish at a time: a slow broker makes this node's snapshots rarer, never queued.
    if (this.#watched && !this.#sending) {
      this.#sending = true;
      void this.#send(snapshot).finally(() => {
        this.#sending = false;
      });
    }
    if (this.#streams.size > 0) this.#streams.broadcast(sseEvent('tick', this.#view.tick(now, this.#node)));
    else this.#view.forget(now);
  }

  /** Publishes a snapshot; never rejects (a broker that is down is shown as down, not logged every second). */
  #send(s: NodeSnapshot): Promise<void> {
    return this.parts.broker.publish({ channel: ADMIN_CHANNEL, data: JSON.stringify(s), type: undefined, idempotencyKey: undefined }).then(
      () => undefined,
      (err: unknown) => {
        if (!(err instanceof TidingsError)) this.parts.log.warn({ err }, 'admin: snapshot not published');
      },
    );
  }
}
