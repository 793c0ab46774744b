'use strict';
// Parent side of the Node IPC anchor: child_process.fork() + process.send() (JSON serialization).
//
// Usage: node ipc_parent.js [--rounds R] [--oneway N] [--pingpong M] [--warmup W] [--payload S]
//
// Each round forks a fresh child (ipc_child.js), warms it up, then measures
//   one-way:   N tells sent back to back, then one 'count' request; the clock stops when the
//              child's reply confirms it received all of them;
//   ping-pong: M sequential round trips (send, wait for the echo, send the next), each one timed.
// The child is disconnected and reaped (its 'exit' awaited) before the next round.
// Prints one JSON object on stdout:
//   {"impl": "node", "version": ..., "rounds": [{"oneway_n", "oneway_s", "pingpong_n",
//    "pingpong_s", "latencies_ns": [...]}, ...]}
// Rates and percentiles are computed by ipc.py, the same way for every implementation.

const path = require('node:path');
const { fork } = require('node:child_process');

function parseArgs(argv) {
  const opts = { rounds: 1, oneway: 50000, pingpong: 5000, warmup: 500, payload: 'x'.repeat(16) };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    const value = argv[i + 1];
    if (!(key in opts) || value === undefined) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    opts[key] = key === 'payload' ? value : Number.parseInt(value, 10);
  }
  return opts;
}

// Replies arrive in order on one channel, so a FIFO of waiting resolvers is enough.
function replies(child) {
  const waiting = [];
  child.on('message', (msg) => {
    const resolve = waiting.shift();
    if (resolve === undefined) {
      throw new Error(`unsolicited reply ${JSON.stringify(msg)}`);
    }
    resolve(msg);
  });
  child.on('exit', (code, signal) => {
    if (waiting.length > 0) {
      throw new Error(`child exited (code ${code}, signal ${signal}) with replies pending`);
    }
  });
  return () => new Promise((resolve) => waiting.push(resolve));
}

async function round(opts) {
  const child = fork(path.join(__dirname, 'ipc_child.js'), [], { stdio: 'inherit' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const nextReply = replies(child);
  let sent = 0;

  async function count() {
    const reply = nextReply();
    child.send({ kind: 'count' });
    const msg = await reply;
    if (msg.kind !== 'counted' || msg.value !== sent) {
      throw new Error(`child counted ${JSON.stringify(msg)}, expected ${sent}`);
    }
  }

  async function ask(seq) {
    const reply = nextReply();
    child.send({ kind: 'ask', seq, payload: opts.payload });
    sent += 1;
    const msg = await reply;
    if (msg.seq !== seq) {
      throw new Error(`reply ${msg.seq} to ask ${seq}`);
    }
  }

  function tells(n) {
    for (let seq = 0; seq < n; seq += 1) {
      child.send({ kind: 'tell', seq, payload: opts.payload });
    }
    sent += n;
  }

  // Warm-up: both paths, so the JIT has seen them before the clock starts.
  tells(Math.min(opts.oneway, 5000));
  await count();
  for (let seq = 0; seq < opts.warmup; seq += 1) {
    await ask(seq);
  }

  let t0 = process.hrtime.bigint();
  tells(opts.oneway);
  await count();
  const onewayNs = process.hrtime.bigint() - t0;

  const latencies = new Array(opts.pingpong);
  t0 = process.hrtime.bigint();
  for (let seq = 0; seq < opts.pingpong; seq += 1) {
    const start = process.hrtime.bigint();
    await ask(seq);
    latencies[seq] = Number(process.hrtime.bigint() - start);
  }
  const pingpongNs = process.hrtime.bigint() - t0;
  await count();

  child.disconnect();
  await exited;
  return {
    oneway_n: opts.oneway,
    oneway_s: Number(onewayNs) / 1e9,
    pingpong_n: opts.pingpong,
    pingpong_s: Number(pingpongNs) / 1e9,
    latencies_ns: latencies,
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const rounds = [];
  for (let r = 0; r < opts.rounds; r += 1) {
    rounds.push(await round(opts));
  }
  process.stdout.write(`${JSON.stringify({ impl: 'node', version: process.version, rounds })}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
