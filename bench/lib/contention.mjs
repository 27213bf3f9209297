// Guards measurements against other processes on the machine: waits for both cores to be quiet
// before a window, and lets a contended window be measured again, all within one time budget.
import { setTimeout as sleep } from 'node:timers/promises';
import { coreBusySeconds } from './procfs.mjs';

const pct = (x) => `${Math.round(x * 100)}%`;

export class Contention {
  #budget;
  #cfg;
  #log;

  constructor(cfg, log) {
    this.#cfg = cfg;
    this.#budget = cfg.quietBudget;
    this.#log = log;
  }

  /** Seconds still available for waiting and re-measuring. */
  get budget() {
    return this.#budget;
  }

  /** Takes `seconds` from the budget; false when it was already spent. */
  spend(seconds) {
    if (this.#budget <= 0) return false;
    this.#budget -= seconds;
    return true;
  }

  /** Waits (within the budget) until other processes use at most `quiet` of each of `cores` (default: server and load cores). */
  async waitForQuiet(cores = [this.#cfg.serverCpu, this.#cfg.loadCpu]) {
    const { quiet } = this.#cfg;
    for (;;) {
      const a = coreBusySeconds();
      await sleep(1000);
      const b = coreBusySeconds();
      const other = [...new Set(cores)].map((c) => (b[c] ?? 0) - (a[c] ?? 0));
      if (Math.max(...other) <= quiet || !this.spend(4)) return;
      this.#log(`  other processes are using ${other.map(pct).join(' / ')} of the cores; waiting`);
      await sleep(3000);
    }
  }

  /**
   * Runs `measureOnce` until its window was quiet (every `otherLoad` figure at most `quiet`) or
   * the budget is spent; returns the least contended result, with `attempts`. `cores` are those
   * waited on before each window (default: server and load cores); with `wait: false` the first
   * window starts at once (steps that follow one another closely, whose windows are checked anyway).
   */
  async measure(measureOnce, cores, { wait = true } = {}) {
    let best;
    for (let attempt = 1; ; attempt++) {
      if (wait || attempt > 1) await this.waitForQuiet(cores);
      const t0 = Date.now();
      const m = await measureOnce();
      m.attempts = attempt;
      m.contended = Math.max(...Object.values(m.otherLoad));
      if (best === undefined || m.contended < best.contended) best = m;
      if (m.contended <= this.#cfg.quiet || !this.spend((Date.now() - t0) / 1000)) return best;
      this.#log(`  other processes took ${Object.values(m.otherLoad).map(pct).join(' / ')} of the cores in that window; measuring again`);
    }
  }
}
