#!/usr/bin/env node
// The `tidings` command. A committed file, so npm links it at install time even before the first build;
// the CLI itself is the built dist/cli.js (the workspace's `prepare` builds it during `npm ci`).
import('../dist/cli.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/cli.js')) {
    process.stderr.write('tidings is not built yet: run `npm run build` in the repository first\n');
    process.exit(1);
  }
  throw err;
});
