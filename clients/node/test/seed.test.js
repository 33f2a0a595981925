'use strict';
// The seed's two example programs, run as a PM2 user wrote them: their
// `require('pm2')` finds this package through node_modules/pm2.

const test = require('node:test');
const assert = require('node:assert');
const { makeHome, runNode, client, cleanup, waitUntil, alive } = require('../test-support/helpers');

test('example 1: connect, a cluster of 4 with max_memory_restart, disconnect', async () => {
  const h = makeHome();
  try {
    const run = await runNode(h, 'seed1.js');
    assert.strictEqual(run.code, 0, `seed1.js failed: ${run.stderr}`);
    const out = JSON.parse(run.stdout.trim().split('\n').pop());
    assert.strictEqual(out.err, null);
    assert.strictEqual(out.started, 4);
    const apps = out.list.filter((d) => d.name === 'api');
    assert.strictEqual(apps.length, 4);
    for (const d of apps) {
      assert.strictEqual(d.pm2_env.exec_mode, 'cluster_mode');
      assert.strictEqual(d.pm2_env.max_memory_restart, 100 * 1024 * 1024);
      assert.ok(['online', 'launching'].includes(d.pm2_env.status), d.pm2_env.status);
    }
    assert.deepStrictEqual(
      apps.map((d) => d.pm2_env.NODE_APP_INSTANCE).sort(),
      [0, 1, 2, 3]
    );
    // The daemon outlives the program that started it, as PM2's does.
    const pm2 = client(h);
    const list = await pm2.list();
    assert.strictEqual(list.length, 4);
    await waitUntil('4 online', async () => (await pm2.list()).every((d) => d.pm2_env.status === 'online'));
    for (const d of await pm2.list()) assert.ok(alive(d.pid));
    pm2.disconnect();
  } finally {
    await cleanup(h);
  }
});

test('example 2: the bus gets the app\'s {success: true} with its pm_id', async () => {
  const h = makeHome();
  const pm2 = client(h);
  try {
    const started = await pm2.start({ script: 'echo.js', name: 'echo' });
    assert.strictEqual(started[0].pm_id, 0);
    const run = await runNode(h, 'seed2.js');
    assert.strictEqual(run.code, 0, `seed2.js failed: ${run.stderr}`);
    const packet = JSON.parse(run.stdout.trim().split('\n').pop());
    assert.deepStrictEqual(packet.data, { success: true, got: { some: 'data' } });
    assert.strictEqual(packet.process.pm_id, 0);
    assert.strictEqual(packet.process.name, 'echo');
    assert.strictEqual(typeof packet.at, 'number');
  } finally {
    await cleanup(h, pm2);
  }
});
