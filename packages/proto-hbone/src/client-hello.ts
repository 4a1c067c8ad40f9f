/**
 * A TLS ClientHello reader for routing by SNI without terminating TLS.
 * Pure functions over the bytes received so far; handshake messages split
 * across records and records split across reads are both handled.
 */

export type HelloResult = { status: 'more' } | { status: 'ok'; sni: string | undefined } | { status: 'error'; reason: string };

/** Largest ClientHello we accept (post-quantum key shares make them ~1.5 KiB; 16 KiB is generous). */
export const MAX_HELLO = 16 * 1024;

const CONTENT_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;

/** Concatenate the payloads of the leading handshake records; `more` until the ClientHello is complete. */
export function parseClientHello(buf: Buffer): HelloResult {
  const payload: Buffer[] = [];
  let have = 0;
  let off = 0;
  let need = -1;
  while (off + 5 <= buf.length) {
    if (buf[off] !== CONTENT_HANDSHAKE) return { status: 'error', reason: `not a TLS handshake record (type 0x${buf[off]!.toString(16)})` };
    if (buf[off + 1] !== 3) return { status: 'error', reason: 'not TLS (record version)' };
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > 16384 + 2048) return { status: 'error', reason: `bad record length ${len}` };
    if (off + 5 + len > buf.length) break;
    payload.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    if (need < 0 && have >= 4) {
      const hs = Buffer.concat(payload);
      if (hs[0] !== HANDSHAKE_CLIENT_HELLO) return { status: 'error', reason: 'first handshake message is not a ClientHello' };
      need = 4 + hs.readUIntBE(1, 3);
      if (need > MAX_HELLO) return { status: 'error', reason: `ClientHello of ${need} bytes is too large` };
    }
    if (need >= 0 && have >= need) return readHello(Buffer.concat(payload).subarray(4, need));
  }
  if (buf.length > MAX_HELLO + 5 * 8) return { status: 'error', reason: 'ClientHello too large' };
  return { status: 'more' };
}

function readHello(b: Buffer): HelloResult {
  try {
    let p = 2 + 32; // client_version, random
    p += 1 + b[p]!; // session_id
    p += 2 + b.readUInt16BE(p); // cipher_suites
    p += 1 + b[p]!; // compression_methods
    if (p > b.length) return { status: 'error', reason: 'truncated ClientHello' };
    if (p === b.length) return { status: 'ok', sni: undefined }; // no extensions
    const end = p + 2 + b.readUInt16BE(p);
    if (end > b.length) return { status: 'error', reason: 'truncated extensions' };
    p += 2;
    while (p + 4 <= end) {
      const type = b.readUInt16BE(p);
      const len = b.readUInt16BE(p + 2);
      p += 4;
      if (p + len > end) return { status: 'error', reason: 'truncated extension' };
      if (type === EXT_SERVER_NAME) return { status: 'ok', sni: readServerName(b.subarray(p, p + len)) };
      p += len;
    }
    return { status: 'ok', sni: undefined };
  } catch {
    return { status: 'error', reason: 'malformed ClientHello' };
  }
}

function readServerName(e: Buffer): string | undefined {
  let p = 2; // list length
  while (p + 3 <= e.length) {
    const type = e[p]!;
    const len = e.readUInt16BE(p + 1);
    p += 3;
    if (type === 0)
      return e
        .subarray(p, p + len)
        .toString('ascii')
        .toLowerCase();
    p += len;
  }
  return undefined;
}

/** Istio east-west SNI: `outbound_.<port>_._.<host>` → host:port; any other name → name:443. */
export function sniTarget(sni: string): { host: string; port: number } {
  const m = /^outbound_\.(\d{1,5})_\.[^.]*_\.(.+)$/.exec(sni);
  return m ? { host: m[2]!, port: Number(m[1]) } : { host: sni, port: 443 };
}

/** A fatal TLS alert record (TLS 1.2 framing, understood by every client). */
export function tlsAlert(description: number): Buffer {
  return Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]);
}
export const ALERT = { UNRECOGNIZED_NAME: 112, INTERNAL_ERROR: 80, ACCESS_DENIED: 49, DECODE_ERROR: 50 } as const;
