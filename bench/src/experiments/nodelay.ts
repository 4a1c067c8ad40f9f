/**
 * Experiment preload (not part of the benchmark's default run): set TCP_NODELAY on
 * every TCP socket of the process, including ssh2's transport socket, which
 * ssh2 leaves with Nagle's algorithm on. Use:
 *   node bench/dist/run.js --only ugate --ugate-node-args=--import=./bench/dist/experiments/nodelay.js
 */
import net from 'node:net';

const connect = net.Socket.prototype.connect as (...args: unknown[]) => net.Socket;
net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
  this.once('connect', () => this.setNoDelay(true));
  return connect.apply(this, args);
} as typeof net.Socket.prototype.connect;

const emit = net.Server.prototype.emit as (event: string | symbol, ...args: unknown[]) => boolean;
net.Server.prototype.emit = function (this: net.Server, event: string | symbol, ...args: unknown[]) {
  if (event === 'connection' && args[0] instanceof net.Socket) args[0].setNoDelay(true);
  return emit.call(this, event, ...args);
} as typeof net.Server.prototype.emit;
