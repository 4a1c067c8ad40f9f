import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { isUgateError, loadOrCreateIdentity, meshName } from '@ugate/core';
import { dashboardFiles } from '@ugate/dashboard';
import type { Explanation } from '@ugate/discovery';
import { createCa, issueWorkloadCert, readCa, writeCa, writeCredentials } from '@ugate/proto-hbone';
import { nativeCryptoLoaded } from '@ugate/proto-ssh';
import { Command } from 'commander';
import { type LoadedConfig, loadConfig, resolvePath } from './config.js';
import { formatExplanation } from './explain.js';
import { createLogger } from './logger.js';
import { createNode } from './node.js';
import { runPrimary, workerIndex } from './workers.js';

/** Where a local client reaches the admin endpoint (a wildcard bind is reached on loopback). */
const adminHost = (listen: string) => listen.replace(/^(0\.0\.0\.0|\[::\]):/, '127.0.0.1:');

/** A request to the running node's admin API, with its token when the config has one. */
function adminFetch(loaded: LoadedConfig, path: string, init: RequestInit = {}): Promise<Response> {
  const admin = loaded.config.admin;
  if (!admin) throw new Error('the config has no admin endpoint');
  const token = admin.token ?? (admin.tokenFile ? readFileSync(resolvePath(loaded.baseDir, admin.tokenFile), 'utf8').trim() : undefined);
  return fetch(`http://${adminHost(admin.listen)}${path}`, { ...init, headers: token ? { authorization: `Bearer ${token}` } : {} });
}

