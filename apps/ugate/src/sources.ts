import type { Logger, NodeIdentity } from '@ugate/core';
import { type Source, staticSource } from '@ugate/discovery';
import type { Config } from './config.js';

/** The discovery sources the config asks for, in its precedence order. */
export function buildSources(config: Config, _baseDir: string, _identity: NodeIdentity, _log: Logger): Source[] {
  const d = config.discovery;
  const make: Record<(typeof d.order)[number], () => Source | undefined> = {
    static: () => (d.static ? staticSource(d.static) : undefined),
    xds: () => undefined,
    kubernetes: () => undefined,
    dns: () => undefined,
    local: () => undefined,
  };
  return d.order.map((name) => make[name]()).filter((s): s is Source => s !== undefined);
}
