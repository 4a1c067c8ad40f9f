export * from './ca.js';
export * from './client-hello.js';
export * from './credentials.js';
export * from './dialer.js';
export * from './server.js';
export * from './settings.js';
export * from './sni.js';
export * from './spiffe.js';
