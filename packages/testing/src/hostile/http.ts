/**
 * HTTP attacks: request lines, header sets, query strings, cursors and `Last-Event-ID`, JSON bodies.
 * @module
 */
import fc from 'fast-check';
import { channels, cursorArb } from './values.js';
import { ALNUM, buildRequest, bytesText, latin1, LETTERS, mutationArb, NAME_CHARS, once, stringOf, utf8AsLatin1, type HostileContext, type HttpAttack } from './attack.js';
// ---------------------------------------------------------------------------------------------
// HTTP: request lines, headers, queries, cursors, bodies

const TARGET_PATHS = ['/', '/index.html', '/ws', '/sse', '/poll', '/send', '/rpc', '/api/publish', '/healthz', '/readyz', '/nope', '/api', '/api/publish/', '/SSE', '//sse', '/sse/', '/./sse', '/../sse', '/%73se', '/sse;x', '/sse%00', '/favicon.ico', '/metrics', '/metrics/', '/admin', '/admin/', '/admin/login', '/admin/logout', '/admin/events', '/admin/state', '/admin/publish', '/admin/uplot.js', '/admin/%2e%2e/metrics', '/admin/../healthz', '/ADMIN', '/tidings-client.js'];

/** Request targets: origin-form, absolute-form, authority-form, asterisk, and broken ones. */
function targetArb(ctx: HostileContext): fc.Arbitrary<string> {
  const path = fc.constantFrom(...TARGET_PATHS);
  const query = queryArb(ctx);
  const origin = fc.tuple(path, fc.option(query, { nil: undefined })).map(([p, q]) => (q === undefined ? p : `${p}?${q}`));
  const absolute = fc
    .tuple(fc.constantFrom('http://', 'https://', 'ws://', 'HTTP://', 'ftp://', '//', 'http:', 'http:/'), fc.constantFrom('gateway', '127.0.0.1', '[::1]', 'x:99999', '%zz', '[', 'a@b', 'xn--', 'é', ''), origin)
    .map(([scheme, host, o]) => `${scheme}${host}${o}`);
  const odd = fc.constantFrom('*', 'x', 'sse', '127.0.0.1:80', 'localhost:443', '?', '#', '/#x', '/sse#frag?channel=a', '/%', '/%zz', '/%C0%AF', '/%FF%FE', '/\u00ff', 'http://[/', 'http://a:99999/', 'http://%zz/', '//[', 'http://[::1/sse?channel=a', 'http:///', '/sse?%', '/sse?channel=%zz', '/?=&=&', '/sse??channel=a');
  const long = fc.integer({ min: 2000, max: 20_000 }).map((n) => `/sse?channel=${'a'.repeat(n)}`);
  const raw = fc.tuple(path, bytesText(40)).map(([p, junk]) => `${p}${junk.replace(/[\r\n ]/g, '')}`);
  return fc.oneof(
    { arbitrary: origin, weight: 5 },
    { arbitrary: absolute, weight: 2 },
    { arbitrary: odd, weight: 2 },
    { arbitrary: long, weight: 1 },
    { arbitrary: raw, weight: 2 },
    { arbitrary: mutationArb(origin), weight: 2 },
  );
}

/**
 * Query strings for the stream endpoints: channel lists (repeated, comma-separated, duplicated,
 * bad names, huge lists), cursors, `lastEventId`, `timeout` values and junk parameters.
 */
