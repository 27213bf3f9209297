/**
 * Launches the system's headless Chromium through `playwright-core`, for interoperability tests
 * against a real browser (EventSource, WebSocket, the demo page). Nothing is ever downloaded:
 * the executable must already be installed (Debian's `chromium` package by default).
 * `playwright-core` is loaded on first launch only, so importing the test kit stays cheap.
 * @module
 */
import { existsSync } from 'node:fs';
import type { Browser, LaunchOptions } from 'playwright-core';

/** The Chromium executable: `TIDINGS_CHROMIUM` when set, else Debian's `/usr/bin/chromium`. */
export const CHROMIUM_EXECUTABLE = process.env.TIDINGS_CHROMIUM ?? '/usr/bin/chromium';

/** Flags for a quiet, self-contained headless run: no sandbox (containers), no GPU, no background traffic. */
export const CHROMIUM_ARGS: readonly string[] = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** True when the Chromium executable exists. */
export function chromiumAvailable(executablePath = CHROMIUM_EXECUTABLE): boolean {
  return existsSync(executablePath);
}

/**
 * Launches headless Chromium. The caller owns the returned browser and must `close()` it
 * (in `afterAll`); closing the browser closes every context and page it opened.
 */
export async function launchChromium(options: Pick<LaunchOptions, 'executablePath' | 'timeout'> = {}): Promise<Browser> {
  const executablePath = options.executablePath ?? CHROMIUM_EXECUTABLE;
  if (!chromiumAvailable(executablePath)) {
    throw new Error(`Chromium not found at ${executablePath}: install it (Debian: apt-get install chromium) or set TIDINGS_CHROMIUM`);
  }
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath,
    headless: true,
    args: [...CHROMIUM_ARGS],
    timeout: options.timeout ?? 20_000,
  });
}
