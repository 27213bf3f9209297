/**
 * A poll group answers the polls parked in it at the end of the turn in which publications arrived.
 * Polls that come in during that turn, after a publication, are already past it: a poll at the new
 * position must wait for the next publication (not be sent what it has), one a little behind is
 * answered from the recent publications at once, and a poll with no cursor waits from where the group
 * stood when it came. Driven without a network, turn by turn, on the real memory broker and hub.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { formatCursorEntry, type Position } from '@tidings/protocol';
import { CounterMetrics, MemoryBroker, openAuth, resolveOptions, type Identity } from '@tidings/server';
import { brokerSettings, publishCommand } from '@tidings/testing';
import { Hub } from '../../packages/server/src/hub.js';
import { PollGroups } from '../../packages/server/src/poll-groups.js';
import { Presence } from '../../packages/server/src/presence.js';
import type { Poller, PollWatcher } from '../../packages/server/src/sink.js';

const closers: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of closers.splice(0).reverse()) await f();
});

const ANON: Identity = { user: '', anonymous: true };
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

interface Answered {
  messages: Array<{ data: string; position: Position }>;
  gaps: unknown[];
  cursor: string;
}

/** A poll's client: what it was answered, if anything yet. */
class TestPoller implements Poller {
  answers: Answered[] = [];
  /** When each answer came (`performance.now()`). */
  times: number[] = [];
  #watcher: PollWatcher | undefined;
  answer(body: Buffer): void {
    this.answers.push(JSON.parse(body.toString()) as Answered);
    this.times.push(performance.now());
  }
  watch(watcher: PollWatcher): void {
    this.#watcher = watcher;
  }
  /** Its client goes away. */
  leave(): void {
    this.#watcher?.gone();
  }
  get data(): string[] {
    return this.answers.flatMap((a) => a.messages.map((m) => m.data));
  }
}

async function group() {
  const options = resolveOptions({ nodeId: 'n1', channelLinger: 60_000 });
  const broker = new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 10 });
  const hub = new Hub(broker, { repairLimit: 100, maxRepairQueue: 100 }, () => undefined);
  const presence = new Presence(broker, 1000, () => undefined);
  await broker.start({ publication: hub.onPublication, presence: hub.onPresence, status: () => undefined }, brokerSettings());
  closers.push(() => broker.close());
  const ctx = { hub, broker, options, auth: openAuth, authorize: { hooks: undefined }, metrics: new CounterMetrics(), nodeId: 'n1', idPrefix: 'n1-', presence };
  const groups = new PollGroups(ctx, openAuth, options, (err) => {
    throw err;
  });
  closers.push(() => groups.close());
  /** Publishes; the group has it when this resolves, and its parked polls are answered at the end of the turn. */
  const publish = async (data: string): Promise<Position> => (await broker.publish(publishCommand('news', JSON.stringify(data)))).position;
  const poll = (since: Position | undefined, hold = 10_000): { poller: TestPoller; outcome: string; at: number } => {
    const poller = new TestPoller();
    const at = performance.now();
    return { poller, outcome: groups.park({ channel: 'news', since, identity: ANON, hold, poller }), at };
  };
  const start = await publish('start');
  groups.served('news');
  for (let i = 0; i < 100 && poll(start, 0).outcome === 'declined'; i++) await turn();
  expect(poll(start, 0).outcome).toBe('answered');
  /** A publication as the broker's feed delivers it, whatever its position (another epoch: a broker that lost its data). */
  const arrive = (position: Position, data: string): void => hub.onPublication({ channel: 'news', position, type: undefined, data: JSON.stringify(data), ephemeral: false });
  return { publish, poll, arrive, start, stats: () => groups.stats() };
}