export function queryArb(ctx: HostileContext): fc.Arbitrary<string> {
  const ch = channels(ctx);
  const enc = (s: string): fc.Arbitrary<string> => fc.constantFrom(encodeURIComponent(s), s, utf8AsLatin1(s));
  const channelParam = fc.oneof(
    ch.any.chain((c) => enc(c).map((e) => `channel=${e}`)),
    fc.array(ch.valid, { minLength: 2, maxLength: 8 }).map((cs) => `channel=${cs.map(encodeURIComponent).join(',')}`),
    fc.array(ch.valid, { minLength: 2, maxLength: 6 }).map((cs) => cs.map((c) => `channel=${encodeURIComponent(c)}`).join('&')),
    fc.integer({ min: 60, max: 400 }).map((n) => `channel=${Array.from({ length: n }, (_, i) => `${ctx.namespaces.open}:h${i}`).join(',')}`),
    ch.known.map((c) => `channel=${c},${c},${c}`),
    fc.constantFrom('channel=', 'channel', 'channel=,', 'channel=,,,', 'CHANNEL=a', 'channel[]=a', 'channel=%', 'channel=a%2', 'channel=a&channel=', 'channel=a+b'),
  );
  const cursorParam = cursorArb(ctx).chain((c) => fc.constantFrom('cursor', 'lastEventId').map((k) => `${k}=${encodeURIComponent(c)}`));
  const rawCursor = cursorArb(ctx).map((c) => `cursor=${c}`);
  const timeout = fc.constantFrom('-1', '0', '1', '50', '1e3', 'NaN', '', '1.5', '0x10', '99999999999999999999', 'Infinity', ' 5', '100', '300').map((t) => `timeout=${t}`);
  const token = fc.constantFrom(`token=${ctx.deniedToken}`, 'token=', 'token=x', `token=${'t'.repeat(3000)}`);
  const junk = fc.oneof(fc.constantFrom('&', '&&', '=', '==', 'a', 'a=1&a=2', '__proto__=1', 'constructor=x', 'hasOwnProperty=1', '%', '%%', '+'), bytesText(20).map((s) => s.replace(/[\r\n #]/g, '')));
  const param = fc.oneof({ arbitrary: channelParam, weight: 5 }, { arbitrary: cursorParam, weight: 3 }, { arbitrary: rawCursor, weight: 1 }, { arbitrary: timeout, weight: 2 }, { arbitrary: token, weight: 1 }, { arbitrary: junk, weight: 1 });
  return fc.array(param, { minLength: 1, maxLength: 5 }).map((ps) => ps.join('&'));
}

const METHODS = ['GET', 'POST', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'PATCH', 'TRACE', 'CONNECT', 'PRI', 'PROPFIND', 'get', 'Get', 'GETT', 'G', 'POST ', 'M-SEARCH', 'SOURCE', 'QUERY', 'PURGE'];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.0', 'HTTP/0.9', 'HTTP/2.0', 'HTTP/2', 'HTTP/1.2', 'HTTP/9.9', 'http/1.1', 'HTTP/1.1 x', 'HTTP/11', 'HTTP/1.', 'HTTP/', 'HTTPS/1.1', '', 'HTTP/1.1\u0000', 'HTTP/1.01'];

/** Request lines: methods (known, unknown, lowercase, junk), targets, HTTP versions, line endings. */
export function requestLineArb(ctx: HostileContext): fc.Arbitrary<HttpAttack> {
  // Mostly one broken part at a time: each part is usually valid.
  const method = fc.oneof({ arbitrary: fc.constantFrom('GET', 'GET', 'POST', 'HEAD', 'OPTIONS'), weight: 8 }, { arbitrary: fc.constantFrom(...METHODS), weight: 3 }, { arbitrary: stringOf(`${LETTERS}-_!#`, 1, 24), weight: 1 }, { arbitrary: bytesText(8), weight: 1 });
  const version = fc.oneof({ arbitrary: fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0'), weight: 8 }, { arbitrary: fc.constantFrom(...VERSIONS), weight: 3 }, { arbitrary: bytesText(10), weight: 1 });
  const spacing = fc.oneof({ arbitrary: fc.constant(' '), weight: 10 }, { arbitrary: fc.constantFrom('  ', '\t', ''), weight: 1 });
  const eol = fc.oneof({ arbitrary: fc.constant('\r\n'), weight: 10 }, { arbitrary: fc.constantFrom('\n', '\r'), weight: 1 });
  const withHost = fc.boolean();
  return fc.tuple(method, targetArb(ctx), version, spacing, eol, withHost, fc.boolean()).map(([m, target, v, sp, e, host, close]) => {
    const headers = [...(host ? ['host: gateway'] : []), ...(close ? ['connection: close'] : [])];
    const line = v === '' ? `${m}${sp}${target}` : `${m}${sp}${target}${sp}${v}`;
    return {
      kind: 'http',
      cls: 'request-line',
      label: `request line ${JSON.stringify(line.slice(0, 60))}`,
      writes: once(buildRequest(line, headers, '', e)),
      methods: [m],
      // A bare \r ending never completes a request; anything else is parsed (and answered) or refused.
      owed: e !== '\r',
    } satisfies HttpAttack;
  });
}

const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

/**
 * Header sets: oversized, many, duplicated, CRLF-injected (smuggled second requests, bare CR/LF,
 * obs-fold), bad content-length and transfer-encoding, Upgrade variants (h2c, websocket with bad
 * keys and versions, both at once), credentials, content types, `Last-Event-ID`.
 */
export function headersArb(ctx: HostileContext): fc.Arbitrary<HttpAttack> {
  const cursor = cursorArb(ctx);
  const contentLength = fc.constantFrom('0', '5', '-1', '1e3', '0x10', ' 5', '5, 5', '5,6', '18446744073709551616', '99999999999999999999', '', 'abc', '+5', '05', '5 5', String(ctx.maxBody + 1), '1048576000');
  const upgrade = fc.constantFrom(
    ['connection: Upgrade', 'upgrade: websocket', 'sec-websocket-version: 13', `sec-websocket-key: ${WS_KEY}`],
    ['connection: Upgrade', 'upgrade: websocket', 'sec-websocket-version: 13', 'sec-websocket-key: bad'],
    ['connection: Upgrade', 'upgrade: websocket', 'sec-websocket-version: 13'],
    ['connection: Upgrade', 'upgrade: websocket', 'sec-websocket-version: 8', `sec-websocket-key: ${WS_KEY}`],
    ['connection: Upgrade', 'upgrade: websocket', 'sec-websocket-version: x', `sec-websocket-key: ${WS_KEY}`],
    ['connection: Upgrade', 'upgrade: websocket', 'sec-websocket-version: 13', `sec-websocket-key: ${WS_KEY}`, `sec-websocket-key: ${WS_KEY}`],
    ['connection: Upgrade', 'upgrade: websocket', 'sec-websocket-version: 13', `sec-websocket-key: ${WS_KEY}`, 'sec-websocket-extensions: permessage-deflate; client_max_window_bits'],
    ['connection: Upgrade', 'upgrade: websocket', 'sec-websocket-version: 13', `sec-websocket-key: ${WS_KEY}`, 'sec-websocket-protocol: a, a, ,'],
    ['connection: Upgrade, HTTP2-Settings', 'upgrade: h2c', 'http2-settings: AAMAAABkAAQAAP__'],
    ['connection: Upgrade', 'upgrade: h2c, websocket', 'sec-websocket-version: 13', `sec-websocket-key: ${WS_KEY}`],
    ['connection: Upgrade', 'upgrade: websocket, h2c', 'sec-websocket-version: 13', `sec-websocket-key: ${WS_KEY}`],
    ['connection: keep-alive', 'upgrade: websocket', 'sec-websocket-version: 13', `sec-websocket-key: ${WS_KEY}`],
    ['connection: Upgrade', 'upgrade: TLS/1.0'],
    ['connection: Upgrade', 'upgrade: '],
    ['connection: Upgrade', 'upgrade: h2c', 'transfer-encoding: chunked'],
  );
  const single = fc.oneof(
    contentLength.map((v) => `content-length: ${v}`),
    fc.constantFrom('transfer-encoding: chunked', 'transfer-encoding: chunked, identity', 'transfer-encoding: gzip', 'transfer-encoding: identity', 'transfer-encoding: xchunked', 'transfer-encoding: chunked\u000b', 'Transfer-Encoding : chunked'),
    fc.constantFrom('host: ', 'host: a b', 'host: [', 'host: x:99999', 'host: x', 'host: x', 'expect: 100-continue', 'expect: nonsense', 'connection: close', 'connection: keep-alive', 'connection: close, keep-alive'),
    fc.constantFrom(`authorization: Bearer ${ctx.apiKey}`, 'authorization: Bearer wrong-key-0123456789', 'authorization: Bearer', 'authorization: Basic eDp5', `authorization: Bearer ${ctx.deniedToken}`, `authorization: bearer  ${ctx.apiKey}`, `authorization: Bearer ${'k'.repeat(4000)}`),
    fc.constantFrom('content-type: application/json', 'content-type: application/json; charset=utf-8', 'content-type: APPLICATION/JSON', 'content-type: text/plain', 'content-type: multipart/form-data; boundary=x', 'content-type: ', 'content-type: application/json;;;', 'content-type: application/jsonx'),
    cursor.map((c) => `last-event-id: ${c.replace(/[\r\n]/g, '')}`),
    adminCookieArb(ctx),
    fc.constantFrom('accept: text/event-stream', 'origin: http://evil.example', 'cookie: a=b', 'x-forwarded-for: 1.2.3.4, , ::1', 'te: trailers', 'range: bytes=0-1'),
    bytesText(30).map((v) => `x-junk: ${v.replace(/[\r\n]/g, '')}`),
  );
  const big = fc.oneof(
    fc.integer({ min: 8000, max: 40_000 }).map((n) => [`x-big: ${'a'.repeat(n)}`]),
    fc.integer({ min: 100, max: 2000 }).map((n) => Array.from({ length: n }, (_, i) => `x-h${i}: ${i}`)),
    fc.integer({ min: 20, max: 200 }).map((n) => Array.from({ length: n }, () => 'x-dup: same')),
    fc.integer({ min: 4000, max: 16_000 }).map((n) => [`last-event-id: ${'a=b.1,'.repeat(n / 6)}`]),
  );
  const injected = fc.constantFrom(
    'x: a\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x',
    'x: a\r\ncontent-length: 0\r\n\r\nPOST /api/publish HTTP/1.1\r\nhost: x',
    'x: a\rb',
    'x: a\nb: c',
    'x: a\r\n b',
    ' folded: value',
    'x y: z',
    'no colon here',
    ': empty name',
    'x:\u0000',
    'x-\u00ff: y',
    'x: \u00e9\u00e8',
    'host: x\r\nhost: y',
    'content-length: 5\r\ncontent-length: 6',
    'content-length: 5\r\ntransfer-encoding: chunked',
    'transfer-encoding: chunked\r\ntransfer-encoding: chunked',
  );
  const headerList = fc.tuple(
    fc.boolean(),
    fc.array(single, { maxLength: 6 }),
    fc.option(upgrade, { nil: undefined }),
    fc.option(big, { nil: undefined, freq: 4 }),
    fc.option(injected, { nil: undefined, freq: 3 }),
  ).map(([host, rest, up, b, inj]) => [...(host ? ['host: gateway'] : []), ...rest, ...(up ?? []), ...(b ?? []), ...(inj === undefined ? [] : [inj])]);
  const open = ctx.namespaces.open;
  const route = fc.constantFrom('GET /healthz', 'GET /ws', `GET /sse?channel=${open}:a`, `GET /poll?channel=${open}:a&timeout=50`, 'POST /api/publish', 'POST /send', 'POST /rpc', 'GET /', `HEAD /sse?channel=${open}:a`, 'OPTIONS /sse', 'POST /healthz', 'GET /nope', 'GET /metrics', 'GET /admin', 'POST /admin/login', 'GET /admin/events', 'GET /admin/state', 'POST /admin/publish', 'DELETE /admin/login');
  const body = fc.oneof(fc.constant(''), fc.constant(`{"channel":"${ctx.namespaces.open}:h","data":1}`), bytesText(64), fc.constant('0\r\n\r\n'), fc.constant('5\r\nhello\r\n0\r\n\r\n'));
  return fc.tuple(route, headerList, body).map(([r, headers, b]) => {
    const [method = 'GET', path = '/'] = r.split(' ');
    const smuggled = headers.some((h) => h.includes('\r\n\r\n'));
    return {
      kind: 'http',
      cls: 'headers',
      label: `${r} with ${headers.length} headers`,
      writes: once(buildRequest(`${method} ${path} HTTP/1.1`, headers, b)),
      methods: smuggled ? [method, 'GET'] : [method],
      owed: true,
    } satisfies HttpAttack;
  });
}

/** Upgrade headers a request may carry: none, a WebSocket upgrade, or protocols the gateway answers as plain HTTP. */
const UPGRADES: Record<string, readonly string[]> = {
  none: [],
  websocket: ['connection: Upgrade', 'upgrade: websocket', 'sec-websocket-version: 13', `sec-websocket-key: ${WS_KEY}`],
  h2c: ['connection: Upgrade, HTTP2-Settings', 'upgrade: h2c', 'http2-settings: AAMAAABkAAQAAP__'],
  tls: ['connection: Upgrade', 'upgrade: TLS/1.0'],
};

/** Query strings on the stream endpoints (and the WebSocket path), with and without Upgrade headers of any protocol. */
export function queryAttackArb(ctx: HostileContext): fc.Arbitrary<HttpAttack> {
  const path = fc.constantFrom('/sse', '/sse', '/poll', '/poll', '/ws', '/healthz', '/send');
  const method = fc.constantFrom('GET', 'GET', 'GET', 'HEAD', 'POST');
  const upgrade = fc.constantFrom('none', 'none', 'websocket', 'h2c', 'tls');
  // Half are valid stream queries (so the stream really opens, then the attacker leaves), half anything.
  const valid = fc
    .tuple(fc.uniqueArray(fc.constantFrom(...ctx.known.map((k) => k.channel)), { minLength: 1, maxLength: 3 }), fc.constantFrom('', '&timeout=0', '&timeout=200'))
    .map(([cs, t]) => `${cs.map((c) => `channel=${encodeURIComponent(c)}`).join('&')}${t}`);
  const query = fc.oneof(valid, queryArb(ctx));
  return fc.tuple(path, method, query, upgrade).map(([p, m, q, up]) => {
    const headers = ['host: gateway', ...(UPGRADES[up] ?? [])];
    // Keep polls short: a valid poll is held up to pollTimeout, which the runner's deadline covers.
    return {
      kind: 'http',
      cls: 'query',
      label: `${m} ${p}?${q.slice(0, 80)}${up === 'none' ? '' : ` (upgrade ${up})`}`,
      writes: once(buildRequest(`${m} ${p}?${q} HTTP/1.1`, headers)),
      methods: [m],
      owed: true,
    } satisfies HttpAttack;
  });
}

/** Cursors through every way they arrive over HTTP: the poll `cursor`, SSE `Last-Event-ID` header and `lastEventId` query. */
export function cursorAttackArb(ctx: HostileContext): fc.Arbitrary<HttpAttack> {
  const ch = channels(ctx);
  const list = fc.array(fc.oneof({ arbitrary: ch.known, weight: 4 }, { arbitrary: ch.valid, weight: 1 }), { minLength: 1, maxLength: 4 });
  const how = fc.constantFrom('poll-cursor', 'sse-header', 'sse-query', 'sse-both');
  return fc.tuple(list, cursorArb(ctx), cursorArb(ctx), how).map(([cs, cursor, other, h]) => {
    const q = [...new Set(cs)].map((c) => `channel=${encodeURIComponent(c)}`).join('&');
    const headerValue = cursor.replace(/[\r\n]/g, '');
    let line: string;
    const headers = ['host: gateway'];
    if (h === 'poll-cursor') line = `GET /poll?${q}&timeout=0&cursor=${encodeURIComponent(cursor)} HTTP/1.1`;
    else if (h === 'sse-query') line = `GET /sse?${q}&lastEventId=${encodeURIComponent(cursor)} HTTP/1.1`;
    else {
      line = h === 'sse-both' ? `GET /sse?${q}&lastEventId=${encodeURIComponent(other)} HTTP/1.1` : `GET /sse?${q} HTTP/1.1`;
      headers.push(`last-event-id: ${headerValue}`);
    }
    return {
      kind: 'http',
      cls: 'cursor',
      label: `${h} ${JSON.stringify(cursor.slice(0, 80))}`,
      writes: once(buildRequest(line, headers)),
      methods: ['GET'],
      owed: true,
    } satisfies HttpAttack;
  });
}

/** JSON texts that break parsers or limits: nesting, huge numbers, duplicate and prototype keys, BOMs, invalid UTF-8. */
function nastyJsonText(ctx: HostileContext): fc.Arbitrary<Buffer> {
  const c = `${ctx.namespaces.open}:body`;
  return fc.oneof(
    fc.integer({ min: 60, max: 70 }).map((n) => latin1(`{"channel":"${c}","data":${'['.repeat(n)}${']'.repeat(n)}}`)),
    fc.integer({ min: 1000, max: 100_000 }).map((n) => latin1(`{"channel":"${c}","data":${'['.repeat(n)}${']'.repeat(n)}}`)),
    fc.integer({ min: 1000, max: 50_000 }).map((n) => latin1(`${'{"a":'.repeat(n)}1${'}'.repeat(n)}`)),
    fc.constantFrom('1e400', '-1e400', '1e-400', '123456789012345678901234567890', '9007199254740993', '-0', '0.1e1', '1E+2', '0e0', '1.0000000000000000000001').map((n) => latin1(`{"channel":"${c}","data":${n}}`)),
    fc.constantFrom(
      `{"channel":"${c}","data":1,"channel":"${ctx.forbiddenPrefix}x"}`.replace(ctx.forbiddenPrefix, 'nope:'),
      `{"__proto__":{"channel":"${c}"},"data":1}`,
      `{"channel":"${c}","data":{"__proto__":{"polluted":true},"constructor":{"prototype":{"x":1}}}}`,
      `{"channel":"${c}","data":1,"type":"__proto__"}`,
      `\u00ef\u00bb\u00bf{"channel":"${c}","data":1}`,
      `{"channel":"${c}","data":"\\ud800"}`,
      `{"channel":"${c}","data":"\\u0000"}`,
      `{"channel":"${c}","data":1}garbage`,
      `{"channel":"${c}","data":1}{"channel":"${c}","data":2}`,
      `{"channel":"${c}","data":1`,
      `{"channel":"${c}",data:1}`,
      `{'channel':'${c}','data':1}`,
      `{"channel":"${c}","data":NaN}`,
      `{"channel":"${c}","data":Infinity}`,
      `{"channel":"${c}","data":undefined}`,
      `{"channel":"${c}","data":1,}`,
      `[{"channel":"${c}","data":1},]`,
      '',
      ' ',
      'null',
      'true',
      '"x"',
      '[]',
      '[[]]',
      '{}',
      '[null]',
      '{"channel":null,"data":1}',
      `{"channel":"${c}"}`,
      `{"channel":"${c}","data":null}`,
      `{"channel":["${c}"],"data":1}`,
    ).map(latin1),
    fc.constantFrom(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), Buffer.from([0xc0, 0xaf]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from(`{"channel":"${c}","data":"\xff\xfe"}`, 'latin1')),
  );
}

/** A publication object with hostile fields (or not an object at all). */
export function publicationArb(ctx: HostileContext): fc.Arbitrary<unknown> {
  const ch = channels(ctx);
  const data = fc.oneof(
    { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 4 },
    { arbitrary: fc.string({ unit: 'grapheme', maxLength: 200 }), weight: 1 },
    { arbitrary: fc.integer({ min: ctx.maxPayload - 4, max: ctx.maxPayload + 16 }).map((n) => 'x'.repeat(n)), weight: 1 },
    { arbitrary: fc.integer({ min: Math.floor(ctx.maxPayload / 3) - 4, max: Math.floor(ctx.maxPayload / 3) + 4 }).map((n) => '€'.repeat(n)), weight: 1 },
    { arbitrary: fc.constantFrom(undefined, null, 0, '', [], {}), weight: 1 },
  );
  const type = fc.option(fc.oneof(fc.constantFrom('message', 'chat.message', 'a..b', '.a', 'a.', 'tidings:gap', 'x'.repeat(65), '', 'é', 'a b', 1, null, {}), stringOf(`${ALNUM}._-`, 1, 64)), { nil: undefined });
  const key = fc.option(fc.oneof(fc.constantFrom('', 'k', 'k'.repeat(128), 'k'.repeat(129), 1, null, {}), fc.string({ maxLength: 40 })), { nil: undefined });
  const pub = fc.record({ channel: fc.oneof({ arbitrary: ch.any, weight: 5 }, { arbitrary: fc.constantFrom(1, null, {}, [], true), weight: 1 }), data, type, idempotencyKey: key }, { requiredKeys: ['channel'] });
  /** Publications that should go through (in a namespace where clients may publish), with hostile data. */
  const good = fc.record(
    {
      channel: fc.oneof(fc.constantFrom(...ctx.known.filter((k) => k.channel.startsWith(`${ctx.namespaces.open}:`)).map((k) => k.channel)), stringOf(NAME_CHARS, 1, 24).map((n) => `${ctx.namespaces.open}:${n}`), stringOf(NAME_CHARS, 1, 24).map((n) => `${ctx.namespaces.ephemeral}:${n}`)),
      data: fc.oneof(fc.jsonValue({ maxDepth: 4 }), fc.string({ unit: 'grapheme', maxLength: 100 }), fc.constantFrom(0, -0, 1e300, -1e-300, 2 ** 53 - 1, '  ', '</script>', { __proto__: null })),
      type: fc.option(stringOf(`${ALNUM}_-`, 1, 20), { nil: undefined }),
      idempotencyKey: fc.option(fc.string({ minLength: 1, maxLength: 128 }), { nil: undefined }),
    },
    { requiredKeys: ['channel', 'data'] },
  );
  return fc.oneof({ arbitrary: good, weight: 5 }, { arbitrary: pub, weight: 6 }, { arbitrary: fc.jsonValue({ maxDepth: 2 }), weight: 1 });
}

/**
 * Bodies for `POST /api/publish`, `/send` and `/rpc`: publications with hostile fields, batches
 * (empty, over `maxBatch`, mixed), wrong shapes, nasty JSON text, mutated valid bodies, and bodies
 * over `maxBody`; sent with correct, missing, lying or chunked lengths and assorted credentials and
 * content types.
 */
export function bodyAttackArb(ctx: HostileContext): fc.Arbitrary<HttpAttack> {
  const pub = publicationArb(ctx);
  const rpcBody = fc.record(
    {
      method: fc.oneof(fc.constantFrom(...ctx.rpcMethods, 'nope', 'orders.get', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'x'.repeat(65), '', 'a b', 1, null), stringOf(`${ALNUM}_.-/`, 1, 64)),
      data: fc.option(fc.jsonValue({ maxDepth: 3 }), { nil: undefined }),
    },
    { requiredKeys: [] },
  );
  const login = fc.record({ key: fc.oneof(fc.constant(ctx.apiKey), fc.constantFrom('', 'wrong-key-0123456789', ctx.deniedToken, `${ctx.apiKey}x`, ctx.apiKey.slice(1), 'k'.repeat(2000), 1, null, [ctx.apiKey], { key: ctx.apiKey })) }, { requiredKeys: [] });
  const json = fc.oneof(
    { arbitrary: pub, weight: 4 },
    { arbitrary: login, weight: 1 },
    { arbitrary: fc.array(pub, { minLength: 0, maxLength: 8 }), weight: 2 },
    { arbitrary: fc.integer({ min: ctx.maxBatch - 1, max: ctx.maxBatch + 3 }).map((n) => Array.from({ length: n }, (_, i) => ({ channel: `${ctx.namespaces.open}:batch`, data: i }))), weight: 1 },
    { arbitrary: rpcBody, weight: 2 },
  );
  const text = fc.oneof(
    { arbitrary: json.map((v) => Buffer.from(JSON.stringify(v) ?? 'undefined', 'utf8')), weight: 8 },
    { arbitrary: nastyJsonText(ctx), weight: 3 },
    { arbitrary: mutationArb(json.map((v) => utf8AsLatin1(JSON.stringify(v) ?? ''))).map(latin1), weight: 2 },
    { arbitrary: fc.integer({ min: ctx.maxBody - 8, max: ctx.maxBody + 64 }).map((n) => latin1(`{"channel":"${ctx.namespaces.open}:big","data":"${'x'.repeat(Math.max(0, n - 40))}"}`)), weight: 1 },
  );
  const route = fc.constantFrom('/api/publish', '/api/publish', '/send', '/send', '/rpc', '/admin/publish', '/admin/login');
  // The envelope (credentials, content type, framing) is right half the time, so the body itself is what gets judged.
  const auth = fc.oneof({ arbitrary: fc.constant(`Bearer ${ctx.apiKey}`), weight: 6 }, { arbitrary: fc.constantFrom(undefined, 'Bearer wrong-key-0123456789', `Bearer ${ctx.deniedToken}`, 'Basic eDp5'), weight: 1 });
  const type = fc.oneof({ arbitrary: fc.constantFrom('application/json', 'application/json; charset=utf-8'), weight: 6 }, { arbitrary: fc.constantFrom(undefined, 'text/plain', 'application/json; charset=latin1', 'Application/Json', 'application/jsonp'), weight: 1 });
  const length = fc.oneof({ arbitrary: fc.constantFrom('exact', 'chunked'), weight: 6 }, { arbitrary: fc.constantFrom('short', 'long', 'none'), weight: 1 });
  return fc.tuple(route, text, auth, type, length).map(([path, body, a, t, l]) => {
    const headers = ['host: gateway'];
    if (a !== undefined) headers.push(`authorization: ${a}`);
    if (t !== undefined) headers.push(`content-type: ${t}`);
    let payload: Buffer = body;
    if (l === 'exact') headers.push(`content-length: ${body.length}`);
    else if (l === 'short') headers.push(`content-length: ${Math.max(0, body.length - 3)}`);
    else if (l === 'long') headers.push(`content-length: ${body.length + 10}`);
    else if (l === 'chunked') {
      headers.push('transfer-encoding: chunked');
      const parts: Buffer[] = [];
      for (let i = 0; i < body.length; i += 1000) {
        const piece = body.subarray(i, i + 1000);
        parts.push(latin1(`${piece.length.toString(16)}\r\n`), piece, latin1('\r\n'));
      }
      parts.push(latin1('0\r\n\r\n'));
      payload = Buffer.concat(parts);
    }
    return {
      kind: 'http',
      cls: 'body',
      label: `POST ${path} (${body.length} bytes, length ${l}, auth ${a === undefined ? 'none' : a.slice(0, 12)}, type ${t ?? 'none'})`,
      writes: once(buildRequest(`POST ${path} HTTP/1.1`, headers, payload)),
      // A short length leaves the rest as a second (garbage) request; a long one is answered 408 at requestTimeout.
      methods: ['POST', 'X'],
      owed: true,
    } satisfies HttpAttack;
  });
}

/**
 * `/admin` cookies: malformed, forged (a MAC made up, a kind or expiry changed), expired, repeated,
 * huge. None of them may open the dashboard's data.
 */
function adminCookieArb(ctx: HostileContext): fc.Arbitrary<string> {
  const mac = fc.oneof(bytesText(20).map((t) => t.replace(/[\r\n;]/g, '')), stringOf(`${ALNUM}-_`, 43, 43));
  const kind = fc.constantFrom('k', 't', 'x', '', 'kk');
  const expiry = fc.constantFrom('0', 'zzzzzzzzz', (Date.now() + 3_600_000).toString(36), '-1', 'NaN', '1e9', '');
  const forged = fc.tuple(kind, expiry, mac).map(([k, e, m]) => `${k}.${e}.${m}`);
  const odd = fc.constantFrom('', '.', '..', '...', 'a.b.c.d', ctx.apiKey, 'k.0', '%00', 'x'.repeat(5000));
  return fc.tuple(fc.oneof(forged, odd), fc.constantFrom('', 'a=b; ', 'tidings_admin=x; ')).map(([v, before]) => `cookie: ${before}tidings_admin=${v}`);
}
