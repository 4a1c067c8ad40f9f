/**
 * The links an item carries to be in a `Sweep` (an item is in at most one sweep at a time).
 * Start them as `sweepPrev: undefined, sweepNext: undefined, inSweep: false`.
 */
export interface Swept<T> {
  sweepPrev: T | undefined;
  sweepNext: T | undefined;
  inSweep: boolean;
}

/**
 * Items checked by one shared timer: a timer per stream or per connect costs more than a short
 * stream itself (measured: ~35 µs of a ~500 µs HBONE open). The timer starts with the first item,
 * ticks at the shortest period asked for, and stops at the first tick that finds nothing to
 * check, so items that come and go one after another do not restart it. Timers are unref'd.
 *
 * The items form a doubly linked list through their own fields, not a `Set`: a long-lived hash
 * table that per-stream objects pass through is reallocated as they come and go, and each table
 * it leaves behind in old space keeps the objects it held alive through scavenges until the next
 * full GC (measured on the HBONE opens path, docs/BENCHMARKS-hbone.md). Unlinking overwrites the
 * neighbours' pointers, so nothing stale is left.
 */
export class Sweep<T extends Swept<T>> {
  readonly #check: (item: T, now: number) => void;
  #head: T | undefined;
  #size = 0;
  #timer: NodeJS.Timeout | undefined;
  #periodMs = 0;

  /** `check` runs for every item at each tick; it may delete that item (and only that one). */
  constructor(check: (item: T, now: number) => void) {
    this.#check = check;
  }

  get size(): number {
    return this.#size;
  }

  add(item: T, periodMs: number): void {
    if (item.inSweep) return;
    item.inSweep = true;
    item.sweepPrev = undefined;
    item.sweepNext = this.#head;
    if (this.#head) this.#head.sweepPrev = item;
    this.#head = item;
    this.#size++;
    if (this.#timer && periodMs >= this.#periodMs) return;
    clearInterval(this.#timer);
    this.#periodMs = periodMs;
    this.#timer = setInterval(this.#tick, periodMs).unref();
  }

  delete(item: T): void {
    if (!item.inSweep) return;
    item.inSweep = false;
    const prev = item.sweepPrev;
    const next = item.sweepNext;
    if (prev) prev.sweepNext = next;
    else this.#head = next;
    if (next) next.sweepPrev = prev;
    item.sweepPrev = undefined;
    item.sweepNext = undefined;
    this.#size--;
  }

  readonly #tick = (): void => {
    if (!this.#head) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    const now = Date.now();
    let item: T | undefined = this.#head;
    while (item) {
      const next: T | undefined = item.sweepNext;
      this.#check(item, now);
      item = next;
    }
  };
}
