// A node that only runs the multicast discovery source (from the built packages) with a fresh key.
// Usage: node mcast-peer.mjs '<json MulticastInit without identity>'
// Prints one JSON object per line: {"event":"ready","id"}, {"event":"update","host","endpoints"},
// {"event":"log","level","msg",...fields}, {"event":"error","message"}. Exits on SIGTERM/SIGINT.
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';

const dist = (pkg) => new URL(`../../packages/${pkg}/dist/index.js`, import.meta.url);
const print = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

for (const pkg of ['core', 'discovery']) {
  if (!existsSync(dist(pkg))) {
    print({ event: 'error', message: `packages/${pkg}/dist is missing: run npx tsc -b` });
    process.exit(2);
  }
}
const { identityFromPem } = await import(dist('core').href);
const { multicastSource } = await import(dist('discovery').href);
if (typeof multicastSource !== 'function') {
  print({ event: 'error', message: 'packages/discovery/dist has no multicastSource: run npx tsc -b' });
  process.exit(2);
}

const init = JSON.parse(process.argv[2] ?? '{}');
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const identity = identityFromPem(privateKey.export({ type: 'sec1', format: 'pem' }).toString());

const logAt = (level) => (a, msg) => print(typeof a === 'string' ? { event: 'log', level, msg: a } : { event: 'log', level, msg, ...a });
const logger = { error: logAt('error'), warn: logAt('warn'), info: logAt('info'), debug: logAt('debug'), child: () => logger };

const source = multicastSource({ identity, ...init });
await source.start(
  {
    update: (u) => print({ event: 'update', host: u.host, endpoints: u.endpoints }),
    reset: () => print({ event: 'reset' }),
  },
  logger,
);
print({ event: 'ready', id: identity.id });

// The source's socket and timers are unref'd; this keeps the process alive until told to stop.
const alive = setInterval(() => {}, 60_000);
const stop = async () => {
  clearInterval(alive);
  const status = source.status();
  await source.close();
  print({ event: 'closed', status });
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
