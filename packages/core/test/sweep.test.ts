import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { Sweep, type Swept } from '../src/sweep.js';

interface Item extends Swept<Item> {
  name: string;
}
const item = (name: string): Item => ({ name, sweepPrev: undefined, sweepNext: undefined, inSweep: false });

describe('Sweep', () => {
  it('checks every item at each tick until it is deleted, at the shortest period asked for', async () => {
    const seen: string[] = [];
    const once = item('once');
    const kept = item('kept');
    const sweep = new Sweep<Item>((it, now) => {
      expect(now).toBeGreaterThan(0);
      seen.push(it.name);
      if (it === once) sweep.delete(it); // deleting the item being checked keeps the walk going
    });
    sweep.add(once, 1_000);
    sweep.add(kept, 20); // a shorter period restarts the timer
    sweep.add(kept, 20); // adding twice is a no-op
    expect(sweep.size).toBe(2);
    await sleep(120);
    expect(seen.filter((s) => s === 'once')).toEqual(['once']);
    expect(seen.filter((s) => s === 'kept').length).toBeGreaterThanOrEqual(3);
    sweep.delete(kept);
    sweep.delete(kept); // deleting twice too
    expect(sweep.size).toBe(0);
    expect(kept).toMatchObject({ inSweep: false, sweepPrev: undefined, sweepNext: undefined });
    const n = seen.length;
    await sleep(80);
    expect(seen.length).toBe(n);
  });

  it('unlinks from the head, the middle and the tail; the rest are still checked', async () => {
    const names = ['a', 'b', 'c', 'd', 'e'];
    const items = names.map(item);
    const seen = new Set<string>();
    const sweep = new Sweep<Item>((it) => {
      seen.add(it.name);
    });
    for (const it of items) sweep.add(it, 10);
    // The list is newest first: e d c b a. Take out the head (e), a middle one (c) and the tail (a).
    for (const i of [4, 2, 0]) sweep.delete(items[i]!);
    expect(sweep.size).toBe(2);
    await sleep(50);
    expect([...seen].sort()).toEqual(['b', 'd']);
  });

  it('restarts after it stopped on an empty tick', async () => {
    let checks = 0;
    const sweep = new Sweep<Item>(() => {
      checks++;
    });
    const a = item('a');
    sweep.add(a, 10);
    sweep.delete(a);
    await sleep(40); // the timer sees an empty list and stops
    sweep.add(a, 10);
    await sleep(60);
    expect(checks).toBeGreaterThanOrEqual(2);
  });
});
