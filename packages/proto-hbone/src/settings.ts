import type { Http2Stream } from 'node:http2';

/** HTTP/2 settings as ztunnel uses them (see PROTOCOLS.md). */
export const H2 = {
  /** Per-stream window. */
  streamWindow: 4 * 1024 * 1024,
  /** Connection window: 4× the stream window (equal values can deadlock). */
  connectionWindow: 16 * 1024 * 1024,
  maxFrameSize: 1024 * 1024,
  /** What a server advertises. */
  serverMaxStreams: 200,
  /** A client opens another connection beyond this many streams on one. */
  clientMaxStreams: 100,
  pingIntervalMs: 10_000,
  pingTimeoutMs: 20_000,
} as const;

export const h2Settings = (server: boolean) => ({
  initialWindowSize: H2.streamWindow,
  maxFrameSize: H2.maxFrameSize,
  ...(server ? { maxConcurrentStreams: H2.serverMaxStreams } : {}),
  enablePush: false,
});

/**
 * How much a stream's writable side takes before write() asks the writer to wait
 * (local only, nothing on the wire). node gives an HTTP/2 stream the Writable
 * default of 16 KiB and no option to change it: a relay that writes 64 KiB socket
 * reads then waits after every read until nghttp2 has framed and sent it, and each
 * such batch ends in a short TLS record. Measured (docs/BENCHMARKS-hbone.md): 20–40%
 * less CPU per GB in the sending process. Far below the 4 MiB stream window.
 */
export const STREAM_WRITE_BUFFER = 1024 * 1024;

/** Raise `stream`'s writable buffer to `STREAM_WRITE_BUFFER` (node keeps it in the Writable's state). */
export function bufferWrites(stream: Http2Stream): void {
  const state = (stream as unknown as { _writableState?: { highWaterMark?: unknown } })._writableState;
  if (state && typeof state.highWaterMark === 'number' && state.highWaterMark < STREAM_WRITE_BUFFER)
    state.highWaterMark = STREAM_WRITE_BUFFER;
}
