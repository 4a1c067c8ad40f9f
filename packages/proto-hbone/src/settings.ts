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
