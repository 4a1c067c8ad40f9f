import type { Logger, NodeIdentity } from '@ugate/core';
import { kubernetesSource, type Source, staticSource } from '@ugate/discovery';
import { type Config, resolvePath } from './config.js';

/** The discovery sources the config asks for, in its precedence order. */
export function buildSources(config: Config, baseDir: string, _identity: NodeIdentity, log: Logger): Source[] {
  const d = config.discovery;
  const make: Record<(typeof d.order)[number], () => Source | undefined> = {
    static: () => (d.static ? staticSource(d.static) : undefined),
    xds: () => undefined,
    kubernetes: () =>
      d.kubernetes &&
      kubernetesSource({
        ...d.kubernetes,
        kubeconfig: d.kubernetes.kubeconfig && resolvePath(baseDir, d.kubernetes.kubeconfig),
        logger: log.child({ source: 'kubernetes' }),
      }),
    dns: () => undefined,
    local: () => undefined,
  };
  return d.order.map((name) => make[name]()).filter((s): s is Source => s !== undefined);
}
