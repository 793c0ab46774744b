// An unmodified Node echo server that takes its listening socket by systemd's
// socket-activation convention (fd 3), as a command under a supervisor runs it.
const net = require("net");
if (process.env.LISTEN_PID !== String(process.pid) || process.env.LISTEN_FDS !== "1") {
  console.error("not socket-activated");
  process.exit(2);
}
net.createServer((socket) => socket.pipe(socket)).listen({ fd: 3 }, () => {
  console.log(`node serving ${process.env.LISTEN_FDNAMES}`);
});
