import { Duplex } from 'node:stream';

type Callback = (error?: Error | null) => void;

/**
 * One end of an in-memory byte pipe. Unlike node's `duplexPair`, an abort
 * travels to the other end, and ending does not wait for the other end to be
 * read — what the relay in core needs to see an exchange finish or fail.
 */
class End extends Duplex {
  other!: End;
  /** Our write waiting for the other end to read (backpressure). */
  #blocked: Callback | null = null;

  _read(): void {
    const cb = this.other.#blocked;
    this.other.#blocked = null;
    cb?.();
  }

  _write(chunk: Buffer, _enc: BufferEncoding, cb: Callback): void {
    if (this.other.destroyed) {
      cb(new Error('other end of the pipe is closed'));
      return;
    }
    if (this.other.push(chunk)) cb();
    else this.#blocked = cb;
  }

  _final(cb: Callback): void {
    if (!this.other.destroyed) this.other.push(null);
    cb();
  }

  _destroy(err: Error | null, cb: Callback): void {
    const blocked = this.#blocked;
    this.#blocked = null;
    blocked?.(err);
    // Release a writer blocked on us; it learns of the close from its own destroy below.
    const theirs = this.other.#blocked;
    this.other.#blocked = null;
    theirs?.();
    const other = this.other;
    if (!other.destroyed) {
      // A clean destroy before both directions completed is an abort for the other side
      // too; after completion the other end finishes on its own (it may still be draining).
      if (err) other.destroy(err);
      else if (!complete(this)) other.destroy(new Error('other end of the pipe closed early'));
      else if (complete(other)) other.destroy();
    }
    cb(err);
  }
}

function complete(s: Duplex): boolean {
  return s.readableEnded && s.writableFinished;
}

/** Two connected duplexes: what is written to one is read from the other. */
export function pipePair(): [Duplex, Duplex] {
  const a = new End();
  const b = new End();
  a.other = b;
  b.other = a;
  return [a, b];
}
