/**
 * What per-address limits count by. An IPv4 address is itself (an IPv4-mapped IPv6 address is its
 * IPv4 address). An IPv6 address counts by its /64 network: one host, one home or one customer of a
 * provider gets a whole /64, so a client could otherwise take a new address for every connection and
 * be a new client to every per-address limit. Anything else (a malformed `X-Forwarded-For` entry) is
 * counted as the text it is.
 * @module
 */

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;
/** Dotted decimal without leading zeros (as Node's parser takes it). */
const IPV4 = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/;
/** A zone id (`fe80::1%eth0`), as Node's parser takes it. */
const ZONE = /^[0-9A-Za-z.:-]+$/;

/** The key per-address limits count `address` by. */
export function addressKey(address: string): string {
  if (!address.includes(':')) return address;
  const groups = ipv6Groups(address);
  if (groups === undefined) return address;
  // ::ffff:a.b.c.d, an IPv4 client on a dual-stack socket.
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    const g6 = groups[6] ?? 0;
    const g7 = groups[7] ?? 0;
    return `${g6 >> 8}.${g6 & 0xff}.${g7 >> 8}.${g7 & 0xff}`;
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`;
}

/** The eight 16-bit groups of an IPv6 address in text form (RFC 4291 2.2, a zone id allowed), or undefined. */
function ipv6Groups(text: string): number[] | undefined {
  const zone = text.indexOf('%');
  if (zone !== -1 && !ZONE.test(text.slice(zone + 1))) return undefined;
  const address = zone === -1 ? text : text.slice(0, zone);
  const halves = address.split('::');
  if (halves.length > 2) return undefined;
  const compressed = halves.length === 2;
  // An embedded IPv4 address can only end the address.
  const head = groupsOf(halves[0] ?? '', !compressed);
  const tail = compressed ? groupsOf(halves[1] ?? '', true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const explicit = head.length + tail.length;
  if (compressed ? explicit > 7 : explicit !== 8) return undefined;
  return [...head, ...new Array<number>(8 - explicit).fill(0), ...tail];
}

/** The 16-bit groups of `side` (one side of `::`; an IPv4 address at its end, if allowed, gives two), or undefined. */
function groupsOf(side: string, v4AtEnd: boolean): number[] | undefined {
  if (side === '') return [];
  const out: number[] = [];
  const items = side.split(':');
  for (let i = 0; i < items.length; i++) {
    const item = items[i] as string;
    if (HEX_GROUP.test(item)) {
      out.push(Number.parseInt(item, 16));
      continue;
    }
    const v4 = v4AtEnd && i === items.length - 1 ? IPV4.exec(item) : null;
    if (v4 === null) return undefined;
    const [a = 0, b = 0, c = 0, d = 0] = v4.slice(1).map(Number);
    if (a > 255 || b > 255 || c > 255 || d > 255) return undefined;
    out.push((a << 8) | b, (c << 8) | d);
  }
  return out;
}
