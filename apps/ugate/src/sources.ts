import { readFileSync } from 'node:fs';
import { type Logger, type NodeIdentity, parseListen, parseTarget } from '@ugate/core';
import { dnsSource, kubernetesSource, type MulticastInit, multicastSource, type Source, staticSource, xdsSource } from '@ugate/discovery';
import { type Config, resolvePath } from './config.js';

/** The discovery sources the config asks for, in its precedence order. */
export function buildSources(config: Config, baseDir: string, identity: NodeIdentity, log: Logger, worker = 0): Source[] {
  const d = config.discovery;
  const make: Record<(typeof d.order)[number], () => Source | undefined> = {
    static: () => (d.static ? staticSource(d.static) : undefined),
    xds: () => {
      const x = d.xds;
      if (!x) return undefined;
      const read = (p: string | undefined) => (p === undefined ? undefined : readFileSync(resolvePath(baseDir, p), 'utf8'));
      const ca = read(x.ca);
      return xdsSource({
        address: x.address,
        tls: ca === undefined ? undefined : { ca, cert: read(x.cert), key: read(x.key) },
        token: read(x.tokenFile)?.trim(),
        nodeId: x.nodeId,
        trustDomain: x.trustDomain,
        network: config.network,
        myNamespace: x.namespace,
        myServiceAccount: x.serviceAccount,
      });
    },
    kubernetes: () =>
      d.kubernetes &&
      kubernetesSource({
        ...d.kubernetes,
        kubeconfig: d.kubernetes.kubeconfig && resolvePath(baseDir, d.kubernetes.kubeconfig),
        logger: log.child({ source: 'kubernetes' }),
      }),
    dns: () => d.dns && dnsSource({ ...d.dns, negativeTtlMs: d.negativeTtlMs }),
    local: () => {
      // One announcer per node: with `workers: N`, the first worker.
      if (!d.local || worker > 0) return undefined;
      const carriers: MulticastInit['carriers'] = [];
      if (config.ssh.listen) carriers.push({ carrier: 'ssh', port: parseListen(config.ssh.listen).port });
      if (config.hbone?.listen) carriers.push({ carrier: 'hbone', port: parseListen(config.hbone.listen).port });
      if (carriers.length === 0) {
        log.warn({ code: 'UGATE_ERR_CONFIG' }, 'discovery.local: no SSH or HBONE listener to announce; listening only');
      }
      const names = [...new Set([...config.names, ...Object.keys(config.services).map((k) => parseTarget(k).host)])];
      return multicastSource({ identity, names, carriers, ...d.local });
    },
  };
  return d.order.map((name) => make[name]()).filter((s): s is Source => s !== undefined);
}
