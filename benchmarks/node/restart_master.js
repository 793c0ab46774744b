'use strict';
// Node anchor of ../restart.py: a `cluster` master that keeps one worker alive.
//
// Usage: node restart_master.js [--restarts N] [--warmup W] [--gap-ms G] [--timeout-ms T]
//
// The master forks one worker and restarts it the usual way: `cluster.on('exit')` calls
// `cluster.fork()` at once. The worker (this same file, `cluster.isWorker`) only does
// `process.send('ready')` and then idles. W + N times, the master waits G ms after the
// current worker's 'ready' message, then SIGKILLs it itself
// (`process.kill(worker.process.pid, 'SIGKILL')`) and times, with process.hrtime.bigint()
// from just before the kill:
//   exit_ns     until cluster 'exit' for the killed worker (the master saw the death);
//   online_ns   until cluster 'online' for its replacement (the replacement's Node runtime
//               booted and the cluster plumbing reported in, before the worker's script runs);
//   message_ns  until the replacement's 'ready' message (its script ran).
// The first W restarts are warm-up and not reported. At the end the last worker is killed and
// its exit awaited (a worker also exits by itself if the master dies: its IPC channel closes).
// Prints one JSON object on stdout:
//   {"impl": "node", "version": ..., "restarts": [{"exit_ns", "online_ns", "message_ns"}, ...],
//    "anomalies": [...]}
// Percentiles are computed by restart.py, the same way for every implementation.

const cluster = require('node:cluster');

function parseArgs(argv) {
  const opts = { restarts: 20, warmup: 1, 'gap-ms': 50, 'timeout-ms': 30000 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    const value = argv[i + 1];
    if (!(key in opts) || value === undefined) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    opts[key] = Number(value);
  }
  return opts;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function primary() {
  const opts = parseArgs(process.argv.slice(2));
  const anomalies = [];
  let cycle = null; // the restart being timed: {pid, t0, exitNs, onlineNs}
  let stopping = false;
  let readyWaiter = null; // resolves with the next worker whose 'ready' message arrives

  const since = (t0) => Number(process.hrtime.bigint() - t0);

  cluster.on('exit', (worker, code, signal) => {
    const now = process.hrtime.bigint();
    if (stopping) {
      return;
    }
    if (cycle !== null && worker.process.pid === cycle.pid) {
      cycle.exitNs = Number(now - cycle.t0);
      if (signal !== 'SIGKILL') {
        anomalies.push(`worker ${cycle.pid} exited with code ${code}, signal ${signal}`);
      }
    } else {
      anomalies.push(`unexpected exit of worker ${worker.process.pid} (${code}, ${signal})`);
    }
    cluster.fork(); // the restart: at once, as a plain cluster master does
  });

  cluster.on('online', (worker) => {
    if (cycle !== null && worker.process.pid !== cycle.pid) {
      cycle.onlineNs = since(cycle.t0);
      if (cycle.exitNs === undefined) {
        anomalies.push(`replacement ${worker.process.pid} online before the exit was seen`);
      }
    }
  });

  cluster.on('message', (worker, message) => {
    if (message !== 'ready') {
      anomalies.push(`unexpected message ${JSON.stringify(message)}`);
      return;
    }
    const waiter = readyWaiter;
    readyWaiter = null;
    if (waiter === null) {
      anomalies.push(`'ready' from worker ${worker.process.pid} with nobody waiting`);
    } else {
      waiter(worker, process.hrtime.bigint());
    }
  });

  function nextReady() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        readyWaiter = null;
        reject(new Error(`no worker ready within ${opts['timeout-ms']} ms`));
      }, opts['timeout-ms']);
      readyWaiter = (worker, at) => {
        clearTimeout(timer);
        resolve({ worker, at });
      };
    });
  }

  function killAll() {
    stopping = true;
    for (const worker of Object.values(cluster.workers)) {
      worker.process.kill('SIGKILL');
    }
  }

  async function main() {
    const first = nextReady();
    cluster.fork();
    let { worker } = await first;
    const restarts = [];
    for (let i = 0; i < opts.warmup + opts.restarts; i += 1) {
      await sleep(opts['gap-ms']);
      const ready = nextReady();
      cycle = { pid: worker.process.pid, t0: process.hrtime.bigint() };
      process.kill(cycle.pid, 'SIGKILL');
      const next = await ready;
      const done = cycle;
      cycle = null;
      if (next.worker.process.pid === done.pid) {
        throw new Error(`'ready' from the killed worker ${done.pid}`);
      }
      if (done.exitNs === undefined || done.onlineNs === undefined) {
        anomalies.push(`restart ${i}: exit or online not seen before 'ready'`);
      }
      worker = next.worker;
      if (i >= opts.warmup) {
        restarts.push({
          exit_ns: done.exitNs ?? null,
          online_ns: done.onlineNs ?? null,
          message_ns: Number(next.at - done.t0),
        });
      }
    }
    stopping = true;
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    worker.process.kill('SIGKILL');
    await exited;
    process.stdout.write(
      `${JSON.stringify({ impl: 'node', version: process.version, restarts, anomalies })}\n`,
    );
  }

  main().catch((err) => {
    killAll();
    console.error(err);
    process.exitCode = 1;
  });
}

function worker() {
  process.send('ready');
  setInterval(() => {}, 1 << 30); // idle until killed (or until the master's channel closes)
}

if (cluster.isPrimary) {
  primary();
} else {
  worker();
}
