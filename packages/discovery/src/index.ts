export * from './dns.js';
export * from './dns-server.js';
export * from './kubernetes.js';
export * from './multicast.js';
export * from './resolver.js';
export * from './static.js';
export * from './types.js';
export * from './xds.js';
