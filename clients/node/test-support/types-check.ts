// Type-checks the seed's examples and PM2-typed code against index.d.ts:
//   npx -p typescript@5 -p @types/node tsc --noEmit --strict test-support/types-check.ts
// (not part of the test suite, which needs nothing but node).
import * as pm2 from '..';
import pm2default = require('..');

pm2.connect(function (err) {
  if (err) {
    console.error(err);
    process.exit(2);
  }
  pm2.start(
    { script: 'api.js', name: 'api', exec_mode: 'cluster', instances: 4, max_memory_restart: '100M' },
    function (err, apps) {
      if (err) {
        console.error(err.code, err.message);
        return pm2.disconnect();
      }
      console.log(apps.length, apps[0].pm2_env?.status);
      pm2.list((err, list) => {
        console.log(err, list.map((d) => d.pm2_env?.exec_mode));
        pm2.restart('api', (err, proc) => {
          pm2.disconnect();
        });
      });
    }
  );
});

pm2.launchBus(function (err, bus) {
  bus.on('process:msg', function (packet) {
    console.log(packet.process.pm_id, packet.data);
  });
  bus.on('*', (event: string, packet: any) => console.log(event, packet));
});

pm2.sendDataToProcessId({ id: 0, type: 'process:msg', data: { some: 'data' }, topic: true }, function (err, res) {
  console.log(err, res.success);
});
pm2.sendDataToProcessId(0, { type: 'process:msg', data: {}, topic: true }, (err, res) => console.log(res.data.id));
pm2.delete('api', (err, procs) => console.log(procs));
pm2.describe('api', (err, d) => console.log(d.length));
pm2.sendSignalToProcessName('SIGUSR2', 'api', (err) => console.log(err));
pm2.startup('systemd', (err, res) => console.log(res));
pm2.dump((err, res) => console.log(res));
pm2.flush('api', (err, list) => console.log(list));
pm2.reloadLogs((err, res) => console.log(res.files));
pm2.killDaemon((err, res) => console.log(res.stopped));
pm2.gracefulReload('api', (err, procs) => console.log(procs));
pm2.connect(true, (err, meta) => console.log(meta?.new_pm2_instance));

async function promises(): Promise<void> {
  const list = await pm2.list();
  const started = await pm2.start('api.js', { name: 'x' });
  const other = new pm2.custom({ cwd: '/srv/app' });
  await other.stop(started[0].pm_id ?? 0);
  console.log(list.length, (await other.describe('x')).length);
  pm2default.disconnect();
}
promises();