function fail(e: unknown): never {
  process.stderr.write(`ugate: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(isUgateError(e) && e.code === 'UGATE_ERR_CONFIG' ? 1 : 2);
}

async function run(file: string | undefined): Promise<void> {
  let loaded: LoadedConfig;
  try {
    loaded = loadConfig(file);
  } catch (e) {
    fail(e);
  }
  const log = createLogger(loaded.config.log);
  if (loaded.config.workers > 1 && cluster.isPrimary) {
    // The key is made once, here, before the workers would race to create it.
    loadOrCreateIdentity(resolvePath(loaded.baseDir, loaded.config.dataDir), loaded.config.meshPrefix);
    return runPrimary(loaded.config.workers, log);
  }
  // Only the first worker serves the admin endpoint (the others would fight over its port).
  if ((workerIndex() ?? 0) > 0) loaded = { ...loaded, config: { ...loaded.config, admin: null } };
  const source = loaded.source === '(embedded default)' ? undefined : loaded.source;
  const node = createNode(loaded.config, {
    baseDir: loaded.baseDir,
    logger: log,
    // A worker other than the first runs without the admin endpoint, on reload too.
    loadConfig: () => {
      const l = loadConfig(source);
      return (workerIndex() ?? 0) > 0 ? { ...l, config: { ...l.config, admin: null } } : l;
    },
    worker: workerIndex(),
    dashboard: dashboardFiles(),
  });
  log.info({ config: loaded.source, nativeCrypto: nativeCryptoLoaded }, 'starting');
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping: no new streams, draining');
    const exit = (code: number) => log.flush(() => process.exit(code));
    node.stop().then(
      () => exit(0),
      () => exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    if (stopping) return;
    log.info({ signal: 'SIGHUP', config: loaded.source }, 'reloading');
    void node.reload();
  });
  try {
    await node.start();
  } catch (e) {
    log.error({ code: isUgateError(e) ? e.code : 'UGATE_ERR_INTERNAL', err: (e as Error).message }, 'start failed');
    log.flush(() => process.exit(1));
  }
}

const program = new Command('ugate')
  .description('ugate mesh gateway')
  // `-c` belongs to whichever command it follows: `ugate -c f` and `ugate check -c f` both work.
  .enablePositionalOptions()
  .option('-c, --config <file>', 'config file (default ./ugate.yaml, else the embedded default)')
  .action(async (opts: { config?: string }) => run(opts.config));

program
  .command('run')
  .description('run a node')
  .option('-c, --config <file>', 'config file')
  .action(async (opts: { config?: string }) => run(opts.config ?? (program.opts() as { config?: string }).config));

program
  .command('id')
  .description('print node ID, VIP6, names and public key (creates the key on first use)')
  .option('-c, --config <file>', 'config file')
  .option('--json', 'print JSON')
  .action((opts: { config?: string; json?: boolean }) => {
    let loaded: LoadedConfig;
    try {
      loaded = loadConfig(opts.config ?? (program.opts() as { config?: string }).config);
    } catch (e) {
      fail(e);
    }
    const { config, baseDir } = loaded;
    const id = loadOrCreateIdentity(resolvePath(baseDir, config.dataDir), config.meshPrefix);
    const services = Object.keys(config.services).map((s) => s.slice(0, s.lastIndexOf(':')).toLowerCase());
    const names = [...new Set([...config.names, ...services, meshName(id.id)])];
    if (opts.json) {
      process.stdout.write(`${JSON.stringify({ id: id.id, vip6: id.vip6, names, publicKey: id.sshPublicKey })}\n`);
      return;
    }
    process.stdout.write(`id:         ${id.id}\nvip6:       ${id.vip6}\nnames:      ${names.join(' ')}\npublic key: ${id.sshPublicKey}\n`);
  });

program
  .command('check')
  .description('validate a config file; prints errors with their key path, exit 1 when invalid')
  .requiredOption('-c, --config <file>', 'config file')
  .action((opts: { config: string }) => {
    try {
      const { source } = loadConfig(opts.config);
      process.stdout.write(`${source}: ok\n`);
    } catch (e) {
      fail(e);
    }
  });

program
  .command('resolve')
  .description('show where a name goes and why: asks the running node (admin API), or resolves locally with --local')
  .argument('<target>', 'host:port')
  .option('-c, --config <file>', 'config file')
  .option('--json', 'print JSON')
  .option('--local', 'resolve in this process from the config instead of asking the running node')
  .option('--wait <ms>', 'with --local: let push sources (xds, multicast) collect records first', '0')
  .action(async (target: string, o: { config?: string; json?: boolean; local?: boolean; wait: string }) => {
    let loaded: LoadedConfig;
    try {
      loaded = loadConfig(o.config ?? (program.opts() as { config?: string }).config);
    } catch (e) {
      fail(e);
    }
    let x: Explanation | undefined;
    const admin = loaded.config.admin?.listen;
    if (!o.local && admin) {
      const host = adminHost(admin);
      try {
        const res = await adminFetch(loaded, `/api/resolve?target=${encodeURIComponent(target)}`);
        const body = (await res.json()) as Explanation & { error?: string };
        if (!res.ok) fail(new Error(String(body.error)));
        x = body;
      } catch (e) {
        if ((e as { cause?: { code?: string } }).cause?.code !== 'ECONNREFUSED') fail(e);
        process.stderr.write(`ugate: no node answers on ${host}; resolving locally from the config\n`);
      }
    }
    if (!x) {
      const node = createNode(loaded.config, { baseDir: loaded.baseDir });
      try {
        await node.discovery.start();
        if (Number(o.wait) > 0) await new Promise((r) => setTimeout(r, Number(o.wait)));
        x = await node.explain(target);
      } catch (e) {
        fail(e);
      } finally {
        await node.discovery.close();
      }
    }
    process.stdout.write(o.json ? `${JSON.stringify(x, null, 2)}\n` : formatExplanation(x));
    process.exit(x.error ? 3 : 0);
  });

program
  .command('reload')
  .description('make the running node re-read its config file (its admin API); prints what changed, exit 1 if refused')
  .option('-c, --config <file>', 'config file (to find the admin address)')
  .action(async (o: { config?: string }) => {
    let loaded: LoadedConfig;
    try {
      loaded = loadConfig(o.config ?? (program.opts() as { config?: string }).config);
    } catch (e) {
      fail(e);
    }
    if (!loaded.config.admin) fail(new Error('the config has no admin endpoint: send SIGHUP to the process instead'));
    try {
      const res = await adminFetch(loaded, '/api/reload', { method: 'POST' });
      const body = (await res.json()) as { ok: boolean; errors?: string[] };
      process.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
      process.exit(body.ok ? 0 : 1);
    } catch (e) {
      fail(e);
    }
  });

const defaultCaDir = () => process.env.UGATE_CA_DIR ?? join(homedir(), '.ugate', 'ca');
const ca = program.command('ca').description('a mesh CA for workload (SPIFFE) certificates');

ca.command('init')
  .description('create a mesh root (ca.crt, ca.key); never overwrites an existing one')
  .option('--dir <dir>', 'where to keep the CA (default $UGATE_CA_DIR or ~/.ugate/ca)')
  .option('--trust-domain <td>', 'trust domain', 'cluster.local')
  .option('--days <n>', 'validity in days', '3650')
  .action(async (o: { dir?: string; trustDomain: string; days: string }) => {
    const dir = resolve(o.dir ?? defaultCaDir());
    try {
      writeCa(dir, await createCa({ trustDomain: o.trustDomain, days: Number(o.days) }));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') fail(new Error(`${dir} already holds a CA key; not overwriting it`));
      fail(e);
    }
    process.stdout.write(`${join(dir, 'ca.crt')}\n`);
  });

ca.command('issue')
  .description("issue a workload certificate: writes tls.crt, tls.key, ca.crt (Istio's file names)")
  .requiredOption('--namespace <ns>', 'namespace')
  .requiredOption('--account <sa>', 'service account')
  .requiredOption('--out <dir>', 'output folder')
  .option('--trust-domain <td>', 'trust domain', 'cluster.local')
  .option('--ca-dir <dir>', 'the CA folder (default $UGATE_CA_DIR or ~/.ugate/ca)')
  .option('--days <n>', 'validity in days', '30')
  .action(async (o: { namespace: string; account: string; out: string; trustDomain: string; caDir?: string; days: string }) => {
    try {
      const root = readCa(resolve(o.caDir ?? defaultCaDir()));
      const id = { trustDomain: o.trustDomain, namespace: o.namespace, serviceAccount: o.account };
      writeCredentials(resolve(o.out), await issueWorkloadCert(root, id, { days: Number(o.days) }), root.certPem);
      process.stdout.write(`spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount} → ${resolve(o.out)}\n`);
    } catch (e) {
      fail(e);
    }
  });

program.parseAsync(process.argv).catch(fail);
