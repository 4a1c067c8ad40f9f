/**
 * Client-socket helpers shared by listeners that reply before relaying. The same
 * file lives in proto-http; it belongs in core (see the package README).
 */
import { type AddressInfo, isIP, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { abortStream, ErrorCodes, type Opened, type StreamRequest, type Switch, UgateError } from '@ugate/core';

export const noop = (): void => {};

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** `host:port` or `[v6]:port`; port 0 picks a free port. Throws CONFIG. */
export function parseListenAddress(text: string): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.trim());
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || !host || port > 65535 || (m[1] !== undefined && isIP(m[1]) !== 6)) {
    throw new UgateError(ErrorCodes.CONFIG, `listen address must be host:port or [v6]:port, got ${JSON.stringify(text)}`);
  }
  return { host, port };
}

export function formatAddress(a: AddressInfo | string | null): string[] {
  if (!a || typeof a === 'string') return [];
  return [isIP(a.address) === 6 ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`];
}

/** How long a rejected client gets to read our error reply before the socket is destroyed. */
const LINGER_MS = 2_000;

/**
 * Send `bytes` (if any) and end; the socket is destroyed once the client ends too
 * (auto-destroy) or after a short linger. Reading on meanwhile, discarding, keeps
 * the close from turning into a RST that could make the client lose the reply.
 */
export function closeGracefully(socket: Socket, bytes?: Uint8Array | string): void {
  socket.on('error', noop);
  if (socket.destroyed) return;
  const t = setTimeout(() => socket.destroy(), LINGER_MS);
  socket.once('close', () => clearTimeout(t));
  socket.resume();
  if (bytes === undefined) socket.end();
  else socket.end(bytes);
}

export interface Held {
  /** The client half-closed while the stream was opening, with nothing left unread. */
  readonly ended: boolean;
}

/**
 * Holds a client socket while its mesh stream opens. The socket stays in paused
 * mode with a 'readable' listener: node keeps reading into the socket's own
 * buffer (up to its high-water mark) without consuming it, so a client that
 * resets is noticed (`onGone` aborts the dial) — a plain pause() would stop
 * reading and see nothing — while early bytes and a FIN stay for the relay.
 */
export class Park {
  readonly #socket: Socket;
  readonly #onGone: () => void;
  #ended = false;
  #released = false;

  /** `initial`: bytes already read past the request; they go back in front. */
  constructor(socket: Socket, initial: Buffer, onGone: () => void) {
    this.#socket = socket;
    this.#onGone = onGone;
    socket.on('readable', noop);
    if (initial.length > 0) socket.unshift(initial);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onClose);
  }

  // node emits 'end' without a reader only when the buffer is empty, so nothing is lost.
  #onEnd = (): void => {
    this.#ended = true;
  };

  #onClose = (): void => {
    if (!this.#released) this.#onGone();
  };

  /** Stop holding; the next reader gets the buffered bytes. */
  release(): Held {
    this.#released = true;
    const s = this.#socket;
    s.off('readable', noop);
    s.off('end', this.#onEnd);
    s.off('close', this.#onClose);
    return { ended: this.#ended };
  }
}

/**
 * Relay a released client through `Switch.serve`. Never throws; resolves when
 * the relay ends.
 */
export function handOver(sw: Switch, req: StreamRequest, socket: Socket, opened: Opened, held: Held): Promise<void> {
  if (held.ended) return sw.serve(req, afterFin(socket), opened);
  const done = sw.serve(req, socket, opened);
  // serve() attaches its 'data' listener synchronously, but that does not restart a
  // stream that was switched to paused mode; resume() does.
  socket.resume();
  return done;
}

/**
 * The client as the relay must see it when the socket already emitted 'end'
 * while the stream opened (the relay would wait for that event forever): a
 * duplex that ends at once and writes to the socket.
 */
function afterFin(socket: Socket): Duplex {
  const client = new Duplex({
    read: noop,
    write: (chunk: Buffer, _enc, cb) => socket.write(chunk, cb),
    final: (cb) => socket.end(() => cb()),
    destroy: (err, cb) => {
      if (err) abortStream(socket);
      else socket.destroy();
      cb(err);
    },
  });
  client.push(null);
  socket.on('error', (e) => client.destroy(e));
  socket.on('close', () => client.destroy());
  return client;
}
