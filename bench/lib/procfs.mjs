// Reads a process's CPU time, resident memory and open descriptors from Linux /proc.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second for /proc/<pid>/stat times (sysconf CLK_TCK). */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU seconds of `pid` so far, from /proc/<pid>/stat (resolution 1 / CLK_TCK). */
export function statCpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/**
 * CPU seconds of every live thread of `pid` so far, in nanoseconds resolution: the sum of each
 * thread's run time in /proc/<pid>/task/<tid>/schedstat. Falls back to /proc/<pid>/stat.
 */
export function cpuSeconds(pid) {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    }
    return ns / 1e9;
  } catch {
    return statCpuSeconds(pid);
  }
}

/** Resident set size of `pid`, in bytes. */
export function rssBytes(pid) {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match === null ? NaN : Number(match[1]) * 1024;
}

/** Open file descriptors of `pid`. */
export function fdCount(pid) {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Busy (non-idle) CPU seconds of each core so far, from /proc/stat, indexed by core number. */
export function coreBusySeconds() {
  const busy = [];
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line);
    if (m === null) continue;
    // user nice system idle iowait irq softirq steal ...
    const f = m[2].trim().split(/\s+/).map(Number);
    busy[Number(m[1])] = (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / CLK_TCK;
  }
  return busy;
}

/**
 * A CPU reading at one instant of named processes, each pinned to a core: `procs` maps a name to
 * { pid, core }, where `pid` may be a list (one server made of several processes, summed).
 * `usage(a, b)` turns two readings into utilisation.
 */
export function sampleCpu(procs) {
  const at = performanceNow();
  const cpu = {};
  for (const [name, { pid }] of Object.entries(procs)) cpu[name] = [pid].flat().reduce((sum, p) => sum + cpuSeconds(p), 0);
  return { at, cpu, cores: coreBusySeconds(), procs };
}

/**
 * Per process between two readings: CPU seconds, the fraction of one core that is, and `other`,
 * the fraction of its core that went to anything else on the machine (contention): the core's busy
 * time less that of every process of the reading pinned to the same core.
 */
export function usage(a, b) {
  const wall = (b.at - a.at) / 1000;
  const out = { wall };
  const seconds = {};
  const tracked = {};
  for (const [name, { core }] of Object.entries(a.procs)) {
    seconds[name] = b.cpu[name] - a.cpu[name];
    tracked[core] = (tracked[core] ?? 0) + seconds[name];
  }
  for (const [name, { core }] of Object.entries(a.procs)) {
    const coreBusy = (b.cores[core] ?? 0) - (a.cores[core] ?? 0);
    out[name] = {
      seconds: seconds[name],
      util: wall > 0 ? seconds[name] / wall : 0,
      other: wall > 0 ? Math.max(0, (coreBusy - tracked[core]) / wall) : 0,
    };
  }
  return out;
}

function performanceNow() {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}
