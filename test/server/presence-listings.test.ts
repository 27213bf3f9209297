/**
 * Shared presence listings, as a property over any interleaving of requests and broker reads settling
 * (or failing), on a few channels: every request is answered by a read of its own channel that began
 * after it asked; no channel ever has more than one read in flight and one queued; nothing is left
 * behind once every read settled. The store is a stand-in whose reads settle when the test says: the
 * timing is the input here (the real broker is exercised in test/presence/listings.test.ts).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { PresenceEntry } from '@tidings/server';
import { PresenceListings } from '../../packages/server/src/presence-listings.js';

interface Read {
  readonly id: number;
  readonly channel: string;
  readonly settle: (ok: boolean) => void;
}

type Step = { kind: 'ask'; channel: number } | { kind: 'settle'; pick: number; ok: boolean } | { kind: 'tick' };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant('ask' as const), channel: fc.nat(2) }),
  fc.record({ kind: fc.constant('settle' as const), pick: fc.nat(), ok: fc.boolean() }),
  fc.record({ kind: fc.constant('tick' as const) }),
);

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('PresenceListings', () => {
  it('answers every request with a read begun after it, at most two reads per channel at a time', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: 60 }), async (steps) => {
        let reads = 0;
        const open: Read[] = [];
        const inFlight = new Map<string, number>();
        let most = 0;
        const store = {
          presence: (channel: string): Promise<PresenceEntry[]> => {
            const id = ++reads;
            inFlight.set(channel, (inFlight.get(channel) ?? 0) + 1);
            most = Math.max(most, inFlight.get(channel) ?? 0);
            return new Promise<PresenceEntry[]>((resolve, reject) => {
              open.push({
                id,
                channel,
                settle: (ok) => {
                  inFlight.set(channel, (inFlight.get(channel) ?? 1) - 1);
                  // The entry names the read that produced it.
                  if (ok) resolve([{ client: `read-${id}`, user: channel, info: undefined, node: 'n' }]);
                  else reject(new Error(`read ${id} failed`));
                },
              });
            });
          },
        };
        const listings = new PresenceListings(store);
        const answers: Array<Promise<void>> = [];
        for (const s of steps) {
          if (s.kind === 'ask') {
            const channel = `room:${s.channel}`;
            const askedAfter = reads;
            answers.push(
              listings.presence(channel).then(
                (entries) => {
                  const [entry] = entries;
                  expect(entry?.user).toBe(channel);
                  expect(Number(entry?.client.slice(5))).toBeGreaterThan(askedAfter);
                },
                (err: Error) => expect(Number(/read (\d+)/.exec(err.message)?.[1])).toBeGreaterThan(askedAfter),
              ),
            );
          } else if (s.kind === 'settle' && open.length > 0) {
            open.splice(s.pick % open.length, 1)[0]?.settle(s.ok);
          }
          await tick();
        }
        // Settle everything, including reads queued behind the ones settled here.
        while (open.length > 0) {
          open.shift()?.settle(true);
          await tick();
        }
        await Promise.all(answers);
        expect(most).toBeLessThanOrEqual(1);
        expect(listings.size).toBe(0);
      }),
      { numRuns: 300 },
    );
  });
});
