import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ErrorCodes, type RelayOptions, type RelayStats, relay } from '@ugate/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  activeHandles,
  collect,
  hashAll,
  randomBytes,
  readAll,
  sha256,
  tcpPair,
  waitFor,
  whenClosed,
} from '../../../test/support/servers.js';

const MiB = 1024 * 1024;
const noop = () => {};

interface Relayed {
  /** The application on side A (peer of `a`). */
  userA: Socket;
  a: Socket;
  b: Socket;
  /** The application on side B (peer of `b`). */
  userB: Socket;
  stats: Promise<RelayStats>;
  /** True once `stats` resolved. */
  settled(): boolean;
}

const made: Socket[] = [];
afterEach(() => {
  for (const s of made.splice(0)) s.destroy();
});

/** userA ⇄ a ==relay== b ⇄ userB, all real TCP on 127.0.0.1 with allowHalfOpen. */
async function relayed(opts?: RelayOptions): Promise<Relayed> {
  const [p1, p2] = await Promise.all([tcpPair(), tcpPair()]);
  const userA = p1.client;
  const a = p1.server;
  const b = p2.client;
  const userB = p2.server;
  made.push(userA, a, b, userB);
  userA.on('error', noop);
  userB.on('error', noop);
  let done = false;
  const stats = relay(a, b, opts);
  void stats.then(() => (done = true));
  return { userA, a, b, userB, stats, settled: () => done };
}

describe('relay', () => {
  it('moves 32 MiB each way concurrently, byte-exact, with exact counters', async () => {
    const r = await relayed();
    const up = randomBytes(32 * MiB);
    const down = randomBytes(32 * MiB);
    const atB = hashAll(r.userB);
    const atA = hashAll(r.userA);
    r.userA.end(up);
    r.userB.end(down);
    const [gotB, gotA, stats] = await Promise.all([atB, atA, r.stats]);
    expect(gotB).toEqual({ bytes: up.length, sha256: sha256(up) });
    expect(gotA).toEqual({ bytes: down.length, sha256: sha256(down) });
    expect(stats.error).toBeUndefined();
    expect(stats.bytesAtoB).toBe(up.length);
    expect(stats.bytesBtoA).toBe(down.length);
    expect(r.a.destroyed).toBe(true);
    expect(r.b.destroyed).toBe(true);
    const [ca, cb] = await Promise.all([whenClosed(r.userA), whenClosed(r.userB)]);
    expect(ca).toEqual({ error: undefined, ended: true });
    expect(cb).toEqual({ error: undefined, ended: true });
  });

  it('half-close A→B: B still sends afterwards and A receives it all', async () => {
    const r = await relayed();
    const atB = collect(r.userB);
    const atA = collect(r.userA);
    r.userA.end('request from A');
    expect((await atB.done).toString()).toBe('request from A'); // B saw A's end
    expect(r.a.readableEnded).toBe(true);
    const part1 = randomBytes(300_000);
    r.userB.write(part1);
    await atA.atLeast(part1.length);
    expect(r.settled()).toBe(false);
    const part2 = randomBytes(2 * MiB + 7);
    r.userB.end(part2);
    const gotA = await atA.done;
    expect(sha256(gotA)).toBe(sha256([part1, part2]));
    const stats = await r.stats;
    expect(stats.error).toBeUndefined();
    expect(stats.bytesAtoB).toBe(14);
    expect(stats.bytesBtoA).toBe(part1.length + part2.length);
    expect(r.a.destroyed && r.b.destroyed).toBe(true);
    expect((await whenClosed(r.userA)).error).toBeUndefined();
    expect((await whenClosed(r.userB)).error).toBeUndefined();
  });

  it('half-close B→A: A still sends afterwards and B receives it all', async () => {
    const r = await relayed();
    const atB = collect(r.userB);
    const atA = collect(r.userA);
    const first = randomBytes(1 * MiB);
    r.userB.end(first);
    expect(sha256(await atA.done)).toBe(sha256(first)); // A saw B's end
    const part1 = Buffer.from('still talking');
    r.userA.write(part1);
    await atB.atLeast(part1.length);
    expect(r.settled()).toBe(false);
    const part2 = randomBytes(3 * MiB);
    r.userA.end(part2);
    expect(sha256(await atB.done)).toBe(sha256([part1, part2]));
    const stats = await r.stats;
    expect(stats.error).toBeUndefined();
    expect(stats.bytesAtoB).toBe(part1.length + part2.length);
    expect(stats.bytesBtoA).toBe(first.length);
    expect(r.a.destroyed && r.b.destroyed).toBe(true);
  });

  it.each(['A', 'B'] as const)('an abort (RST) from side %s resets the other side and reports ABORTED', async (side) => {
    const r = await relayed();
    const [aborter, other] = side === 'A' ? [r.userA, r.userB] : [r.userB, r.userA];
    const atOther = collect(other);
    const atAborter = collect(aborter);
    aborter.write('x'.repeat(1000));
    other.write('y'.repeat(2000));
    await Promise.all([atOther.atLeast(1000), atAborter.atLeast(2000)]);
    aborter.resetAndDestroy();
    const stats = await r.stats;
    expect(stats.error?.code).toBe(ErrorCodes.ABORTED);
    expect(side === 'A' ? stats.bytesAtoB : stats.bytesBtoA).toBe(1000);
    expect(side === 'A' ? stats.bytesBtoA : stats.bytesAtoB).toBe(2000);
    expect(r.a.destroyed && r.b.destroyed).toBe(true);
    const info = await whenClosed(other);
    // Not a clean end: the other application sees a reset.
    expect(info.ended).toBe(false);
    expect((info.error as NodeJS.ErrnoException | undefined)?.code).toBe('ECONNRESET');
    await expect(atOther.done).rejects.toThrow();
  });

  it('a side that is already closed aborts the other at once', async () => {
    const r = await relayed();
    const p = await tcpPair();
    made.push(p.client, p.server);
    p.server.destroy();
    await whenClosed(p.server);
    const atB = collect(r.userB);
    const stats = await relay(p.server, r.b);
    expect(stats.error?.code).toBe(ErrorCodes.ABORTED);
    expect(r.b.destroyed).toBe(true);
    const info = await whenClosed(r.userB);
    expect(info.ended).toBe(false);
    await expect(atB.done).rejects.toThrow();
    r.a.destroy(); // the first relay of this test ends with an abort too
    expect((await r.stats).error?.code).toBe(ErrorCodes.ABORTED);
  });

  it('idle timeout aborts both sides with IDLE_TIMEOUT, keeping the counters', async () => {
    const r = await relayed({ idleTimeoutMs: 100 });
    const atA = collect(r.userA);
    const atB = collect(r.userB);
    r.userA.write('ab');
    r.userB.write('cde');
    await Promise.all([atB.atLeast(2), atA.atLeast(3)]);
    const stats = await r.stats; // nothing moves any more
    expect(stats.error?.code).toBe(ErrorCodes.IDLE_TIMEOUT);
    expect(stats.bytesAtoB).toBe(2);
    expect(stats.bytesBtoA).toBe(3);
    expect(r.a.destroyed && r.b.destroyed).toBe(true);
    for (const s of [r.userA, r.userB]) {
      const info = await whenClosed(s);
      expect(info.ended).toBe(false);
      expect((info.error as NodeJS.ErrnoException | undefined)?.code).toBe('ECONNRESET');
    }
  });

  it('backpressure: a paused reader stops the relay from reading the writer', async () => {
    const r = await relayed();
    r.userB.pause(); // B's application reads nothing for now
    const offered = 64 * MiB;
    const data = randomBytes(offered);
    r.userA.write(data); // far more than any socket buffer chain holds
    // Wait until the relay stopped reading A and nothing moves any more.
    let last = -1;
    let still = 0;
    await waitFor(
      () => {
        const now = r.a.bytesRead;
        still = now === last ? still + 1 : 0;
        last = now;
        return still >= 10 && r.a.isPaused();
      },
      10_000,
      'the relay to stop reading side A',
    );
    const readWhilePaused = r.a.bytesRead;
    // Bounded by socket buffers, not by what the writer offered.
    expect(readWhilePaused).toBeLessThan(offered / 4);
    expect(r.settled()).toBe(false);

    r.userA.end();
    const atB = hashAll(r.userB); // resumes B
    expect(await atB).toEqual({ bytes: offered, sha256: sha256(data) });
    r.userB.end();
    const stats = await r.stats;
    expect(stats.error).toBeUndefined();
    expect(stats.bytesAtoB).toBe(offered);
    expect(stats.bytesBtoA).toBe(0);
    expect(r.a.destroyed && r.b.destroyed).toBe(true);
  });

  it('leaves no sockets behind', async () => {
    const before = activeHandles().sockets;
    const r = await relayed();
    const atA = collect(r.userA);
    r.userB.end('bye');
    r.userA.end();
    await Promise.all([r.stats, atA.done, whenClosed(r.userA), whenClosed(r.userB)]);
    expect([r.userA, r.a, r.b, r.userB].map((s) => s.destroyed)).toEqual([true, true, true, true]);
    await waitFor(() => activeHandles().sockets <= before, 2_000).catch(noop);
    expect(activeHandles().sockets).toBeLessThanOrEqual(before);
  });
});

