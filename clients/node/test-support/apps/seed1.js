// The seed's first example, as a PM2 user writes it (require('pm2') here
// is this package, installed as `npm install pm2@file:...` would).
const pm2 = require('pm2');

pm2.connect(function (err) {
  if (err) {
    console.error(err);
    process.exit(2);
  }

  pm2.start(
    {
      script: 'api.js',
      name: 'api',
      exec_mode: 'cluster',
      instances: 4,
      max_memory_restart: '100M',
    },
    function (err, apps) {
      if (err) {
        console.error(err);
        return pm2.disconnect();
      }
      pm2.list(function (err, list) {
        console.log(JSON.stringify({ err, started: apps.length, list }));
        pm2.disconnect();
      });
    }
  );
});
