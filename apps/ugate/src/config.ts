import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ErrorCodes, parseHostPattern, parseTarget, UgateError } from '@ugate/core';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

const address = z.string().refine(
  (s) => {
    try {
      parseTarget(s);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'expected host:port (IPv6 as [addr]:port)' },
);
const pattern = z.string().refine(
  (s) => {
    try {
      parseHostPattern(s);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'expected name, *.suffix or *, optionally with :port' },
);
const users = z.record(z.string(), z.string()).optional();
/** `host` or `host:port`. */
const server = (defaultPort: number) =>
  z.string().refine(
    (s) => {
      try {
        parseTarget(s, defaultPort);
        return true;
      } catch {
        return false;
      }
    },
    { message: 'expected host or host:port' },
  );
const ms = z.number().int().nonnegative();
const spiffe = z.string().regex(/^spiffe:\/\//, 'a SPIFFE URI');

const gateway = z.strictObject({
  name: z.string().optional(),
  address,
  user: z.string().default('ugate'),
  id: z
    .string()
    .regex(/^[a-z2-7]{52}$/, 'a node ID is 52 base32 characters')
    .optional(),
  knownHosts: z.string().optional(),
  register: z.boolean().default(true),
});

export const configSchema = z.strictObject({
  /** Where node.key (the identity) lives. */
  dataDir: z.string().default('.ugate'),
  /**
   * Processes sharing the listening ports (node's cluster). Each runs a full node with the same
   * key; the admin endpoint is served by the first one only.
   */
  workers: z.number().int().min(1).max(64).default(1),
  /** Names of this node (besides `<id>.m`). */
  names: z.array(z.string()).default([]),
  /** This node's network (Istio's notion), sent as `x-forwarded-network` on double HBONE. */
  network: z.string().default('default'),
  /** VIP6 prefix (a /64). */
  meshPrefix: z.string().default('fd00::'),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      format: z.enum(['auto', 'json', 'pretty']).default('auto'),
    })
    .prefault({}),
  /** Local services exposed under mesh names: `name:port: host:port`. */
  services: z.record(address, address).default({}),
  routes: z
    .array(
      z.strictObject({
        match: pattern,
        carrier: z.enum(['direct', 'ssh', 'hbone', 'hbonec', 'reject']),
        address: address.optional(),
        via: z.string().optional(),
        /** For hbone: the SPIFFE identity the peer must present. */
        identity: spiffe.optional(),
        /** For hbone: reach the peer through this east-west gateway (double HBONE). */
        gateway: z.strictObject({ address, identity: spiffe.optional() }).optional(),
        /** Carrier options, e.g. hbone POST mode: `{mode: post, tokenFile: ./token.jwt, path: /}`. */
        options: z.record(z.string(), z.string()).optional(),
      }),
    )
    .default([{ match: '*', carrier: 'direct' }]),
  policy: z
    .array(
      z.strictObject({
        action: z.enum(['allow', 'deny']),
        to: z.array(pattern).optional(),
        from: z.array(z.string()).optional(),
        protocols: z.array(z.string()).optional(),
        namespaces: z.array(z.string()).optional(),
        sources: z.array(z.string()).optional(),
        /** Exclusions: the rule does not match these (Istio's `not*` fields). */
        notTo: z.array(pattern).optional(),
        notFrom: z.array(z.string()).optional(),
        notNamespaces: z.array(z.string()).optional(),
        notSources: z.array(z.string()).optional(),
        /** true: only peers that proved an identity; false: only those that did not. */
        authenticated: z.boolean().optional(),
      }),
    )
    .default([]),
  ssh: z
    .strictObject({
      listen: address.nullable().default('0.0.0.0:15022'),
      authorizedKeys: z.string().optional(),
      peers: z.array(z.strictObject({ id: z.string(), names: z.array(z.string()).default([]) })).default([]),
      gateways: z.array(gateway).default([]),
      keepaliveIntervalMs: z.number().int().positive().optional(),
      backoff: z.strictObject({ initialMs: z.number().int().positive(), maxMs: z.number().int().positive() }).partial().optional(),
    })
    .prefault({}),
  /** Workload certificate (SPIFFE) for HBONE; default: Istio's mount paths when they exist. */
  workload: z.strictObject({ certDir: z.string().optional() }).prefault({}),
  hbone: z
    .strictObject({
      listen: address,
      /** Which peers may connect: trust domains and namespaces; default = our own. `*` = any. */
      accept: z.strictObject({ trustDomains: z.array(z.string()).optional(), namespaces: z.array(z.string()).optional() }).optional(),
      /** Accept reversed connections (H2R): principal (`td/ns/NS/sa/SA`) → names it may register. */
      h2r: z.record(z.string(), z.array(z.string())).optional(),
      /** Accept POST mode: tokens signed by a key in `jwksFile`, for `issuer` and `audience`. */
      post: z.strictObject({ issuer: z.string(), audience: z.string(), jwksFile: z.string() }).optional(),
    })
    .nullable()
    .default({ listen: '0.0.0.0:15008' }),
  hbonec: z.strictObject({ listen: address }).nullable().default(null),
  /** Keep a reversed HTTP/2 connection (H2R) to an HBONE gateway and register our names there. */
  h2r: z
    .strictObject({ gateway: z.strictObject({ address, identity: spiffe.optional() }) })
    .nullable()
    .default(null),
  /** Where names are looked up besides the static config. Each source is off unless configured. */
  discovery: z
    .strictObject({
      /** Precedence among the configured sources (first with endpoints answers). */
      order: z.array(z.enum(['static', 'xds', 'kubernetes', 'dns', 'local'])).default(['static', 'xds', 'kubernetes', 'dns', 'local']),
      lookupTimeoutMs: z.number().int().positive().default(3000),
      negativeTtlMs: ms.default(5000),
      /** Endpoints tried per stream when dials fail. */
      maxAttempts: z.number().int().positive().default(3),
      /** A failed endpoint is skipped for initialMs, doubling per failure up to maxMs. */
      health: z.strictObject({ initialMs: ms, maxMs: ms }).partial().prefault({}),
      /** Endpoints written down: `name` or `name:port` → endpoints (weights, priorities, health apply). */
      static: z
        .array(
          z.strictObject({
            name: z.string(),
            endpoints: z
              .array(
                z.strictObject({
                  carrier: z.enum(['direct', 'ssh', 'hbone', 'hbonec']),
                  address: server(1),
                  identity: z.string().optional(),
                  gateway: z.strictObject({ address: server(15008), identity: z.string().optional() }).optional(),
                  weight: z.number().int().nonnegative().optional(),
                  priority: z.number().int().nonnegative().optional(),
                  labels: z.record(z.string(), z.string()).optional(),
                }),
              )
              .min(1),
          }),
        )
        .optional(),
      dns: z
        .strictObject({
          servers: z.array(server(53)).min(1),
          /** Suffixes looked up in DNS; default every name. */
          domains: z.array(z.string()).optional(),
          timeoutMs: z.number().int().positive().optional(),
          /** Use TLSA records only from answers with the AD (authenticated data) bit. */
          requireAd: z.boolean().optional(),
        })
        .optional(),
      kubernetes: z
        .strictObject({
          kubeconfig: z.string().optional(),
          context: z.string().optional(),
          inCluster: z.boolean().optional(),
          clusterDomain: z.string().optional(),
          trustDomain: z.string().optional(),
          ttlMs: ms.optional(),
          timeoutMs: z.number().int().positive().optional(),
        })
        .optional(),
      xds: z
        .strictObject({
          address,
          /** PEM files for TLS to istiod (15012); plaintext (15010) when absent. */
          ca: z.string().optional(),
          cert: z.string().optional(),
          key: z.string().optional(),
          /** Bearer token file (e.g. an Istio audience service-account token). */
          tokenFile: z.string().optional(),
          nodeId: z.string().optional(),
          trustDomain: z.string().optional(),
          /** This node's namespace and service account: which authorizations apply here. */
          namespace: z.string().optional(),
          serviceAccount: z.string().optional(),
        })
        .optional(),
      local: z
        .strictObject({
          group: z.string().optional(),
          port: z.number().int().min(1).max(65535).optional(),
          intervalMs: z.number().int().positive().optional(),
          /** IPv4 addresses of the interfaces to announce on; default all non-internal ones. */
          interfaces: z.array(z.string()).optional(),
          /** Multicast TTL (1 = this link only). */
          ttl: z.number().int().min(1).max(255).optional(),
          /** Also hear our own host's other nodes (single-machine setups). */
          loopback: z.boolean().optional(),
          /** Announcements older or newer than this (clock skew) are dropped. */
          maxAgeMs: z.number().int().positive().optional(),
        })
        .optional(),
    })
    .prefault({}),
  /** Built-in DNS server for mesh names (`<id>.m`, names under `domain`); other names are forwarded. */
  dns: z
    .strictObject({
      listen: address,
      domain: z.string().default('mesh.internal'),
      forwarders: z.array(server(53)).default([]),
    })
    .nullable()
    .default(null),
  /** SNI gateway (Istio east-west style, TLS not terminated); off unless configured. */
  sni: z.strictObject({ listen: address }).nullable().default(null),
  socks: z.strictObject({ listen: address, users }).nullable().default({ listen: '127.0.0.1:15080' }),
  http: z.strictObject({ listen: address, users }).nullable().default({ listen: '127.0.0.1:15081' }),
  admin: z
    .strictObject({
      listen: address,
      /** Require `Authorization: Bearer <token>` on everything but /healthz/*. */
      token: z.string().min(16, 'use at least 16 characters').optional(),
      tokenFile: z.string().optional(),
    })
    .nullable()
    .default({ listen: '127.0.0.1:15000' }),
  limits: z
    .strictObject({
      idleTimeoutMs: z.number().int().nonnegative().default(3_600_000),
      connectTimeoutMs: z.number().int().positive().default(10_000),
      drainMs: z.number().int().nonnegative().default(10_000),
    })
    .prefault({}),
});

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;

/** A loaded config plus where relative paths resolve from. */
export interface LoadedConfig {
  config: Config;
  /** Folder that relative paths are resolved against. */
  baseDir: string;
  /** The file read, or `(embedded default)`. */
  source: string;
}

/** Every key the schema knows, to match environment overrides case-insensitively. */
function schemaKeys(s: z.ZodType, out = new Set<string>()): Set<string> {
  const def = (s as unknown as { def?: { type?: string; shape?: Record<string, z.ZodType>; innerType?: z.ZodType; element?: z.ZodType } })
    .def;
  if (!def) return out;
  if (def.shape) {
    for (const [k, v] of Object.entries(def.shape)) {
      out.add(k);
      schemaKeys(v, out);
    }
  }
  if (def.innerType) schemaKeys(def.innerType, out);
  if (def.element) schemaKeys(def.element, out);
  return out;
}
const KNOWN = [...schemaKeys(configSchema)];

/**
 * `UGATE_A__B=value` sets `a.b` (keys match case-insensitively; `__` separates
 * levels; the value is read as YAML, so `null`, numbers and lists work).
 */
export function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('UGATE_') || value === undefined) continue;
    const path = name.slice(6).split('__').filter(Boolean);
    if (path.length === 0) continue;
    let obj: Record<string, unknown> = raw;
    path.forEach((seg, i) => {
      const key =
        Object.keys(obj).find((k) => k.toLowerCase() === seg.toLowerCase()) ??
        KNOWN.find((k) => k.toLowerCase() === seg.toLowerCase()) ??
        seg;
      if (i === path.length - 1) obj[key] = parseYaml(value);
      else {
        const next = obj[key] && typeof obj[key] === 'object' ? obj[key] : {};
        obj[key] = next;
        obj = next as Record<string, unknown>;
      }
    });
  }
  return raw;
}