describe('relay: a source that already ended', () => {
  it('passes on a half-close that happened before the relay started', async () => {
    const left = await tcpPair();
    const right = await tcpPair();
    // left.server's client half-closes and its 'end' is consumed before relay() is called
    left.client.end('early');
    const early = await readAll(left.server);
    expect(early.toString()).toBe('early');
    expect(left.server.readableEnded).toBe(true);
    const done = relay(left.server, right.client);
    const atRight = readAll(right.server);
    await new Promise((r) => right.server.once('end', r));
    right.server.end('reply');
    expect((await atRight).toString()).toBe('');
    expect((await readAll(left.client)).toString()).toBe('reply');
    const stats = await done;
    expect(stats.error).toBeUndefined();
  });

  it('idle checks are per relay: a busy relay outlives an idle one that shares its timer', async () => {
    const idle = await relayed({ idleTimeoutMs: 200 });
    const busy = await relayed({ idleTimeoutMs: 200 });
    const atB = collect(busy.userB);
    const t0 = Date.now();
    const tick = setInterval(() => busy.userA.write('.'), 40);
    try {
      expect((await idle.stats).error?.code).toBe(ErrorCodes.IDLE_TIMEOUT);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
      await new Promise((r) => setTimeout(r, 300));
      expect(busy.settled()).toBe(false);
    } finally {
      clearInterval(tick);
    }
    await atB.atLeast(10);
    expect((await busy.stats).error?.code).toBe(ErrorCodes.IDLE_TIMEOUT);
  });

  it('once finished, a stream that lives on does not keep the other side alive', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const duplex = () => new Duplex({ read() {}, write: (_c, _e, cb) => cb() });
    const a = duplex();
    let b: Duplex | undefined = duplex();
    const gone = new WeakRef(b);
    const stats = relay(a, b);
    a.destroy();
    expect((await stats).error?.code).toBe(ErrorCodes.ABORTED);
    b = undefined;
    await new Promise((r) => setTimeout(r, 10));
    gc();
    // `a` still holds the relay's listeners; they must not reach `b` any more.
    expect(a.listenerCount('data')).toBeGreaterThan(0);
    expect(gone.deref()).toBeUndefined();
  });
});
