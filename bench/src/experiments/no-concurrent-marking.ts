/**
 * Experiment preload (not part of the benchmark's default run): turn off V8's
 * concurrent marking, which under ugate's Buffer churn keeps starting full
 * mark-compact cycles on helper threads. Same as passing --no-concurrent-marking. Use:
 *   node bench/dist/run.js --only ugate --ugate-node-args=--import=./bench/dist/experiments/no-concurrent-marking.js
 */
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--no-concurrent-marking');
