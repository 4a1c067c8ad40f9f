import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import {
  direct,
  ErrorCodes,
  type Logger,
  makeTarget,
  type PeerIdentity,
  Policy,
  type PolicyRuleInit,
  type RouteInit,
  Router,
  type StreamRequest,
  Switch,
  type UgateError,
} from '@ugate/core';
import { afterEach, describe, expect, it } from 'vitest';
import { collect, echoServer, startServer, type TestServer, tcpPair, whenClosed } from '../../../test/support/servers.js';

interface Line {
  level: string;
  obj: Record<string, unknown>;
  msg?: string;
}

function capture(): { logger: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const at =
    (level: string) =>
    (a: object | string, b?: string): void => {
      lines.push(typeof a === 'string' ? { level, obj: {}, msg: a } : { level, obj: a as Record<string, unknown>, msg: b });
    };
  const logger: Logger = { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), child: () => logger };
  return { logger, lines };
}

const local: PeerIdentity = { kind: 'local', principals: [] };

function request(host: string, port: number, extra: Partial<StreamRequest> = {}): StreamRequest {
  return {
    sid: 's1',
    target: makeTarget(host, port),
    protocol: 'api',
    source: { address: '127.0.0.1', port: 40000 },
    peer: local,
    ...extra,
  };
}

function makeSwitch(routes: RouteInit[] = [{ match: '*', carrier: 'direct' }], rules: PolicyRuleInit[] = []) {
  const { logger, lines } = capture();
  const sw = new Switch({ router: new Router({ routes }), policy: new Policy(rules), dialers: [direct()], logger, idleTimeoutMs: 0 });
  return { sw, lines };
}

async function openCode(sw: Switch, req: StreamRequest): Promise<string> {
  try {
    const o = await sw.open(req);
    o.stream.destroy();
    return 'opened';
  } catch (e) {
    return (e as UgateError).code;
  }
}

const servers: TestServer[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/** A plain client socket with no listeners at all. */
function connectRaw(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

const HANGING_LISTENER = `
import socket, time
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen(0)
print(s.getsockname()[1], flush=True)
time.sleep(60)
`;

async function closedPort(): Promise<number> {
  const s = await startServer();
  await s.close();
  return s.port;
}

describe('Switch.open', () => {
  it('denies by policy before routing, logs one warn line and counts it', async () => {
    const { sw, lines } = makeSwitch([], [{ action: 'deny', to: ['*.blocked'] }]);
    expect(await openCode(sw, request('x.blocked', 1))).toBe(ErrorCodes.POLICY_DENIED);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'warn',
      msg: 'stream',
      obj: { sid: 's1', target: 'x.blocked:1', result: ErrorCodes.POLICY_DENIED },
    });
    expect(lines[0]!.obj.carrier).toBeUndefined();
    expect(sw.counters).toMatchObject({ opened: 0, failed: 1, byCode: { [ErrorCodes.POLICY_DENIED]: 1 } });
  });

  it('NO_ROUTE for no route, a reject route, and a carrier without a dialer', async () => {
    const { sw, lines } = makeSwitch([
      { match: '*.rejected', carrier: 'reject' },
      { match: '*.via-ssh', carrier: 'ssh', via: 'gw' },
    ]);
    expect(await openCode(sw, request('a.nowhere', 1))).toBe(ErrorCodes.NO_ROUTE);
    expect(await openCode(sw, request('a.rejected', 1))).toBe(ErrorCodes.NO_ROUTE);
    expect(await openCode(sw, request('a.via-ssh', 1))).toBe(ErrorCodes.NO_ROUTE);
    expect(lines.map((l) => l.obj.result)).toEqual([ErrorCodes.NO_ROUTE, ErrorCodes.NO_ROUTE, ErrorCodes.NO_ROUTE]);
    expect(lines[2]!.obj).toMatchObject({ carrier: 'ssh', via: 'gw' });
    expect(sw.counters.byCode).toEqual({ [ErrorCodes.NO_ROUTE]: 3 });
  });

  it('maps a refused direct dial to REFUSED', async () => {
    const { sw } = makeSwitch();
    expect(await openCode(sw, request('127.0.0.1', await closedPort()))).toBe(ErrorCodes.REFUSED);
    expect(sw.counters.failed).toBe(1);
  });

  it('a connect nobody answers times out (TIMEOUT), other dials unaffected', async () => {
    // A listener that never accepts: once its queue is full, the kernel drops further SYNs.
    const py = spawn('python3', ['-c', HANGING_LISTENER], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const port = Number((await once(py.stdout!, 'data'))[0].toString());
      for (let i = 0; i < 4; i++) {
        const f = connect({ host: '127.0.0.1', port });
        f.on('error', () => {});
        sockets.push(f);
      }
      await new Promise((r) => setTimeout(r, 200));
      const echo = await echoServer();
      servers.push(echo);
      const { logger } = capture();
      const sw = new Switch({
        router: new Router({ routes: [{ match: '*', carrier: 'direct' }] }),
        policy: new Policy([]),
        dialers: [direct({ connectTimeoutMs: 300 })],
        logger,
        idleTimeoutMs: 0,
      });
      const t0 = Date.now();
      const hung = openCode(sw, request('127.0.0.1', port));
      // Meanwhile a dial that connects is answered at once.
      expect(await openCode(sw, request('127.0.0.1', echo.port))).toBe('opened');
      expect(await hung).toBe(ErrorCodes.TIMEOUT);
      const took = Date.now() - t0;
      expect(took).toBeGreaterThanOrEqual(300);
      expect(took).toBeLessThan(3000);
    } finally {
      py.kill();
    }
  });

  it('dials the route address instead of the target', async () => {
    const echo = await echoServer();
    servers.push(echo);
    const { sw } = makeSwitch([{ match: 'svc.mesh', carrier: 'direct', address: `127.0.0.1:${echo.port}` }]);
    const opened = await sw.open(request('svc.mesh', 80));
    expect(opened.upstream).toMatchObject({ carrier: 'direct', address: { host: '127.0.0.1', port: echo.port } });
    const rx = collect(opened.stream);
    opened.stream.end('via address');
    expect((await rx.done).toString()).toBe('via address');
    expect(sw.counters.opened).toBe(1);
  });

  it('an aborted requester yields ABORTED', async () => {
    const srv = await startServer();
    servers.push(srv);
    const { sw } = makeSwitch();
    const ac = new AbortController();
    const pending = openCode(sw, request('127.0.0.1', srv.port, { signal: ac.signal }));
    ac.abort();
    expect(await pending).toBe(ErrorCodes.ABORTED);
  });
});

