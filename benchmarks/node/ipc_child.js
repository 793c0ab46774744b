'use strict';
// Child side of the Node IPC anchor (see ../ipc.py and ipc_parent.js).
//
// Started by ipc_parent.js with child_process.fork() and the default (JSON) serialization.
// Protocol, one JSON object per process.send():
//   {kind: 'tell', seq, payload}  count it, no reply (one-way)
//   {kind: 'ask', seq, payload}   count it, send the same message back (round trip; an `id`
//                                 field, as the concurrent phase sends, comes back with it)
//   {kind: 'count'}               reply {kind: 'counted', value} with the number of tells + asks
// The child exits on its own when the parent disconnects the IPC channel.

let count = 0;

process.on('message', (msg) => {
  switch (msg.kind) {
    case 'tell':
      count += 1;
      break;
    case 'ask':
      count += 1;
      process.send(msg);
      break;
    case 'count':
      process.send({ kind: 'counted', value: count });
      break;
    default:
      throw new Error(`unexpected message ${JSON.stringify(msg)}`);
  }
});
