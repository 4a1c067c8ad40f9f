export * from './cert.js';
export * from './client.js';
export * from './keys.js';
export * from './server.js';
export * from './wire.js';

import { createRequire } from 'node:module';

const ssh2Crypto = createRequire(import.meta.url)('ssh2/lib/protocol/crypto.js') as { bindingAvailable?: boolean };

/** True when ssh2's native crypto binding loaded (roughly 10× faster ciphers). */
export const nativeCryptoLoaded: boolean = ssh2Crypto.bindingAvailable === true;
