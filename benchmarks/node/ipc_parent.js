'use strict';
// Parent side of the Node IPC anchor: child_process.fork() + process.send() (JSON serialization).
//
// Usage: node ipc_parent.js [--rounds R] [--oneway N] [--pingpong M] [--warmup W] [--payload S]
//                           [--concurrent K] [--askers A] [--concurrent-warmup C]
//
// Each round forks a fresh child (ipc_child.js), warms it up, then measures
//   one-way:    N tells sent back to back, then one 'count' request; the clock stops when the
//               child's reply confirms it received all of them (N = 0: not measured);
//   ping-pong:  M sequential round trips (send, wait for the echo, send the next), each one
//               timed (M = 0: not measured);
//   concurrent: K asks by A concurrent askers (async loops), K / A each, every asker waiting
//               for its own reply before its next ask; each ask carries an id and its reply
//               is matched by that id (K = 0, the default: not measured). C untimed asks
//               (default 5000), made the same way, warm it up first: V8 needs more than W
//               of them before this path runs at its speed.
// The child is disconnected and reaped (its 'exit' awaited) before the next round.
// Prints one JSON object on stdout:
//   {"impl": "node", "version": ..., "rounds": [{"oneway_n", "oneway_s", "pingpong_n",
//    "pingpong_s", "latencies_ns": [...], "concurrent_n", "concurrent_s",
//    "concurrent_latencies_ns": [...]}, ...]}
// Rates and percentiles are computed by ipc.py, the same way for every implementation.

const path = require('node:path');
const { fork } = require('node:child_process');

function parseArgs(argv) {
  const opts = {
    rounds: 1,
    oneway: 50000,
    pingpong: 5000,
    warmup: 500,
    payload: 'x'.repeat(16),
    concurrent: 0,
    askers: 64,
    'concurrent-warmup': 5000,
  };
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

// Sequential replies arrive in order on one channel, so a FIFO of waiting resolvers is enough
// for them; a reply carrying an id (the concurrent phase) goes to the one waiting for that id,
// as a request-id protocol over one channel does.
function replies(child) {
  const waiting = [];
  const byId = new Map();
  child.on('message', (msg) => {
    if (msg.id !== undefined) {
      const resolve = byId.get(msg.id);
      if (resolve === undefined) {
        throw new Error(`reply to unknown id ${JSON.stringify(msg)}`);
      }
      byId.delete(msg.id);
      resolve(msg);
      return;
    }
    const resolve = waiting.shift();
    if (resolve === undefined) {
      throw new Error(`unsolicited reply ${JSON.stringify(msg)}`);
    }
    resolve(msg);
  });
  child.on('exit', (code, signal) => {
    if (waiting.length > 0 || byId.size > 0) {
      throw new Error(`child exited (code ${code}, signal ${signal}) with replies pending`);
    }
  });
  return {
    next: () => new Promise((resolve) => waiting.push(resolve)),
    forId: (id) => new Promise((resolve) => byId.set(id, resolve)),
  };
}

async function round(opts) {
  const child = fork(path.join(__dirname, 'ipc_child.js'), [], { stdio: 'inherit' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const { next: nextReply, forId } = replies(child);
  let sent = 0;
  let nextId = 0;

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

  // One asker of the concurrent phase: n asks, each awaiting its own reply (by id).
  async function asker(n, latencies) {
    for (let i = 0; i < n; i += 1) {
      const id = nextId;
      nextId += 1;
      const start = process.hrtime.bigint();
      const reply = forId(id);
      child.send({ kind: 'ask', id, seq: i, payload: opts.payload });
      sent += 1;
      const msg = await reply;
      if (latencies !== null) {
        latencies.push(Number(process.hrtime.bigint() - start));
      }
      if (msg.seq !== i) {
        throw new Error(`reply ${msg.seq} to ask ${i} (id ${id})`);
      }
    }
  }

  async function concurrent(total, latencies) {
    const each = Math.ceil(total / opts.askers);
    const loops = [];
    for (let a = 0; a < opts.askers; a += 1) {
      loops.push(asker(each, latencies));
    }
    await Promise.all(loops);
    return each * opts.askers;
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
  if (opts.concurrent > 0) {
    await concurrent(opts['concurrent-warmup'], null);
  }

  const result = {
    oneway_n: opts.oneway,
    oneway_s: 0,
    pingpong_n: opts.pingpong,
    pingpong_s: 0,
    latencies_ns: [],
  };
  let t0;
  if (opts.oneway > 0) {
    t0 = process.hrtime.bigint();
    tells(opts.oneway);
    await count();
    result.oneway_s = Number(process.hrtime.bigint() - t0) / 1e9;
  }

  if (opts.pingpong > 0) {
    const latencies = new Array(opts.pingpong);
    t0 = process.hrtime.bigint();
    for (let seq = 0; seq < opts.pingpong; seq += 1) {
      const start = process.hrtime.bigint();
      await ask(seq);
      latencies[seq] = Number(process.hrtime.bigint() - start);
    }
    result.pingpong_s = Number(process.hrtime.bigint() - t0) / 1e9;
    result.latencies_ns = latencies;
  }

  if (opts.concurrent > 0) {
    const latencies = [];
    t0 = process.hrtime.bigint();
    result.concurrent_n = await concurrent(opts.concurrent, latencies);
    result.concurrent_s = Number(process.hrtime.bigint() - t0) / 1e9;
    result.concurrent_latencies_ns = latencies;
  }
  await count();

  child.disconnect();
  await exited;
  return result;
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