describe('a poll group, turn by turn', () => {
  it('holds a poll that comes at a position published this turn for the next publication', async () => {
    const g = await group();
    const before = g.poll(g.start);
    expect(before.outcome).toBe('parked');
    const one = await g.publish('one');
    // Still this turn: one poll is already at `one` (its client had it from a catch-up answer), one is behind.
    const ahead = g.poll(one);
    expect(ahead.outcome).toBe('parked');
    const behind = g.poll(g.start);
    expect(behind.outcome).toBe('answered');
    expect(behind.poller.data).toEqual(['one']);
    await turn();
    expect(before.poller.data).toEqual(['one']);
    expect(before.poller.answers[0]?.cursor).toBe(formatCursorEntry('news', one));
    expect(ahead.poller.answers).toEqual([]);
    expect(g.stats().parked).toBe(1);
    const two = await g.publish('two');
    await turn();
    expect(ahead.poller.data).toEqual(['two']);
    expect(ahead.poller.answers[0]?.cursor).toBe(formatCursorEntry('news', two));
  });

  it('answers each poll parked in one turn from its own position, one encoding per position', async () => {
    const g = await group();
    const first = g.poll(g.start);
    const one = await g.publish('one');
    const second = g.poll(one);
    const secondToo = g.poll(one);
    const two = await g.publish('two');
    const third = g.poll(two);
    await turn();
    expect(first.poller.data).toEqual(['one', 'two']);
    expect(second.poller.data).toEqual(['two']);
    expect(secondToo.poller.answers).toEqual(second.poller.answers);
    expect(second.poller.answers[0]?.cursor).toBe(formatCursorEntry('news', two));
    expect(third.poller.answers).toEqual([]);
    expect(g.stats().parked).toBe(1);
  });

  it('holds a first poll (no cursor) from where the group stood, and times it out with that cursor', async () => {
    const g = await group();
    await g.publish('one');
    const fresh = g.poll(undefined, 50);
    expect(fresh.outcome).toBe('parked');
    await turn();
    expect(fresh.poller.answers).toEqual([]);
    await new Promise((r) => setTimeout(r, 100));
    expect(fresh.poller.answers).toHaveLength(1);
    expect(fresh.poller.answers[0]?.messages).toEqual([]);
    const noCursorThenPublished = g.poll(undefined, 10_000);
    const two = await g.publish('two');
    await turn();
    expect(noCursorThenPublished.poller.data).toEqual(['two']);
    expect(noCursorThenPublished.poller.answers[0]?.cursor).toBe(formatCursorEntry('news', two));
  });

  it('answers each poll when its own hold runs out, whatever the holds of the polls parked before it', async () => {
    const g = await group();
    const long = g.poll(g.start, 400);
    const short = g.poll(g.start, 60);
    await new Promise((r) => setTimeout(r, 20));
    const later = g.poll(g.start, 60);
    expect([long.outcome, short.outcome, later.outcome]).toEqual(['parked', 'parked', 'parked']);
    await expect.poll(() => later.poller.answers.length, { timeout: 2000, interval: 5 }).toBe(1);
    expect(short.poller.answers).toHaveLength(1);
    expect(long.poller.answers).toEqual([]);
    expect(g.stats().parked).toBe(1);
    await expect.poll(() => long.poller.answers.length, { timeout: 2000, interval: 5 }).toBe(1);
    // Never before its hold (a timer counts whole milliseconds: one of slack), each with its cursor back.
    for (const p of [long, short, later]) {
      expect(p.poller.times[0]).toBeGreaterThanOrEqual(p.at + (p === long ? 400 : 60) - 1);
      expect(p.poller.answers[0]).toEqual({ messages: [], gaps: [], cursor: formatCursorEntry('news', g.start) });
    }
    expect(later.poller.times[0]).toBeGreaterThan(short.poller.times[0] as number);
    expect(g.stats()).toMatchObject({ groups: 1, parked: 0, queued: 0 });
  });

  it('keeps one timer per hold, not one per parked poll', async () => {
    const g = await group();
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const polls = Array.from({ length: 500 }, (_, i) => g.poll(g.start, i % 2 === 0 ? 30_000 : 20_000));
    expect(polls.every((p) => p.outcome === 'parked')).toBe(true);
    expect(timers() - before).toBe(2);
    await g.publish('one');
    await turn();
    expect(polls.every((p) => p.poller.data.join() === 'one')).toBe(true);
    // All answered: the queues and their timers are gone.
    expect(timers()).toBe(before);
    expect(g.stats()).toMatchObject({ groups: 1, parked: 0, queued: 0 });
  });

  it('lets go of the places of polls answered or gone before their hold, while other polls stay parked', async () => {
    const g = await group();
    const stays = g.poll(g.start, 60_000);
    let at = g.start;
    for (let i = 0; i < 2000; i++) {
      const gone = g.poll(at, 60_000);
      expect(gone.outcome).toBe('parked');
      gone.poller.leave();
      expect(g.stats().queued).toBeLessThanOrEqual(2 * g.stats().parked + 64);
      if (i % 100 === 0) {
        // Polls parked this turn at the new position stay parked through its answer, the one behind is answered.
        at = await g.publish(`p${i}`);
        const waiting = [g.poll(at, 60_000), g.poll(at, 60_000)];
        await turn();
        expect(waiting.every((w) => w.poller.answers.length === 0)).toBe(true);
        for (const w of waiting) w.poller.leave();
      }
    }
    expect(stays.poller.answers).toHaveLength(1);
    expect(g.stats().parked).toBe(0);
    expect(g.stats().queued).toBeLessThanOrEqual(64);
  });

  it('answers a poll at a new epoch with its own cursor, though one at the same seq of the old epoch timed out in the turn the epoch changed', async () => {
    const { poll, arrive, start } = await group();
    const old = poll(start, 15);
    expect(old.outcome).toBe('parked');
    const next: Position = { epoch: 'zzzzzzzz', seq: start.seq };
    // The new epoch's first publication arrives in a timer, and the old poll's hold runs out in the
    // same timers phase, after it (the loop is busy until both are due).
    setTimeout(() => arrive(next, 'new'), 5);
    const busy = performance.now() + 40;
    while (performance.now() < busy);
    await new Promise((r) => setTimeout(r, 30));
    await turn();
    expect(old.poller.answers.map((a) => a.cursor)).toEqual([formatCursorEntry('news', start)]);
    const fresh = poll(next, 0);
    expect(fresh.outcome).toBe('answered');
    expect(fresh.poller.answers.map((a) => a.cursor)).toEqual([formatCursorEntry('news', next)]);
  });
});
