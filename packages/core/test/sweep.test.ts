import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { Sweep } from '../src/sweep.js';

describe('Sweep', () => {
  it('checks every item at each tick until it is deleted, at the shortest period asked for', async () => {
    const seen: string[] = [];
    const sweep = new Sweep<string>((item, now) => {
      expect(now).toBeGreaterThan(0);
      seen.push(item);
      if (item === 'once') sweep.delete(item);
    });
    sweep.add('once', 1_000);
    sweep.add('kept', 20); // a shorter period restarts the timer
    await sleep(120);
    expect(seen.filter((s) => s === 'once')).toEqual(['once']);
    expect(seen.filter((s) => s === 'kept').length).toBeGreaterThanOrEqual(3);
    sweep.delete('kept');
    expect(sweep.size).toBe(0);
    const n = seen.length;
    await sleep(80);
    expect(seen.length).toBe(n);
  });

  it('restarts after it stopped on an empty tick', async () => {
    let checks = 0;
    const sweep = new Sweep<object>(() => {
      checks++;
    });
    const a = {};
    sweep.add(a, 10);
    sweep.delete(a);
    await sleep(40); // the timer sees an empty set and stops
    sweep.add(a, 10);
    await sleep(60);
    expect(checks).toBeGreaterThanOrEqual(2);
  });
});