export function formatIssues(err: z.ZodError): string[] {
  return err.issues.map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`);
}

export function parseConfig(raw: unknown, env: NodeJS.ProcessEnv = {}): Config {
  const obj = raw && typeof raw === 'object' ? structuredClone(raw as Record<string, unknown>) : {};
  const r = configSchema.safeParse(applyEnv(obj, env));
  if (!r.success) throw new UgateError(ErrorCodes.CONFIG, `invalid config:\n  ${formatIssues(r.error).join('\n  ')}`, { cause: r.error });
  return r.data;
}

/**
 * Load a config file (YAML), or the embedded default when `file` is undefined
 * and `./ugate.yaml` does not exist. Relative paths resolve against the file's folder.
 */
export function loadConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const path = file ?? (existsSync('ugate.yaml') ? 'ugate.yaml' : undefined);
  if (!path) {
    const config = parseConfig({ dataDir: resolve(homedir(), '.ugate') }, env);
    return { config, baseDir: process.cwd(), source: '(embedded default)' };
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UgateError(ErrorCodes.CONFIG, `cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
  let raw: unknown;
  try {
    raw = parseYaml(text) ?? {};
  } catch (e) {
    throw new UgateError(ErrorCodes.CONFIG, `${path}: ${(e as Error).message}`, { cause: e });
  }
  return { config: parseConfig(raw, env), baseDir: dirname(resolve(path)), source: resolve(path) };
}

const SECRET = '(redacted)';

/** The config with passwords and tokens replaced, for the admin API. File paths stay: they are not secrets. */
export function redactConfig(config: Config): Config {
  const c = structuredClone(config);
  const users = (u: Record<string, string> | undefined) => u && Object.fromEntries(Object.keys(u).map((k) => [k, SECRET]));
  if (c.socks?.users) c.socks.users = users(c.socks.users);
  if (c.http?.users) c.http.users = users(c.http.users);
  if (c.admin?.token) c.admin.token = SECRET;
  for (const r of c.routes) if (r.options?.token) r.options.token = SECRET;
  return c;
}

export function resolvePath(baseDir: string, p: string): string {
  const expanded = p.startsWith('~/') ? resolve(homedir(), p.slice(2)) : p;
  return isAbsolute(expanded) ? expanded : resolve(baseDir, expanded);
}
