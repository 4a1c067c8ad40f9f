/**
 * A throw-away BIND 9 (`named`) on 127.0.0.1 for DNS tests: authoritative for the zones given
 * (optionally DNSSEC-signed), or a validating resolver that forwards zones to another instance.
 * Needs `named` and the dnssec tools (Debian: bind9, bind9-utils; `dig` is in bind9-dnsutils).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, run, start } from './proc.js';

export const NAMED = process.env.NAMED ?? 'named';

export interface Bind9Zone {
  /** Apex without the trailing dot: `mesh.test`, `0.0.127.in-addr.arpa`. */
  readonly origin: string;
  /** Zone-file lines after the SOA and NS records (names relative to the origin unless they end in a dot). */
  readonly records: string;
  /** Sign the zone with a fresh ECDSA P-256 key; its DNSKEY is in `trustAnchors`. */
  readonly sign?: boolean;
  /** SOA minimum (negative-answer TTL), seconds. Default 60. */
  readonly negativeTtl?: number;
}

export interface Bind9Init {
  /** Zones this instance is authoritative for. */
  readonly zones?: readonly Bind9Zone[];
  /** Zones resolved through another server (`ip:port`); makes this instance a validating resolver. */
  readonly forward?: readonly { readonly origin: string; readonly to: string }[];
  /** `trust-anchors` entries (as `Bind9.trustAnchors` gives them) for validating forwarded zones. */
  readonly trustAnchors?: readonly string[];
}

export interface Bind9 {
  readonly port: number;
  /** `127.0.0.1:port`, the form DNS clients are configured with. */
  readonly server: string;
  /** One `trust-anchors` entry per signed zone. */
  readonly trustAnchors: readonly string[];
  /** named's log so far (for failure messages). */
  output(): string;
  stop(): Promise<void>;
}

/** Start named and wait until it says it is running (retrying once with another port if the one picked was taken). */
export async function startBind9(init: Bind9Init): Promise<Bind9> {
  const dir = mkdtempSync(join(tmpdir(), 'ugate-bind9-'));
  try {
    const anchors: string[] = [];
    const zoneConf: string[] = [];
    for (const z of init.zones ?? []) {
      const file = join(dir, `${z.origin}.db`);
      writeFileSync(file, zoneFile(z));
      let served = file;
      if (z.sign) {
        served = `${file}.signed`;
        anchors.push(await signZone(dir, z.origin, file, served));
      }
      zoneConf.push(`zone "${z.origin}" { type primary; file "${served}"; };`);
    }
    for (const f of init.forward ?? []) {
      const [host, port] = splitServer(f.to);
      zoneConf.push(`zone "${f.origin}" { type forward; forward only; forwarders { ${host} port ${port}; }; };`);
    }
    const resolver = (init.forward ?? []).length > 0;
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const conf = join(dir, 'named.conf');
      writeFileSync(
        conf,
        [
          'options {',
          `  directory "${dir}";`,
          `  listen-on port ${port} { 127.0.0.1; };`,
          '  listen-on-v6 { none; };',
          '  pid-file none;',
          '  notify no;',
          '  minimal-responses yes;',
          resolver ? '  recursion yes; allow-recursion { 127.0.0.1; }; dnssec-validation yes;' : '  recursion no; dnssec-validation no;',
          '};',
          // No rndc control channel: several instances would fight over 127.0.0.1:953.
          'controls { };',
          init.trustAnchors?.length ? `trust-anchors {\n${init.trustAnchors.map((a) => `  ${a};`).join('\n')}\n};` : '',
          ...zoneConf,
          '',
        ].join('\n'),
      );
      const proc = start(NAMED, ['-g', '-4', '-n', '1', '-c', conf]);
      const state = await ready(proc);
      if (state === 'running') {
        return {
          port,
          server: `127.0.0.1:${port}`,
          trustAnchors: anchors,
          output: proc.output,
          stop: async () => {
            const t = setTimeout(() => proc.child.kill('SIGKILL'), 5_000);
            await proc.stop('SIGTERM');
            clearTimeout(t);
            rmSync(dir, { recursive: true, force: true });
          },
        };
      }
      await proc.stop('SIGKILL');
      if (state !== 'port taken' || attempt >= 3) throw new Error(`named did not start (${state}):\n${proc.output()}`);
    }
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

function zoneFile(z: Bind9Zone): string {
  return [
    '$TTL 300',
    `@ IN SOA ns.${z.origin}. hostmaster.${z.origin}. 1 3600 600 86400 ${z.negativeTtl ?? 60}`,
    '@ IN NS localhost.',
    z.records,
    '',
  ].join('\n');
}

/** One key used as both KSK and ZSK (`-z`); returns the `trust-anchors` entry for it. */
async function signZone(dir: string, origin: string, file: string, signed: string): Promise<string> {
  const key = await run('dnssec-keygen', ['-q', '-a', 'ECDSAP256SHA256', '-f', 'KSK', '-K', dir, origin]);
  if (key.code !== 0) throw new Error(`dnssec-keygen failed: ${key.stderr}`);
  const base = key.stdout.toString().trim();
  const sign = await run('dnssec-signzone', ['-q', '-z', '-S', '-K', dir, '-d', dir, '-o', origin, '-f', signed, file]);
  if (sign.code !== 0) throw new Error(`dnssec-signzone failed: ${sign.stderr}`);
  const dnskey = /DNSKEY\s+(\d+)\s+(\d+)\s+(\d+)\s+(.+)$/m.exec(readFileSync(join(dir, `${base}.key`), 'utf8'));
  if (!dnskey) throw new Error(`no DNSKEY in ${base}.key`);
  const [, flags, proto, alg, b64 = ''] = dnskey;
  return `"${origin}." static-key ${flags} ${proto} ${alg} "${b64.replace(/\s+/g, '')}"`;
}

function splitServer(s: string): [string, string] {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i), s.slice(i + 1)];
}

/** Wait for named's "running" line, its exit, or a bind failure. */
async function ready(proc: ReturnType<typeof start>): Promise<'running' | 'port taken' | 'zone error' | 'exited' | 'timed out'> {
  const until = Date.now() + 15_000;
  for (;;) {
    const out = proc.output();
    if (/address in use/i.test(out)) return 'port taken';
    if (/not loaded due to errors/.test(out)) return 'zone error';
    if (/\brunning\s*$/m.test(out)) return 'running';
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) return 'exited';
    if (Date.now() > until) return 'timed out';
    await new Promise((r) => setTimeout(r, 20));
  }
}
