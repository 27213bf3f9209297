/**
 * The bench's verdict on a "sustained, Tidings >= peer" target: a peer whose ladders held nothing
 * gives no verdict (it is no figure to beat), and otherwise the ratio of the two maxima decides.
 */
import { describe, expect, it } from 'vitest';

interface Verdict {
  pass: boolean | null;
  detail: string;
}
interface TargetsModule {
  TARGETS: { id: string; check: (results: unknown) => Verdict }[];
}

const sustained = (max: number) => ({ max, limit: {}, loadBound: false });

async function channelsMax(tidings: number, nchan: number): Promise<Verdict> {
  const { TARGETS } = (await import(new URL('../../bench/lib/targets.mjs', import.meta.url).href)) as TargetsModule;
  const target = TARGETS.find((t) => t.id === 'channels-max');
  if (target === undefined) throw new Error('no channels-max target');
  return target.check({ 'channels-ws': { ladder: { tidings: sustained(tidings), nchan: sustained(nchan) } } });
}

describe('sustained-rate targets', () => {
  it('are not measured when the peer sustained no rate of its ladder', async () => {
    const v = await channelsMax(38_001, 0);
    expect(v.pass).toBeNull();
    expect(v.detail).toContain('nchan sustained no rate');
  });

  it('compare the two maxima otherwise', async () => {
    expect((await channelsMax(10_000, 5_000)).pass).toBe(true);
    expect((await channelsMax(4_999, 5_000)).pass).toBe(false);
    expect((await channelsMax(0, 5_000)).pass).toBe(false);
  });
});
