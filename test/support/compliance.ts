/**
 * Stream compliance suite shared by every carrier and listener package.
 *
 * A package proves itself with a short spec:
 *
 *   runCompliance('socks5', async () => {
 *     const node = await startMyListener();
 *     return {
 *       connect: (t) => socksConnect(node.port, t),
 *       closeListener: () => node.listener.close(),
 *       close: () => node.stop(),
 *     };
 *   });
 *
 * Contract for the harness:
 * - `connect` resolves once the stream to the target is open, i.e. the target
 *   server has accepted the TCP connection (SOCKS/HTTP success reply, SSH
 *   channel confirmation, …). The suite relies on this for server-first tests.
 * - `setup` may be called more than once (the listener-close test uses its own
 *   instance); each call must return an independent component on fresh ports.
 * - `close` must release everything the component holds (listeners, pooled
 *   connections, timers); the last test checks that no socket or server
 *   handle outlives it.
 */
import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  activeHandles,
  collect,
  echoServer,
  flood,
  hashAll,
  hashServer,
  randomBytes,
  sha256,
  sourceServer,
  startServer,
  type TestServer,
  waitFor,
  watchClose,
  whenClosed,
} from './servers.js';

export interface ComplianceHarness {
  /** open a stream through the component under test to the given target (host:port of a local server the suite started) */
  connect(target: { host: string; port: number }): Promise<Duplex>;
  /** close the component's listener(s) */
  closeListener?(): Promise<void>;
  /** tear down everything */
  close(): Promise<void>;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const noop = () => {};

/** Distinct, recognisable 100-byte record number `i`. */
function record(i: number): Buffer {
  const b = Buffer.alloc(100, 0x2e);
  b.write(`#${String(i).padStart(8, '0')}:`, 0, 'latin1');
  b[99] = 0x0a;
  return b;
}

export function runCompliance(name: string, setup: () => Promise<ComplianceHarness>): void {
  describe(`compliance: ${name}`, () => {
    let baseline: { sockets: number; servers: number };
    let harness: ComplianceHarness;
    let echo: TestServer;
    let hash: TestServer;
    let ctl: TestServer;
    const bigDown = randomBytes(16 * MiB);
    let source: TestServer;
    const extraHarnesses: ComplianceHarness[] = [];
    const streams = new Set<Duplex>();
    let tornDown: Promise<void> | undefined;

    const connect = async (h: ComplianceHarness, target: { host: string; port: number }): Promise<Duplex> => {
      const s = await h.connect(target);
      // Errors are asserted through collect()/whenClosed(); never let one crash the worker.
      s.on('error', noop);
      watchClose(s);
      streams.add(s);
      s.once('close', () => streams.delete(s));
      return s;
    };
    const open = (target: { host: string; port: number }) => connect(harness, target);

    const teardown = () => {
      tornDown ??= (async () => {
        for (const s of streams) s.destroy();
        const results = await Promise.allSettled([harness?.close(), ...extraHarnesses.map((h) => h.close())]);
        await Promise.all([echo, hash, ctl, source].map((s) => s?.close()));
        const failed = results.find((r) => r.status === 'rejected');
        if (failed) throw (failed as PromiseRejectedResult).reason;
      })();
      return tornDown;
    };

    beforeAll(async () => {
      baseline = activeHandles();
      [echo, hash, ctl, source] = await Promise.all([echoServer(), hashServer(), startServer(), sourceServer(bigDown)]);
      harness = await setup();
    });

    afterEach(() => {
      // Leftovers of a failed test must not disturb the next one.
      for (const s of streams) s.destroy();
      for (const s of ctl?.sockets ?? []) s.destroy();
    });

    afterAll(() => teardown());

    it('echoes a small exchange, round trip by round trip', async () => {
      const s = await open(echo.target);
      const rx = collect(s);
      s.write('ping');
      await rx.atLeast(4);
      expect(rx.buffer().toString()).toBe('ping');
      s.write('pong');
      await rx.atLeast(8);
      s.end('!');
      expect((await rx.done).toString()).toBe('pingpong!');
      const info = await whenClosed(s);
      expect(info.error).toBeUndefined();
    });

    it('carries 16 MiB client→server exactly (sha256 at both ends)', async () => {
      const data = randomBytes(16 * MiB);
      const s = await open(hash.target);
      const rx = collect(s);
      s.end(data);
      expect((await rx.done).toString()).toBe(sha256(data));
    });

    it('carries 16 MiB server→client exactly (sha256 at both ends)', async () => {
      const s = await open(source.target);
      const got = await hashAll(s);
      expect(got.bytes).toBe(bigDown.length);
      expect(got.sha256).toBe(sha256(bigDown));
      s.end();
      expect((await whenClosed(s)).error).toBeUndefined();
    });

    it('preserves order across 10k writes of 100 bytes', async () => {
      const s = await open(echo.target);
      const rx = collect(s);
      const sent: Buffer[] = [];
      for (let i = 0; i < 10_000; i++) {
        const r = record(i);
        sent.push(r);
        s.write(r);
      }
      s.end();
      const got = await rx.done;
      expect(got.length).toBe(1_000_000);
      // Find the first divergence rather than dumping a megabyte on failure.
      const expected = Buffer.concat(sent);
      const firstBad = got.findIndex((b, i) => b !== expected[i]);
      expect(firstBad).toBe(-1);
    });

    it('half-close client→server: server sees the end, then replies in full', async () => {
      const s = await open(ctl.target);
      const srv = await ctl.accept();
      const up = randomBytes(256 * KiB);
      const down = randomBytes(1 * MiB);
      const srvRx = collect(srv);
      const cliRx = collect(s);
      s.end(up);
      const atServer = await srvRx.done; // the client's end reached the server
      expect(atServer.length).toBe(up.length);
      expect(sha256(atServer)).toBe(sha256(up));
      expect(cliRx.length).toBe(0);
      srv.end(down);
      const atClient = await cliRx.done;
      expect(atClient.length).toBe(down.length);
      expect(sha256(atClient)).toBe(sha256(down));
      const [c, v] = await Promise.all([whenClosed(s), whenClosed(srv)]);
      expect(c.error).toBeUndefined();
      expect(v.error).toBeUndefined();
    });

    it('half-close server→client: client still sends after the server ended', async () => {
      const s = await open(ctl.target);
      const srv = await ctl.accept();
      const down = randomBytes(512 * KiB);
      const up = randomBytes(1 * MiB);
      const srvRx = collect(srv);
      const cliRx = collect(s);
      srv.end(down);
      const atClient = await cliRx.done;
      expect(atClient.length).toBe(down.length);
      expect(sha256(atClient)).toBe(sha256(down));
      expect(srvRx.length).toBe(0);
      s.end(up);
      const atServer = await srvRx.done;
      expect(atServer.length).toBe(up.length);
      expect(sha256(atServer)).toBe(sha256(up));
      const [c, v] = await Promise.all([whenClosed(s), whenClosed(srv)]);
      expect(c.error).toBeUndefined();
      expect(v.error).toBeUndefined();
    });

    it('client abort mid-transfer closes the server side', async () => {
      const s = await open(ctl.target);
      const srv = await ctl.accept();
      const cliRx = collect(s, { keep: false });
      const srvRx = collect(srv, { keep: false });
      const up = flood(s);
      const down = flood(srv);
      await Promise.all([cliRx.atLeast(1 * MiB), srvRx.atLeast(1 * MiB)]);
      s.destroy();
      // The server must see its socket close (error or not) instead of hanging half-open.
      await whenClosed(srv);
      up.stop();
      down.stop();
      expect(srv.destroyed).toBe(true);
    });

    it('server abort mid-transfer closes the client side', async () => {
      const s = await open(ctl.target);
      const srv = await ctl.accept();
      const cliRx = collect(s, { keep: false });
      const srvRx = collect(srv, { keep: false });
      const up = flood(s);
      const down = flood(srv);
      await Promise.all([cliRx.atLeast(1 * MiB), srvRx.atLeast(1 * MiB)]);
      srv.destroy();
      // The client must see its stream close (error or not) instead of hanging. Only the 'close'
      // event counts: some carrier streams (ssh2 channels) never set `destroyed`.
      await whenClosed(s);
      up.stop();
      down.stop();
    });

    it('backpressure: a stalled server stops the client, then every byte arrives', async () => {
      const s = await open(ctl.target);
      const srv = await ctl.accept();
      srv.pause(); // read nothing until the client has seen write() === false
      const base = randomBytes(64 * KiB);
      const limit = 128 * MiB; // far above any sane amount of in-flight buffering
      const h = collect(s, { keep: false }); // nothing comes back; keeps the client readable flowing
      const sentHash = createHash('sha256');
      let offered = 0;
      let i = 0;
      let blocked = false;
      while (!blocked && offered < limit) {
        const chunk = Buffer.from(base);
        chunk.writeUInt32BE(i++, 0);
        sentHash.update(chunk);
        offered += chunk.length;
        blocked = !s.write(chunk);
        // Let the component move bytes between writes, so only real backpressure can stop us.
        if (!blocked) await new Promise((r) => setImmediate(r));
      }
      expect(blocked, `write() still returned true after ${offered} bytes`).toBe(true);
      s.end();
      const got = await hashAll(srv);
      expect(got.bytes).toBe(offered);
      expect(got.sha256).toBe(sentHash.digest('hex'));
      srv.end();
      await h.done;
    });

    it('50 concurrent streams are byte-exact', async () => {
      const run = async (i: number) => {
        const data = randomBytes(64 * KiB + i * 4 * KiB + i);
        const s = await open(echo.target);
        const rx = collect(s);
        s.end(data);
        const got = await rx.done;
        return got.length === data.length && sha256(got) === sha256(data);
      };
      const ok = await Promise.all(Array.from({ length: 50 }, (_, i) => run(i)));
      expect(ok.filter((x) => !x).length).toBe(0);
    });

    it('closing the listener leaves a live stream working', async (ctx) => {
      const h = await setup();
      extraHarnesses.push(h);
      if (!h.closeListener) {
        ctx.skip();
        return;
      }
      const s = await connect(h, echo.target);
      const rx = collect(s);
      s.write('before');
      await rx.atLeast(6);
      await h.closeListener();
      const more = randomBytes(1 * MiB);
      s.write(more);
      await rx.atLeast(6 + more.length);
      s.end('after');
      const got = await rx.done;
      expect(got.length).toBe(6 + more.length + 5);
      expect(sha256(got)).toBe(sha256([Buffer.from('before'), more, Buffer.from('after')]));
    });

    it('leaks no sockets or servers once everything is closed', async () => {
      await teardown();
      const now = () => activeHandles();
      await waitFor(() => now().sockets <= baseline.sockets && now().servers <= baseline.servers, 3_000).catch(noop);
      const after = now();
      expect(after.sockets, `sockets: baseline ${baseline.sockets}`).toBeLessThanOrEqual(baseline.sockets);
      expect(after.servers, `servers: baseline ${baseline.servers}`).toBeLessThanOrEqual(baseline.servers);
    });
  });
}
