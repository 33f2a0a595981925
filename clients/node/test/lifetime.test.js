'use strict';
// How long things live: a daemon of connect(true) ends with its program; a
// program exits without disconnect unless a bus is open.

const test = require('node:test');
const assert = require('node:assert');
const { makeHome, runNode, cleanup, waitUntil, alive } = require('../test-support/helpers');

for (const how of ['exits', 'is killed by SIGKILL']) {
  test(`connect(true): the daemon and its apps are gone once the program ${how}`, async () => {
    const h = makeHome();
    try {
      const sigkill = how !== 'exits';
      const run = await runNode(h, 'nodaemon.js', 15000, sigkill ? ['sigkill'] : []);
      if (sigkill) assert.strictEqual(run.signal, 'SIGKILL');
      else assert.strictEqual(run.code, 0, `nodaemon.js failed: ${run.stderr}`);
      const out = JSON.parse(run.stdout.trim());
      assert.strictEqual(out.fresh, true);
      assert.ok(out.daemon > 0 && out.app > 0);
      await waitUntil('the tied daemon gone', () => !alive(out.daemon));
      await waitUntil('its app gone', () => !alive(out.app));
    } finally {
      await cleanup(h);
    }
  });
}

test('an open bus keeps the program alive until closed; then it exits', async () => {
  const h = makeHome();
  try {
    const run = await runNode(h, 'busalive.js');
    assert.strictEqual(run.code, 0, `busalive.js failed: ${run.stderr}`);
    assert.deepStrictEqual(JSON.parse(run.stdout.trim()), { stream: 'out', line: 'late line\n' });
  } finally {
    await cleanup(h);
  }
});
