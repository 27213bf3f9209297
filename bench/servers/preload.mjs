// Preloaded into both servers (`--expose-gc --import`). On SIGUSR2 it runs a full GC, lets V8
// return freed pages, then prints `bench-memory {...process.memoryUsage()}` on stdout, so idle
// memory is read in the same settled state for both servers. It also exits the server if the
// orchestrator dies, so no server outlives a killed run. It changes nothing else.
process.on('SIGUSR2', () => {
  globalThis.gc?.();
  globalThis.gc?.();
  setTimeout(() => process.stdout.write(`bench-memory ${JSON.stringify(process.memoryUsage())}\n`), 300);
});

const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(1);
}, 1000).unref();
