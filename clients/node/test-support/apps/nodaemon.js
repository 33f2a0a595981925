// connect(true): the daemon is tied to this program. It starts an app,
// prints the daemon's and the app's pids, and exits without disconnecting
// (or, with the argument `sigkill`, is killed).
const pm2 = require('pm2');

pm2.connect(true, function (err, meta) {
  if (err) throw err;
  pm2.start({ script: 'quiet.js', name: 'quiet' }, function (err, procs) {
    if (err) throw err;
    pm2.ping(function (err, info) {
      if (err) throw err;
      console.log(JSON.stringify({ fresh: meta.new_pm2_instance, daemon: info.pid, app: procs[0].pid }));
      if (process.argv[2] === 'sigkill') process.kill(process.pid, 'SIGKILL');
    });
  });
});
