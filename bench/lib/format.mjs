// Number formats shared by the report tables.
export const ok = (x) => x !== null && x !== undefined && Number.isFinite(x);
export const fmt = (x, digits = 2) => (ok(x) ? x.toFixed(digits) : 'n/a');
export const int = (x) => (ok(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
export const pct = (x) => (ok(x) ? `${Math.round(x * 100)}%` : 'n/a');
export const ratio = (t, b) => (ok(t) && ok(b) && b !== 0 ? t / b : null);
export const kibText = (bytes) => (ok(bytes) ? (bytes / 1024).toFixed(2) : 'n/a');
