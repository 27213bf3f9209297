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
import type { Poller } from '../../packages/server/src/sink.js';

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
  answer(body: Buffer): void {
    this.answers.push(JSON.parse(body.toString()) as Answered);
  }
  onGone(): void {}
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
  const ctx = { hub, broker, options, auth: openAuth, authorize: { hooks: undefined }, metrics: new CounterMetrics(), nodeId: 'n1', presence };
  const groups = new PollGroups(ctx, openAuth, options, (err) => {
    throw err;
  });
  closers.push(() => groups.close());
  /** Publishes; the group has it when this resolves, and its parked polls are answered at the end of the turn. */
  const publish = async (data: string): Promise<Position> => (await broker.publish(publishCommand('news', JSON.stringify(data)))).position;
  const poll = (since: Position | undefined, hold = 10_000): { poller: TestPoller; outcome: string } => {
    const poller = new TestPoller();
    return { poller, outcome: groups.park({ channel: 'news', since, identity: ANON, hold, poller }) };
  };
  const start = await publish('start');
  groups.served('news');
  for (let i = 0; i < 100 && poll(start, 0).outcome === 'declined'; i++) await turn();
  expect(poll(start, 0).outcome).toBe('answered');
  return { publish, poll, start, stats: () => groups.stats() };
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
});
