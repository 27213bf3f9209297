/**
 * The outbox in front of every connection's socket, on a real Node stream with a small buffer: what
 * is written arrives whole and in order however writes, turns and reads interleave; `whenDrained`
 * fires once the reader caught up; and an idle outbox keeps no listener on its stream.
 */
import { PassThrough, Writable } from 'node:stream';
import { setImmediate as turn } from 'node:timers/promises';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Outbox, WRITE_SLICE } from '../../packages/server/src/outbox.js';

type Op = { op: 'write'; size: number } | { op: 'turn' } | { op: 'read' } | { op: 'whenDrained' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('write' as const), size: fc.integer({ min: 1, max: 300 }) }), weight: 5 },
  { arbitrary: fc.constant({ op: 'turn' as const }), weight: 2 },
  { arbitrary: fc.constant({ op: 'read' as const }), weight: 2 },
  { arbitrary: fc.constant({ op: 'whenDrained' as const }), weight: 1 },
);

/** A stream that takes 256 bytes before it refuses more, read only when the test says. */
function stream(): { s: PassThrough; read: () => Buffer[] } {
  const s = new PassThrough({ highWaterMark: 256, readableHighWaterMark: 256 });
  return {
    s,
    read: () => {
      const got: Buffer[] = [];
      let chunk: unknown;
      while ((chunk = s.read()) !== null) got.push(chunk as Buffer);
      return got;
    },
  };
}