describe('Switch.pipe / serve / drain', () => {
  it('relays, counts bytes and logs one ok line', async () => {
    const echo = await echoServer();
    servers.push(echo);
    const { sw, lines } = makeSwitch();
    const { client, server } = await tcpPair();
    sockets.push(client, server);
    const done = sw.pipe(request('127.0.0.1', echo.port), server);
    const rx = collect(client);
    client.end('0123456789');
    expect((await rx.done).toString()).toBe('0123456789');
    await done;
    expect(sw.active).toBe(0);
    expect(sw.counters).toMatchObject({ opened: 1, failed: 0, bytesIn: 10, bytesOut: 10 });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'info', obj: { result: 'ok', bytesIn: 10, bytesOut: 10, carrier: 'direct', peer: 'local' } });
  });

  it('aborts the client when the stream cannot be opened', async () => {
    const { sw } = makeSwitch();
    const { client, server } = await tcpPair();
    sockets.push(client, server);
    const rx = collect(client);
    await sw.pipe(request('127.0.0.1', await closedPort()), server);
    const info = await whenClosed(client);
    expect(info.ended).toBe(false);
    expect((info.error as NodeJS.ErrnoException | undefined)?.code).toBe('ECONNRESET');
    await expect(rx.done).rejects.toThrow();
  });

  it('a client that fails while the stream is being dialed does not crash the process', async () => {
    const echo = await echoServer();
    servers.push(echo);
    const { sw, lines } = makeSwitch();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let dialed: Socket | undefined;
    const slow = direct();
    sw.addDialer({
      carrier: 'direct',
      async dial(req, up) {
        await gate;
        dialed = (await slow.dial(req, up)) as Socket;
        return dialed;
      },
    });
    // A raw accepted socket, as a listener hands it over: no error listener of its own.
    const srv = await startServer();
    servers.push(srv);
    const [client, raw] = await Promise.all([connectRaw(srv.port), srv.accept()]);
    raw.removeAllListeners('error');
    sockets.push(client, raw);
    const done = sw.pipe(request('127.0.0.1', echo.port), raw);
    client.resetAndDestroy();
    await new Promise((r) => raw.once('close', r)); // deliberately no 'error' listener here
    expect((raw.errored as NodeJS.ErrnoException | null)?.code).toBe('ECONNRESET');
    release();
    await done;
    expect(dialed?.destroyed).toBe(true);
    expect(lines.at(-1)!.obj).toMatchObject({ result: ErrorCodes.ABORTED });
  });

  it('drain aborts streams still live at the deadline', async () => {
    const srv = await startServer();
    servers.push(srv);
    const { sw, lines } = makeSwitch();
    const { client, server } = await tcpPair();
    sockets.push(client, server);
    const done = sw.pipe(request('127.0.0.1', srv.port), server);
    const upstream = await srv.accept();
    const rx = collect(upstream);
    client.write('hi');
    await rx.atLeast(2);
    expect(sw.active).toBe(1);
    await sw.drain(0);
    await done;
    expect(sw.active).toBe(0);
    expect((await whenClosed(client)).ended).toBe(false);
    expect(lines.at(-1)!.obj).toMatchObject({ result: ErrorCodes.ABORTED, bytesIn: 2 });
  });
});
