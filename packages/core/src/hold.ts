import type { Socket } from 'node:net';

const noop = (): void => {};

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

/**
 * Holds a client socket while its mesh stream opens, for listeners that reply
 * before relaying (SOCKS, HTTP CONNECT). The socket stays in paused mode with a
 * 'readable' listener: node keeps reading into the socket's own buffer (up to
 * its high-water mark) without consuming it, so a client that resets is noticed
 * (`onGone` aborts the dial) — a plain pause() would stop reading and see
 * nothing — while early bytes and a FIN stay for the relay, which picks up a
 * FIN that came meanwhile (`readableEnded`) and resumes the socket.
 */
export class Park {
  readonly #socket: Socket;
  readonly #onGone: () => void;
  #released = false;

  /** `initial`: bytes already read past the request; they go back in front. */
  constructor(socket: Socket, initial: Buffer, onGone: () => void) {
    this.#socket = socket;
    this.#onGone = onGone;
    socket.on('readable', noop);
    if (initial.length > 0) socket.unshift(initial);
    socket.on('close', this.#onClose);
  }

  #onClose = (): void => {
    if (!this.#released) this.#onGone();
  };

  /** Stop holding; the next reader (the relay) gets the buffered bytes. */
  release(): void {
    this.#released = true;
    this.#socket.off('readable', noop);
    this.#socket.off('close', this.#onClose);
  }
}
