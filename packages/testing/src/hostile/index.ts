/**
 * Hostile inputs for every endpoint and frame type, as fast-check arbitraries: request lines,
 * header sets, query strings, cursors and `Last-Event-ID`, JSON bodies, WebSocket frames at the
 * byte level, valid-but-hostile protocol frames, and slowloris pacing. Each generated value is an
 * {@link Attack}: the exact bytes to send (and when), plus what the gateway owes in return, so
 * {@link runAttack} (`run.ts`) can replay it against any gateway and judge the answer.
 *
 * The arbitraries are built from a {@link HostileContext} (real positions to mutate, the limits
 * the gateway runs with, which namespaces allow what) and never name a channel under
 * `context.forbiddenPrefix`, so a bystander there is untouched by construction.
 * @module
 */
export * from './attack.js';
export * from './values.js';
export * from './http.js';
export * from './websocket.js';
export * from './pacing.js';
export * from './run.js';
export * from './process.js';
