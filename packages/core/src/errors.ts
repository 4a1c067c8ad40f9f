/**
 * Stable error codes. Compare by `code`, never by message; metric labels and
 * access-log `result` fields use these values. The list is documented in
 * packages/core/README.md — keep both in step.
 */
export const ErrorCodes = {
  /** No route, unknown name, or DNS lookup failed. */
  NO_ROUTE: 'UGATE_ERR_NO_ROUTE',
  /** Policy denied the stream. */
  POLICY_DENIED: 'UGATE_ERR_POLICY_DENIED',
  /** The destination actively refused the connection. */
  REFUSED: 'UGATE_ERR_REFUSED',
  /** Host or network unreachable, or no live carrier to reach it. */
  UNREACHABLE: 'UGATE_ERR_UNREACHABLE',
  /** Connect/open timed out. */
  TIMEOUT: 'UGATE_ERR_TIMEOUT',
  /** No bytes in either direction for the idle period. */
  IDLE_TIMEOUT: 'UGATE_ERR_IDLE_TIMEOUT',
  /** The client sent something the protocol does not allow. */
  BAD_REQUEST: 'UGATE_ERR_BAD_REQUEST',
  /** The protocol asked for a feature ugate does not implement. */
  UNSUPPORTED: 'UGATE_ERR_UNSUPPORTED',
  /** Authentication failed (wrong key, password, certificate). */
  AUTH: 'UGATE_ERR_AUTH',
  /** Configuration is invalid. */
  CONFIG: 'UGATE_ERR_CONFIG',
  /** The peer or the local side aborted the stream. */
  ABORTED: 'UGATE_ERR_ABORTED',
  /** The component is closed or shutting down. */
  CLOSED: 'UGATE_ERR_CLOSED',
  /** Anything unexpected: a bug or an unmapped system error. */
  INTERNAL: 'UGATE_ERR_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class UgateError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UgateError';
    this.code = code;
  }
}

export function isUgateError(e: unknown): e is UgateError {
  return e instanceof UgateError;
}

const SYSTEM_CODES: Record<string, ErrorCode> = {
  ECONNREFUSED: ErrorCodes.REFUSED,
  ECONNRESET: ErrorCodes.ABORTED,
  EPIPE: ErrorCodes.ABORTED,
  ETIMEDOUT: ErrorCodes.TIMEOUT,
  EHOSTUNREACH: ErrorCodes.UNREACHABLE,
  ENETUNREACH: ErrorCodes.UNREACHABLE,
  EHOSTDOWN: ErrorCodes.UNREACHABLE,
  EADDRNOTAVAIL: ErrorCodes.UNREACHABLE,
  ENOTFOUND: ErrorCodes.NO_ROUTE,
  EAI_AGAIN: ErrorCodes.NO_ROUTE,
  EAI_NONAME: ErrorCodes.NO_ROUTE,
  EACCES: ErrorCodes.POLICY_DENIED,
};

/** Map any thrown value to a UgateError, keeping the original as `cause`. */
export function toUgateError(e: unknown, fallback: ErrorCode = ErrorCodes.INTERNAL): UgateError {
  if (e instanceof UgateError) return e;
  const sys = (e as { code?: unknown } | null)?.code;
  const code = typeof sys === 'string' ? (SYSTEM_CODES[sys] ?? fallback) : fallback;
  const message = e instanceof Error ? e.message : String(e);
  return new UgateError(code, message, { cause: e });
}

/** Codes are carried over SSH as the prefix of a channel-open failure description. */
export function codeFromText(text: string): ErrorCode | undefined {
  const m = /\b(UGATE_ERR_[A-Z_]+)\b/.exec(text);
  const found = m?.[1];
  return found && (Object.values(ErrorCodes) as string[]).includes(found) ? (found as ErrorCode) : undefined;
}
