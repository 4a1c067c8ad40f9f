#!/usr/bin/env node
// Concurrent marking made V8 run frequent full collections of a small heap during relaying
// (a third of the CPU in docs/BENCHMARKS.md); marking on the main thread is cheaper here.
// Node refuses this flag in NODE_OPTIONS, so it is set before the app loads.
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--no-concurrent-marking');
await import('../dist/main.js');
