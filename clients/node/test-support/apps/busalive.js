// An open bus keeps the program running until it has what it waits for;
// then it closes the bus and the program exits on its own.
const pm2 = require('pm2');

pm2.launchBus(function (err, bus) {
  if (err) throw err;
  bus.on('log:*', function (stream, packet) {
    if (packet.process.name !== 'late') return;
    console.log(JSON.stringify({ stream, line: packet.data }));
    bus.close();
  });
  pm2.start({ script: 'late.js', name: 'late' }, function (err) {
    if (err) throw err;
  });
});
