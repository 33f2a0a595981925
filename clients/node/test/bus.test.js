'use strict';
// The bus: PM2's packet shapes and pattern listeners.

const test = require('node:test');
const assert = require('node:assert');
const path = require('path');
const { makeHome, client, cleanup, waitUntil } = require('../test-support/helpers');

test('a listener gets process:event for a crash, with the whole description', async () => {
  const h = makeHome();
  const pm2 = client(h);
  try {
    const bus = await pm2.launchBus();
    const events = [];
    const all = [];
    bus.on('process:event', (packet) => events.push(packet));
    bus.on('*', (event, packet) => all.push([event, packet]));
    const [app] = await pm2.start({ script: 'crash.js', name: 'crash', autorestart: false });
    await waitUntil('online', () => events.some((p) => p.event === 'online'));
    await pm2.sendDataToProcessId(app.pm_id, { type: 'process:msg', data: 'crash now', topic: true });
    await waitUntil('the exit event', () => events.some((p) => p.event === 'exit'));
    const exit = events.find((p) => p.event === 'exit');
    // The start was asked for; the crash was not.
    assert.strictEqual(events.find((p) => p.event === 'online').manually, true);
    assert.strictEqual(exit.manually, false);
    assert.strictEqual(typeof exit.at, 'number');
    assert.strictEqual(exit.code, 3);
    assert.strictEqual(exit.process.pm_id, app.pm_id);
    assert.strictEqual(exit.process.name, 'crash');
    assert.strictEqual(exit.process.pid, app.pid);
    assert.strictEqual(exit.process.pm_exec_path, path.join(h.work, 'crash.js'));
    assert.strictEqual(typeof exit.process.status, 'string');
    assert.strictEqual(typeof exit.process.restart_time, 'number');
    // In order, and '*' gets the event's name first.
    const kinds = events.map((p) => p.event);
    assert.ok(kinds.indexOf('online') < kinds.indexOf('exit'), kinds.join());
    assert.ok(all.some(([event, packet]) => event === 'process:event' && packet.event === 'exit'));
    bus.close();
  } finally {
    await cleanup(h, pm2);
  }
});

test('log:* listeners get the stream name, then the line', async () => {
  const h = makeHome();
  const pm2 = client(h);
  try {
    const bus = await pm2.launchBus();
    const got = [];
    bus.on('log:*', (stream, packet) => got.push([stream, packet]));
    const [app] = await pm2.start({ script: 'quiet.js', name: 'quiet' });
    await waitUntil('both lines', () => got.length >= 2);
    const out = got.find(([s]) => s === 'out')[1];
    assert.strictEqual(out.data, 'quiet out\n');
    assert.strictEqual(out.process.pm_id, app.pm_id);
    assert.strictEqual(out.process.name, 'quiet');
    assert.strictEqual(got.find(([s]) => s === 'err')[1].data, 'quiet err\n');
    bus.off('log:*');
    bus.close();
  } finally {
    await cleanup(h, pm2);
  }
});
