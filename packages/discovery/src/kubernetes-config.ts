import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';
import { ErrorCodes, UgateError } from '@ugate/core';
import { parse as parseYaml } from 'yaml';

/** Where a service account's files are mounted in a pod. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** How to reach and authenticate to one API server. */
export interface ApiCredentials {
  /** `https://host:port`, possibly with a path prefix (API servers behind a proxy). */
  readonly server: URL;
  /** PEM roots to verify the server with; undefined = the system roots. */
  readonly ca?: Buffer;
  /** `insecure-skip-tls-verify`: accept any server certificate. */
  readonly insecure: boolean;
  /** The name to verify the server certificate against instead of the URL's host (`tls-server-name`). */
  readonly serverName?: string;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** The bearer token, read afresh for each request when it comes from a file (projected tokens rotate). */
  token(): Promise<string | undefined>;
  /** Where these credentials came from, for logs and answers. */
  readonly origin: string;
  /** The namespace of the context or the pod, when known. */
  readonly namespace?: string;
}

export interface CredentialsInit {
  /** Path(s) to kubeconfig files (`:`-separated like $KUBECONFIG). Default $KUBECONFIG, then ~/.kube/config. */
  kubeconfig?: string;
  /** Use this context instead of `current-context`. */
  context?: string;
  /** Use the pod's service account. Default: when KUBERNETES_SERVICE_HOST is set and the token file exists. */
  inCluster?: boolean;
  /** The service account folder (token, ca.crt, namespace). Default /var/run/secrets/kubernetes.io/serviceaccount. */
  serviceAccountDir?: string;
}

const configError = (message: string) => new UgateError(ErrorCodes.CONFIG, message);

/** Pick in-cluster or kubeconfig credentials as `init` asks. Throws CONFIG. */
export function loadCredentials(init: CredentialsInit = {}, env: NodeJS.ProcessEnv = process.env): ApiCredentials {
  const saDir = init.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const inCluster = init.inCluster ?? (!!env.KUBERNETES_SERVICE_HOST && existsSync(join(saDir, 'token')));
  return inCluster ? inClusterCredentials(saDir, env) : kubeconfigCredentials(init, env);
}

/** The pod's service account: token file, ca.crt, and the API server from the KUBERNETES_SERVICE_* variables. */
export function inClusterCredentials(saDir: string, env: NodeJS.ProcessEnv = process.env): ApiCredentials {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT || '443';
  if (!host) throw configError('in-cluster Kubernetes credentials need KUBERNETES_SERVICE_HOST (not running in a pod?)');
  const tokenFile = join(saDir, 'token');
  if (!existsSync(tokenFile)) throw configError(`in-cluster Kubernetes credentials: no service account token at ${tokenFile}`);
  const caFile = join(saDir, 'ca.crt');
  const nsFile = join(saDir, 'namespace');
  return {
    server: parseServer(`https://${isIP(host) === 6 ? `[${host}]` : host}:${port}`, 'KUBERNETES_SERVICE_HOST/PORT'),
    ca: existsSync(caFile) ? readFileSync(caFile) : undefined,
    insecure: false,
    token: () => readToken(tokenFile),
    origin: `in-cluster service account (${saDir})`,
    namespace: existsSync(nsFile) ? readFileSync(nsFile, 'utf8').trim() || undefined : undefined,
  };
}

type Obj = Record<string, unknown>;

interface Named {
  readonly body: Obj;
  /** The file the entry came from: its relative paths resolve against this file's folder. */
  readonly file: string;
}

interface Merged {
  currentContext?: string;
  contexts: Map<string, Named>;
  clusters: Map<string, Named>;
  users: Map<string, Named>;
}

/** Credentials from kubeconfig file(s), merged as kubectl does: the first file to define a name wins. */
export function kubeconfigCredentials(
  init: Pick<CredentialsInit, 'kubeconfig' | 'context'>,
  env: NodeJS.ProcessEnv = process.env,
): ApiCredentials {
  const files = kubeconfigFiles(init.kubeconfig, env);
  const merged: Merged = { contexts: new Map(), clusters: new Map(), users: new Map() };
  for (const file of files) mergeFile(merged, file);

  const contextName = init.context ?? merged.currentContext;
  if (!contextName) throw configError(`kubeconfig ${files.join(', ')}: no current-context and no context configured`);
  const context = merged.contexts.get(contextName);
  if (!context) throw configError(`kubeconfig ${files.join(', ')}: no context named ${JSON.stringify(contextName)}`);
  const clusterName = str(context.body.cluster);
  const cluster = clusterName ? merged.clusters.get(clusterName) : undefined;
  if (!cluster) throw configError(`kubeconfig context ${contextName}: no cluster named ${JSON.stringify(clusterName ?? '')}`);
  const userName = str(context.body.user);
  const user = userName ? merged.users.get(userName) : undefined;
  if (userName && !user) throw configError(`kubeconfig context ${contextName}: no user named ${JSON.stringify(userName)}`);

  const c = cluster.body;
  const where = `kubeconfig ${cluster.file} cluster ${clusterName}`;
  const serverText = str(c.server);
  if (!serverText) throw configError(`${where}: no server`);
  if (c['proxy-url'] !== undefined) throw configError(`${where}: proxy-url is not supported`);
  const u = user?.body ?? {};
  const uwhere = `kubeconfig ${user?.file ?? cluster.file} user ${userName ?? '(none)'}`;
  rejectUnsupported(u, uwhere);

  const token = str(u.token);
  const tokenFile = str(u.tokenFile);
  const tokenPath = tokenFile && user ? resolve(dirname(user.file), tokenFile) : undefined;
  const cert = material(u, 'client-certificate', user?.file, uwhere);
  const key = material(u, 'client-key', user?.file, uwhere);
  if (!!cert !== !!key) throw configError(`${uwhere}: client-certificate and client-key must be given together`);
  return {
    server: parseServer(serverText, where),
    ca: material(c, 'certificate-authority', cluster.file, where),
    insecure: c['insecure-skip-tls-verify'] === true,
    serverName: str(c['tls-server-name']),
    cert,
    key,
    token: token ? async () => token : tokenPath ? () => readToken(tokenPath) : async () => undefined,
    origin: `kubeconfig ${cluster.file} context ${contextName}`,
    namespace: str(context.body.namespace),
  };
}

