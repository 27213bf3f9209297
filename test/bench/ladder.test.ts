/**
 * The bench's open-loop rate ladder, on a simulated server whose capacity changes from ladder to
 * ladder (a busy machine, a peer that slowed down, a first ladder that met a noisy window): every
 * ladder reports a rate it sustained, within a factor of 2 below the capacity it met (or the top of
 * the ladder), and never none while the bottom of the ladder holds.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

interface Step {
  k: number;
  sustained: boolean;
  deliveriesPerSecond: number;
}
interface Ladder {
  best: number | null;
  steps: Step[];
}
interface Side {
  id: string;
  label: string;
}
interface LadderModule {
  levelRate: (rate: number, k: number) => number;
  runLadders: (
    sides: Side[],
    session: { rate: number; perPub: number },
    cfg: { ladderSteps: number; ladderP99: number },
    log: (line: string) => void,
    rounds: number,
    measure: (side: Side, rate: number) => Promise<unknown>,
    guard: (side: Side, run: () => Promise<Ladder>) => Promise<Ladder | undefined>,
  ) => Promise<Record<string, { max: number; rounds: number[]; ladders: Ladder[] }>>;
}

const ladderModule = async (): Promise<LadderModule> => (await import(new URL('../../bench/lib/ladder.mjs', import.meta.url).href)) as LadderModule;

const REF = 1000;
const SECONDS = 2;

/** One window at `rate` against a server that keeps up with at most `capacity` publications/s. */
function window(rate: number, capacity: number) {
  const ok = rate <= capacity;
  const published = rate * SECONDS;
  return {
    lost: 0,
    httpErrors: 0,
    skipped: 0,
    perPublication: 1,
    published,
    seconds: SECONDS,
    deliveredAtStop: ok ? published : (published * capacity) / rate / 2,
    completeness: ok ? 1 : 0.5,
    latency: { p50: ok ? 1 : 800, p99: ok ? 5 : 4000 },
    cpu: { server: ok ? 0.5 : 1, load: 0.3 },
    saturated: ok ? 'neither' : 'server',
    publisherLagMs: 0,
    otherLoad: { serverCore: 0, loadCore: 0 },
  };
}

/** Runs three ladders of one side, the i-th against `capacities[i]`. */
async function run(capacities: number[]) {
  const { runLadders } = await ladderModule();
  const side = { id: 'a', label: 'a' };
  let ladder = 0;
  const measured: number[][] = capacities.map(() => []);
  const out = await runLadders(
    [side],
    { rate: REF, perPub: 1 },
    { ladderSteps: 10, ladderP99: 1000 },
    () => undefined,
    capacities.length,
    (_side, rate) => {
      (measured[ladder] as number[]).push(rate);
      return Promise.resolve(window(rate, capacities[ladder] as number));
    },
    async (_side, climb) => {
      const result = await climb();
      ladder += 1;
      return result;
    },
  );
  return { result: out.a, measured };
}

describe('rate ladder', () => {
  it('every ladder reports a rate it sustained, at most a factor of 2 under its capacity, however the capacity moved since the first', async () => {
    const { levelRate } = await ladderModule();
    const [bottom, top] = [levelRate(REF, -12), levelRate(REF, 24)];
    // Up to twice the top: a server the ladder cannot saturate reports the top.
    const capacity = fc.double({ min: Math.log2(bottom), max: Math.log2(top * 2), noNaN: true }).map((x) => 2 ** x);
    await fc.assert(
      fc.asyncProperty(fc.array(capacity, { minLength: 3, maxLength: 3 }), async (capacities) => {
        const { result, measured } = await run(capacities);
        expect(result).toBeDefined();
        if (result === undefined) return;
        expect(result.rounds).toHaveLength(3);
        result.rounds.forEach((value, i) => {
          const cap = capacities[i] as number;
          expect(value).toBeGreaterThan(0);
          expect(value).toBeLessThanOrEqual(cap * 1.000001);
          expect(value).toBeGreaterThanOrEqual(Math.max(Math.min(cap, top) / 2, bottom) * 0.999999);
          // Bounded: the ladder's steps, its retry, and doublings to the top or halvings to the bottom.
          expect((measured[i] as number[]).length).toBeLessThanOrEqual(20);
        });
        const sorted = [...result.rounds].sort((a, b) => a - b);
        expect(result.max).toBe(sorted[1]);
      }),
      { numRuns: 200 },
    );
  });

  it('a later ladder that meets a quarter or four times the capacity of the first still finds its limit', async () => {
    const { result } = await run([9_000, 2_200, 36_000]);
    expect(result?.rounds[1]).toBeGreaterThan(1_100);
    expect(result?.rounds[1]).toBeLessThanOrEqual(2_200);
    expect(result?.rounds[2]).toBeGreaterThan(18_000);
    expect(result?.rounds[2]).toBeLessThanOrEqual(36_000);
  });

  it('a server that sustains nothing down to the bottom of the ladder reports 0', async () => {
    const { levelRate } = await ladderModule();
    const { result } = await run([levelRate(REF, -13), levelRate(REF, -13), levelRate(REF, -13)]);
    // Later ladders start from the first one's result: there is none, so they are not run.
    expect(result?.rounds).toEqual([0]);
    expect(result?.max).toBe(0);
  });
});
