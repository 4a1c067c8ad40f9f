import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { pipePair } from '../src/pair.js';

const closed = (s: Duplex) => new Promise<void>((resolve) => s.on('close', () => resolve()));

function collect(s: Duplex): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return once(s, 'end').then(() => Buffer.concat(chunks));
}

describe('pipePair', () => {
  it('carries bytes and half-close each way independently', async () => {
    const [a, b] = pipePair();
    const bothClosed = Promise.all([closed(a), closed(b)]);
    const atB = collect(b);
    const atA = collect(a);
    a.end('from a');
    expect((await atB).toString()).toBe('from a');
    // b can still write after a ended.
    b.end('from b');
    expect((await atA).toString()).toBe('from b');
    await bothClosed;
    expect([a.errored, b.errored]).toEqual([null, null]);
  });

  it('applies backpressure until the other end reads', async () => {
    const [a, b] = pipePair();
    const big = Buffer.alloc(1 << 20, 1);
    expect(a.write(big)).toBe(false);
    let drained = false;
    a.once('drain', () => {
      drained = true;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(drained).toBe(false);
    const got = collect(b);
    await once(a, 'drain');
    a.end();
    expect((await got).length).toBe(big.length);
  });

  it('passes an abort on to the other end', async () => {
    const [a, b] = pipePair();
    a.on('error', () => {});
    b.on('error', () => {});
    const err = new Error('boom');
    const bClosed = closed(b);
    a.destroy(err);
    await bClosed;
    expect(b.errored).toBe(err);
  });

  it('turns a clean destroy before completion into an abort of the other end', async () => {
    const [a, b] = pipePair();
    b.on('error', () => {});
    const bClosed = closed(b);
    a.destroy();
    await bClosed;
    expect(b.errored?.message).toBe('other end of the pipe closed early');
  });

  it('leaves the other end alone when a completed end is destroyed', async () => {
    const [a, b] = pipePair();
    const atA = collect(a);
    b.end('tail');
    await atA;
    const aClosed = closed(a);
    a.end();
    await aClosed;
    // b has the EOF buffered and nobody read it yet: it must still be readable, not errored.
    expect(b.destroyed).toBe(false);
    expect((await collect(b)).length).toBe(0);
    expect(b.errored).toBeNull();
  });
});