describe('Outbox', () => {
  it('delivers every byte in order, says when drained, and listens for drain only while waiting for it', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), async (ops) => {
        const { s, read } = stream();
        const out = new Outbox(s);
        const written: Buffer[] = [];
        const received: Buffer[] = [];
        let drainedCalls = 0;
        let n = 0;
        for (const o of ops) {
          if (o.op === 'write') {
            // ASCII bytes, so a chunk written as a string is the same bytes.
            const chunk = Buffer.alloc(o.size, 48 + (n++ % 40));
            written.push(chunk);
            out.write(n % 2 === 0 ? chunk : chunk.toString('latin1'));
          } else if (o.op === 'turn') {
            await turn();
          } else if (o.op === 'read') {
            received.push(...read());
            await turn();
          } else {
            out.whenDrained(() => drainedCalls++);
          }
          if (o.op !== 'write' && o.op !== 'whenDrained') {
            // Between turns the backlog is what the stream holds plus the outbox's own queue, which
            // is empty once drained; the stream is read only when it may hold something.
            if (out.drained) expect(out.backlog).toBe(s.writableLength);
            else expect(out.backlog).toBeGreaterThanOrEqual(s.writableLength);
          }
          expect(s.listenerCount('drain')).toBeLessThanOrEqual(1);
        }
        // The reader catches up: everything arrives, in order.
        for (let i = 0; i < 200 && Buffer.concat(received).length < Buffer.concat(written).length; i++) {
          await turn();
          received.push(...read());
        }
        expect(Buffer.concat(received).equals(Buffer.concat(written))).toBe(true);
        out.whenDrained(() => drainedCalls++);
        await turn();
        await turn();
        expect(drainedCalls).toBeGreaterThanOrEqual(1);
        expect(out.drained).toBe(true);
        expect(out.backlog).toBe(0);
        // Idle again: no listener left behind on the stream.
        expect(s.listenerCount('drain')).toBe(0);
      }),
      { numRuns: 150 },
    );
  });

  it('writes a large pass out in slices, and what is written meanwhile joins the connections still ahead in it', async () => {
    const n = WRITE_SLICE * 2 + 5;
    const log: string[] = [];
    const outs = Array.from({ length: n }, (_, i) => {
      const { s } = stream();
      const write = s.write.bind(s);
      s.write = ((chunk: unknown, ...rest: never[]) => {
        log.push(`${i}:${String(chunk)}`);
        return write(chunk, ...rest);
      }) as typeof s.write;
      return new Outbox(s);
    });
    for (const out of outs) out.write('a');
    // One check phase: the first slice only.
    await turn();
    expect(log).toEqual(outs.slice(0, WRITE_SLICE).map((_, i) => `${i}:a`));
    for (const out of outs) out.write('b');
    for (let i = 0; i < 6; i++) await turn();
    const range = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => from + k);
    expect(log).toEqual([
      ...range(0, WRITE_SLICE).map((i) => `${i}:a`),
      // The rest of the pass takes both in its one write, before the first slice gets its second.
      ...range(WRITE_SLICE, n).flatMap((i) => [`${i}:a`, `${i}:b`]),
      ...range(0, WRITE_SLICE).map((i) => `${i}:b`),
    ]);
  });

  it('says drained only once this turn\'s writes are written out, however far behind a long pass they wait', async () => {
    const ahead = Array.from({ length: WRITE_SLICE * 3 }, () => new Outbox(stream().s));
    for (const out of ahead) out.write('a');
    const { s, read } = stream();
    const out = new Outbox(s);
    out.write('b');
    expect(out.drained).toBe(false);
    const handed: string[] = [];
    out.whenDrained(() => handed.push(Buffer.concat(read()).toString()));
    // Three check phases write out the connections ahead; this one's write leaves in the fourth.
    for (let i = 0; i < 3; i++) {
      await turn();
      expect(handed).toEqual([]);
    }
    for (let i = 0; i < 3; i++) await turn();
    expect(handed).toEqual(['b']);
    expect(out.drained).toBe(true);
  });

  it('uncorks a stream handed over corked at its first write-out, with what was written before in one writev', async () => {
    const writes: string[][] = [];
    const make = () => {
      const s = new Writable({
        writev: (chunks, cb) => (writes.push(chunks.map((c) => String(c.chunk))), cb()),
        write: (chunk, _enc, cb) => (writes.push([String(chunk)]), cb()),
      });
      s.cork();
      s.write('head,');
      return s;
    };
    const out = new Outbox(make(), true);
    out.write('one');
    await turn();
    expect(writes).toEqual([['head,', 'one']]);
    out.write('two');
    await turn();
    expect(writes).toEqual([['head,', 'one'], ['two']]);
    // Closed before it wrote anything: what the stream holds still leaves.
    writes.length = 0;
    new Outbox(make(), true).close();
    await turn();
    expect(writes).toEqual([['head,']]);
  });

  it('on close, writes what was written this turn before it (up to what the stream takes), then nothing more', async () => {
    const { s, read } = stream();
    const out = new Outbox(s);
    out.write('one,');
    out.write('two,');
    out.close();
    // What closes the connection writes its own last bytes after the outbox's.
    s.write('bye');
    out.write('never');
    await turn();
    expect(Buffer.concat(read()).toString()).toBe('one,two,bye');
  });

  it('writes nothing of a turn it discards, nor later, for a stream cut within the turn', async () => {
    const { s } = stream();
    const writes: unknown[] = [];
    const write = s.write.bind(s);
    s.write = ((chunk: unknown, ...rest: never[]) => {
      writes.push(chunk);
      return write(chunk, ...rest);
    }) as typeof s.write;
    const errors: unknown[] = [];
    s.on('error', (err) => errors.push(err));
    const out = new Outbox(s);
    out.write('one,');
    out.write('two,');
    out.discard();
    s.destroy();
    out.write('three');
    await turn();
    out.close();
    await turn();
    expect(writes).toEqual([]);
    expect(errors).toEqual([]);
  });

  it('drops what waits once closed, and never calls a drained listener after', async () => {
    const { s, read } = stream();
    const out = new Outbox(s);
    let called = false;
    for (let i = 0; i < 10; i++) out.write(Buffer.alloc(200, i));
    await turn();
    out.whenDrained(() => (called = true));
    out.close();
    const got = Buffer.concat(read());
    // The stream took up to its mark (and a little past it); the queue behind it is gone.
    expect(got.length).toBeLessThan(2000);
    out.write(Buffer.alloc(10));
    await turn();
    read();
    await turn();
    expect(called).toBe(false);
  });
});
