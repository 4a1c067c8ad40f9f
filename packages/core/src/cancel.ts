/**
 * What a stream being opened needs to know of its requester going away: `aborted`, and a
 * callback when that happens. An `AbortSignal` is one; `Cancel` is a cheaper one.
 */
export interface AbortLike {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/**
 * "The requester went away" for one stream. Listeners make one per stream they open; an
 * `AbortController` with its `AbortSignal` (an EventTarget) cost ~24 µs of a ~530 µs HBONE open
 * in node 20 (docs/BENCHMARKS-hbone.md). Every listener runs once, on the first `abort()`;
 * one added after that never runs (as with an AbortSignal).
 */
export class Cancel implements AbortLike {
  #aborted = false;
  #listeners: (() => void)[] | undefined;

  get aborted(): boolean {
    return this.#aborted;
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    if (this.#aborted) return;
    if (this.#listeners) this.#listeners.push(listener);
    else this.#listeners = [listener];
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const i = this.#listeners?.indexOf(listener) ?? -1;
    if (i >= 0) this.#listeners!.splice(i, 1);
  }

  abort(): void {
    if (this.#aborted) return;
    this.#aborted = true;
    const listeners = this.#listeners;
    this.#listeners = undefined;
    if (listeners) for (const l of listeners) l();
  }
}

/** A real AbortSignal that follows `s` (for APIs that want one), or `s` itself when it is one. */
export function toAbortSignal(s: AbortLike): AbortSignal {
  if (s instanceof AbortSignal) return s;
  const ac = new AbortController();
  if (s.aborted) ac.abort();
  else s.addEventListener('abort', () => ac.abort(), { once: true });
  return ac.signal;
}
