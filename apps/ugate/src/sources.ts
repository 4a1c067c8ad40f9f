import type { Logger, NodeIdentity } from '@ugate/core';
import type { Source } from '@ugate/discovery';
import type { Config } from './config.js';

/** The discovery sources the config asks for, in its precedence order. */
export function buildSources(config: Config, _baseDir: string, _identity: NodeIdentity, _log: Logger): Source[] {
  const sources: Source[] = [];
  for (const name of config.discovery.order) {
    if (!config.discovery[name]) continue;
  }
  return sources;
}
