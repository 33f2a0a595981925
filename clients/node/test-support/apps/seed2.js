// The seed's second example: a bus listener gets the app's answer to
// sendDataToProcessId. The app (echo.js) runs already as pm_id 0.
const pm2 = require('pm2');

pm2.launchBus(function (err, bus) {
  bus.on('process:msg', function (packet) {
    console.log(JSON.stringify(packet));
    pm2.disconnect();
  });
});

pm2.sendDataToProcessId(
  {
    id: 0,
    type: 'process:msg',
    data: { some: 'data' },
    topic: true,
  },
  function (err, res) {
    if (err) {
      console.error(err);
      process.exit(1);
    }
  }
);
