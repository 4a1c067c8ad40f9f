import { Cancel, toAbortSignal } from '@ugate/core';
import { describe, expect, it } from 'vitest';

describe('Cancel', () => {
  it('runs each listener once on the first abort; removed listeners and late ones never run', () => {
    const c = new Cancel();
    const calls: string[] = [];
    const a = () => calls.push('a');
    const b = () => calls.push('b');
    c.addEventListener('abort', a);
    c.addEventListener('abort', b);
    c.removeEventListener('abort', b);
    expect(c.aborted).toBe(false);
    c.abort();
    c.abort();
    c.addEventListener('abort', () => calls.push('late'));
    expect(c.aborted).toBe(true);
    expect(calls).toEqual(['a']);
  });

  it('becomes a real AbortSignal for APIs that want one', () => {
    const c = new Cancel();
    const s = toAbortSignal(c);
    expect(s.aborted).toBe(false);
    c.abort();
    expect(s.aborted).toBe(true);
    const already = new Cancel();
    already.abort();
    expect(toAbortSignal(already).aborted).toBe(true);
    const real = new AbortController().signal;
    expect(toAbortSignal(real)).toBe(real);
  });
});
