'use strict';
// Node anchor of ../echo.py: a `cluster` echo server.
//
// Usage: node echo_cluster.js [--policy rr|none] [--host 127.0.0.1] [--port 0] [--workers 2]
//
// The primary sets cluster.schedulingPolicy (SCHED_RR: the primary accepts and hands each
// connection to the next worker; SCHED_NONE: the workers accept on the listening socket
// themselves) before forking --workers workers. Each worker runs
// `net.createServer({noDelay: true}, (s) => s.on('data', (d) => s.write(d)))`, the plain Node
// echo (Nagle off, as trio's SocketStream does; a reset connection is ignored) and listens on
// host:port; port 0: the cluster gives every worker the same free port.
// Once every worker is listening the primary prints
//   node_echo_cluster listening on HOST:PORT policy=rr workers=2 pids=P1,P2
// SIGTERM / SIGINT: the primary kills the workers (SIGTERM), waits for their 'exit', exits 0.
// A worker that dies on its own is reported on stderr and ends the primary with status 1.
// A worker exits by itself when the primary dies (its IPC channel closes).

const cluster = require('node:cluster');
const net = require('node:net');

function parseArgs(argv) {
  const opts = { policy: 'rr', host: '127.0.0.1', port: 0, workers: 2 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    const value = argv[i + 1];
    if (!(key in opts) || value === undefined) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    opts[key] = key === 'policy' || key === 'host' ? value : Number.parseInt(value, 10);
  }
  if (opts.policy !== 'rr' && opts.policy !== 'none') {
    throw new Error('--policy must be rr or none');
  }
  return opts;
}

function primary() {
  const opts = parseArgs(process.argv.slice(2));
  // Must be set before the first fork (it also reads NODE_CLUSTER_SCHED_POLICY otherwise).
  cluster.schedulingPolicy = opts.policy === 'rr' ? cluster.SCHED_RR : cluster.SCHED_NONE;
  cluster.setupPrimary({ args: ['--worker', opts.host, String(opts.port)] });
  let stopping = false;
  const listening = new Map(); // pid -> address
  const workers = [];

  for (let i = 0; i < opts.workers; i++) {
    workers.push(cluster.fork());
  }
  cluster.on('listening', (worker, address) => {
    listening.set(worker.process.pid, address);
    if (listening.size === opts.workers) {
      const pids = [...listening.keys()].sort((a, b) => a - b).join(',');
      const ports = new Set([...listening.values()].map((a) => a.port));
      if (ports.size !== 1) {
        console.error(`workers listen on different ports: ${[...ports].join(', ')}`);
        process.exit(1);
      }
      console.log(
        `node_echo_cluster listening on ${address.address}:${address.port} ` +
          `policy=${opts.policy} workers=${opts.workers} pids=${pids}`,
      );
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`worker ${worker.process.pid} died (code ${code}, signal ${signal})`);
      stop(1);
    }
  });

  function stop(status) {
    stopping = true;
    const alive = workers.filter((w) => w.process.exitCode === null && w.process.signalCode === null);
    let left = alive.length;
    if (left === 0) {
      process.exit(status);
    }
    for (const w of alive) {
      w.process.once('exit', () => {
        left -= 1;
        if (left === 0) {
          process.exit(status);
        }
      });
      w.process.kill('SIGTERM');
    }
  }
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));
}

function worker() {
  const [host, port] = process.argv.slice(process.argv.indexOf('--worker') + 1);
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on('data', (data) => socket.write(data));
    socket.on('error', () => {}); // a reset connection: nothing to do
  });
  server.listen(Number.parseInt(port, 10), host);
}

if (cluster.isPrimary) {
  primary();
} else {
  worker();
}