function kubeconfigFiles(path: string | undefined, env: NodeJS.ProcessEnv): string[] {
  const list = (path ?? env.KUBECONFIG ?? '').split(delimiter).filter(Boolean);
  if (list.length === 0) list.push(join(homedir(), '.kube', 'config'));
  const found = list.map((f) => resolve(f)).filter((f) => existsSync(f));
  if (found.length === 0) throw configError(`no kubeconfig found at ${list.join(delimiter)} (and not running in a pod)`);
  return found;
}

function mergeFile(m: Merged, file: string): void {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, 'utf8'));
  } catch (e) {
    throw configError(`kubeconfig ${file}: ${(e as Error).message}`);
  }
  if (doc === null || doc === undefined) return;
  if (!isObj(doc)) throw configError(`kubeconfig ${file}: not a kubeconfig (expected a mapping)`);
  m.currentContext ??= str(doc['current-context']);
  addNamed(m.contexts, doc.contexts, 'context', file);
  addNamed(m.clusters, doc.clusters, 'cluster', file);
  addNamed(m.users, doc.users, 'user', file);
}

function addNamed(into: Map<string, Named>, list: unknown, field: string, file: string): void {
  if (list === undefined || list === null) return;
  if (!Array.isArray(list)) throw configError(`kubeconfig ${file}: ${field}s must be a list`);
  for (const entry of list) {
    const name = isObj(entry) ? str(entry.name) : undefined;
    if (!name || !isObj(entry)) throw configError(`kubeconfig ${file}: a ${field} entry has no name`);
    const body = entry[field] ?? {};
    if (!isObj(body)) throw configError(`kubeconfig ${file}: ${field} ${name} must be a mapping`);
    if (!into.has(name)) into.set(name, { body, file });
  }
}

function rejectUnsupported(u: Obj, where: string): void {
  const exec = u.exec;
  if (exec !== undefined) {
    const command = isObj(exec) ? str(exec.command) : undefined;
    throw configError(
      `${where}: exec credential plugins are not supported (command ${JSON.stringify(command ?? '')}); use token, tokenFile or a client certificate`,
    );
  }
  const provider = u['auth-provider'];
  if (provider !== undefined) {
    const name = isObj(provider) ? str(provider.name) : undefined;
    throw configError(
      `${where}: auth-provider ${JSON.stringify(name ?? '')} is not supported; use token, tokenFile or a client certificate`,
    );
  }
  if (u.username !== undefined || u.password !== undefined)
    throw configError(`${where}: basic authentication (username/password) is not supported`);
  if (u.as !== undefined || u['as-groups'] !== undefined || u['as-uid'] !== undefined) {
    throw configError(`${where}: impersonation (as, as-groups, as-uid) is not supported`);
  }
}

/** `<field>-data` (base64 PEM) or `<field>` (a path relative to the kubeconfig's folder). */
function material(o: Obj, field: string, file: string | undefined, where: string): Buffer | undefined {
  const data = str(o[`${field}-data`]);
  if (data) return Buffer.from(data, 'base64');
  const path = str(o[field]);
  if (!path) return undefined;
  const full = isAbsolute(path) || !file ? path : resolve(dirname(file), path);
  try {
    return readFileSync(full);
  } catch (e) {
    throw configError(`${where}: cannot read ${field} ${full}: ${(e as Error).message}`);
  }
}

function parseServer(text: string, where: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw configError(`${where}: invalid server URL ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'https:') throw configError(`${where}: server ${text} must be https`);
  return url;
}

async function readToken(file: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (e) {
    throw new UgateError(ErrorCodes.AUTH, `cannot read Kubernetes token ${file}: ${(e as Error).message}`, { cause: e });
  }
}

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
