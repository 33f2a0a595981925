'use strict';
// Every call of the seed with PM2's arguments and callback shapes; errors
// as Error objects with the daemon's code.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const path = require('path');
const { makeHome, client, cleanup, callback, waitUntil, alive, daemonPid } = require('../test-support/helpers');

/** Assert a successful errback: `err === null`; the result. */
function ok(args) {
  assert.strictEqual(args[0], null, `expected success, got ${args[0] && args[0].stack}`);
  return args[1];
}

/** Assert a failed errback: an Error with this daemon code. */
function failed(args, code) {
  const err = args[0];
  assert.ok(err instanceof Error, `expected an Error, got ${JSON.stringify(args)}`);
  assert.strictEqual(err.code, code, `code of: ${err.message}`);
  assert.ok(err.message.length > 0);
  return err;
}

/** PM2's operate results: an array of descriptions with status etc. on top. */
function assertActed(procs, name, status) {
  assert.ok(Array.isArray(procs) && procs.length > 0, JSON.stringify(procs));
  for (const p of procs) {
    assert.strictEqual(p.name, name);
    assert.strictEqual(typeof p.pm_id, 'number');
    assert.strictEqual(p.pm2_env.name, name);
    assert.strictEqual(p.namespace, 'default');
    assert.strictEqual(typeof p.restart_time, 'number');
    if (status) assert.strictEqual(p.status, status);
  }
}

test('each call calls back (err, result) in PM2\'s shapes', async () => {
  const h = makeHome();
  const pm2 = client(h);
  try {
    const meta = ok(await callback((cb) => pm2.connect(cb)));
    assert.strictEqual(meta.new_pm2_instance, true);
    assert.strictEqual(meta.pm2_home, h.home);
    assert.strictEqual(meta.rpc_socket_file, path.join(h.home, 'corral.sock'));

    // start(options), relative to the API's cwd.
    const procs = ok(await callback((cb) => pm2.start({ script: 'echo.js', name: 'echo' }, cb)));
    assert.strictEqual(procs.length, 1);
    assert.strictEqual(procs[0].name, 'echo');
    assert.strictEqual(procs[0].pm2_env.pm_exec_path, path.join(h.work, 'echo.js'));
    assert.strictEqual(procs[0].pm2_env.pm_cwd, h.work);
    const id = procs[0].pm_id;

    // start(script, options); instances > 1 without exec_mode is cluster mode.
    const cl = ok(await callback((cb) => pm2.start('api.js', { name: 'web', instances: 2 }, cb)));
    assert.strictEqual(cl.length, 2);
    assert.ok(cl.every((p) => p.pm2_env.exec_mode === 'cluster_mode'));
    const fk = ok(await callback((cb) => pm2.start('api.js', { name: 'one', instances: 2, exec_mode: 'fork' }, cb)));
    assert.ok(fk.every((p) => p.pm2_env.exec_mode === 'fork_mode'));

    // start(jsonConfigFile): relative to the API's cwd; again: restarted, not refused.
    fs.writeFileSync(path.join(h.work, 'eco.json'), '{apps: [{name: "cfg", script: "quiet.js"}], /* PM2 reads JS */}');
    const fromFile = ok(await callback((cb) => pm2.start('eco.json', cb)));
    assert.deepStrictEqual(fromFile.map((p) => p.name), ['cfg']);
    const again = ok(await callback((cb) => pm2.start('eco.json', cb)));
    assert.strictEqual(again[0].name, 'cfg');
    assert.strictEqual(again[0].restart_time, 1);

    // A JS config file, with PM2's `only`.
    fs.writeFileSync(
      path.join(h.work, 'two.config.js'),
      "module.exports = { apps: [{ name: 'js1', script: 'quiet.js' }, { name: 'js2', script: 'quiet.js' }] };"
    );
    const onlyOne = ok(await callback((cb) => pm2.start('two.config.js', { only: 'js2' }, cb)));
    assert.deepStrictEqual(onlyOne.map((p) => p.name), ['js2']);
    assertActed(ok(await callback((cb) => pm2.delete('js2', cb))), 'js2');

    // start(script, jsonConfigFile): the file's options, this script.
    fs.writeFileSync(path.join(h.work, 'opts.json'), JSON.stringify({ name: 'fromopts', env: { A: '1' } }));
    const withFile = ok(await callback((cb) => pm2.start('quiet.js', 'opts.json', cb)));
    assert.strictEqual(withFile[0].name, 'fromopts');
    assert.deepStrictEqual(withFile[0].pm2_env.env, { A: '1' });

    // start(name) of a known app: restarts it, as PM2.
    const byName = ok(await callback((cb) => pm2.start('fromopts', cb)));
    assert.strictEqual(byName[0].name, 'fromopts');

    assertActed(ok(await callback((cb) => pm2.stop('fromopts', cb))), 'fromopts', 'stopped');
    assertActed(ok(await callback((cb) => pm2.restart(id, cb))), 'echo', 'online');
    assertActed(ok(await callback((cb) => pm2.restart('echo', { updateEnv: true }, cb))), 'echo');
    assertActed(ok(await callback((cb) => pm2.reload('web', cb))), 'web');
    assertActed(ok(await callback((cb) => pm2.gracefulReload('web', cb))), 'web');
    assertActed(ok(await callback((cb) => pm2.delete('one', cb))), 'one');
    assertActed(ok(await callback((cb) => pm2.reset('echo', cb))), 'echo');

    const desc = ok(await callback((cb) => pm2.describe('echo', cb)));
    assert.strictEqual(desc.length, 1);
    assert.strictEqual(desc[0].pm_id, id);
    assert.deepStrictEqual(Object.keys(desc[0]).sort(), ['monit', 'name', 'pid', 'pm2_env', 'pm_id']);
    assert.deepStrictEqual(ok(await callback((cb) => pm2.describe(id, cb))).map((d) => d.name), ['echo']);
    // An unknown name: (null, []), as PM2.
    const none = await callback((cb) => pm2.describe('nonesuch', cb));
    assert.deepStrictEqual(none, [null, []]);

    const list = ok(await callback((cb) => pm2.list(cb)));
    assert.deepStrictEqual(
      [...new Set(list.map((d) => d.name))].sort(),
      ['cfg', 'echo', 'fromopts', 'web']
    );

    // flush: calls back with the list, as PM2.
    await waitUntil('cfg logged', () => fs.readFileSync(list.find((d) => d.name === 'cfg').pm2_env.pm_out_log_path, 'utf8').length > 0);
    const flushed = ok(await callback((cb) => pm2.flush('cfg', cb)));
    assert.strictEqual(flushed.length, list.length);
    assert.strictEqual(fs.statSync(list.find((d) => d.name === 'cfg').pm2_env.pm_out_log_path).size, 0);
    assert.ok(Array.isArray(ok(await callback((cb) => pm2.flush(cb)))));

    const logs = ok(await callback((cb) => pm2.reloadLogs(cb)));
    assert.strictEqual(logs.success, true);
    assert.strictEqual(typeof logs.files, 'number');

    const signalled = ok(await callback((cb) => pm2.sendSignalToProcessName('SIGUSR2', 'cfg', cb)));
    assert.deepStrictEqual(signalled.map((d) => d.name), ['cfg']);

    // sendDataToProcessId in both of PM2's forms.
    const sent = ok(await callback((cb) => pm2.sendDataToProcessId(id, { type: 'process:msg', data: { a: 1 }, topic: true }, cb)));
    assert.deepStrictEqual(sent, { success: true, data: { type: 'process:msg', data: { a: 1 }, topic: true, id } });
    const sent2 = ok(await callback((cb) => pm2.sendDataToProcessId({ id, type: 'process:msg', data: { a: 2 }, topic: true }, cb)));
    assert.strictEqual(sent2.success, true);

    const bus = ok(await callback((cb) => pm2.launchBus(cb)));
    assert.strictEqual(typeof bus.on, 'function');
    assert.strictEqual(typeof bus.close, 'function');
    bus.close();

    const pid = daemonPid(h);
    assert.ok(pid && alive(pid));
    const killed = ok(await callback((cb) => pm2.killDaemon(cb)));
    assert.strictEqual(killed.success, true);
    assert.strictEqual(killed.stopped, 5, 'every app in the list, as PM2 counts: echo, web ×2, cfg and the stopped fromopts');
    await waitUntil('the daemon gone', () => !alive(pid));
    assert.strictEqual(pm2.disconnect(), undefined);
  } finally {
    await cleanup(h, pm2);
  }
});

test('errors are Error objects carrying the daemon\'s code', async () => {
  const h = makeHome();
  const pm2 = client(h);
  try {
    ok(await callback((cb) => pm2.start({ script: 'echo.js' }, cb)));
    const e1 = await callback((cb) => pm2.stop('nonesuch', cb));
    failed(e1, 'not_found');
    assert.strictEqual(e1.length, 1, 'no result with an error');
    failed(await callback((cb) => pm2.restart(42, cb)), 'not_found');
    failed(await callback((cb) => pm2.delete('nonesuch', cb)), 'not_found');
    failed(await callback((cb) => pm2.start({ script: 'missing.js' }, cb)), 'script_not_found');
    // A misspelt option is refused (other unknown keys only warn, as PM2).
    const bad = failed(await callback((cb) => pm2.start({ script: 'echo.js', name: 'x', kill_timout: 1 }, cb)), 'invalid_option');
    assert.match(bad.message, /kill_timout/);
    failed(await callback((cb) => pm2.start('echo.js', cb)), 'already_running');
    failed(await callback((cb) => pm2.sendDataToProcessId(99, { data: 1, topic: true }, cb)), 'not_found');
    failed(await callback((cb) => pm2.sendSignalToProcessName('SIGNOPE', 'echo', cb)), 'bad_request');
    failed(await callback((cb) => pm2.stop(undefined, cb)), 'bad_request');
    // dump saves the list; startup of an unknown platform is refused by name.
    const dumped = await callback((cb) => pm2.dump(cb));
    assert.strictEqual(dumped[0], null);
    assert.strictEqual(dumped[1].success, true);
    const st = failed(await callback((cb) => pm2.startup('nonesuch-platform', cb)), 'bad_request');
    assert.match(st.message, /nonesuch-platform/);
    // A dry run prints the unit and writes nothing.
    const dry = await callback((cb) => pm2.startup('systemd', { dryRun: true }, cb));
    assert.strictEqual(dry[0], null, dry[0] && dry[0].message);
    assert.match(dry[1].output, /ExecStart=.* daemon --no-daemon/);
    // The config file that cannot be read is named.
    const e2 = await callback((cb) => pm2.start('nope.json', cb));
    assert.ok(e2[0] instanceof Error);
    assert.match(e2[0].message, /nope\.json/);
  } finally {
    await cleanup(h, pm2);
  }
});

test('calls work before connect, and without a callback (a promise)', async () => {
  const h = makeHome();
  const pm2 = client(h);
  let unhandled = null;
  const onUnhandled = (e) => {
    unhandled = e;
  };
  process.on('unhandledRejection', onUnhandled);
  try {
    // No connect, no callback: the first call launches the daemon.
    assert.ok(pm2.start({ script: 'quiet.js', name: 'q' }) instanceof Promise);
    await waitUntil('q started', async () => (await pm2.describe('q')).length === 1);
    const list = await pm2.list();
    assert.strictEqual(list[0].name, 'q');
    // A failure nobody waits for crashes nothing.
    pm2.stop('nonesuch');
    await assert.rejects(pm2.stop('nonesuch'), (e) => e instanceof Error && e.code === 'not_found');
    await new Promise((r) => setTimeout(r, 50));
    assert.strictEqual(unhandled, null);
    // A call made before disconnect() still gets its answer.
    const before = pm2.describe('q');
    pm2.disconnect();
    assert.strictEqual((await before).length, 1);
    const sent = pm2.list();
    await new Promise((r) => setImmediate(r));
    pm2.disconnect();
    assert.strictEqual((await sent).length, 1);
    // After disconnect, calls connect again.
    pm2.disconnect();
    assert.strictEqual((await pm2.describe('q')).length, 1);
  } finally {
    process.removeListener('unhandledRejection', onUnhandled);
    await cleanup(h, pm2);
  }
});

test('the missing binary is a clear error', async () => {
  const h = makeHome();
  const saved = process.env.CORRAL_BIN;
  const savedPath = process.env.PATH;
  process.env.CORRAL_BIN = '';
  process.env.PATH = h.work;
  try {
    const res = await callback((cb) => client(h).connect(cb));
    failed(res, 'no_daemon');
    assert.match(res[0].message, /CORRAL_BIN/);
    assert.match(res[0].message, /PATH/);
  } finally {
    process.env.CORRAL_BIN = saved;
    process.env.PATH = savedPath;
    await cleanup(h);
  }
});

test('restart with {updateEnv: true} gives the app the caller\'s environment', async () => {
  const h = makeHome();
  const pm2 = client(h);
  const key = 'NODE_TEST_UPDATE_ENV_X';
  const before = process.env[key];
  try {
    fs.writeFileSync(path.join(h.work, 'env.sh'), `echo "X=\${${key}:-unset}"\nexec sleep 1000\n`);
    process.env[key] = 'one';
    const [app] = ok(await callback((cb) => pm2.start({ script: 'env.sh', name: 'envy' }, cb)));
    const log = app.pm2_env.pm_out_log_path;
    const seen = (v) => fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes(`X=${v}\n`);
    await waitUntil('X=one', () => seen('one'));
    process.env[key] = 'two';
    ok(await callback((cb) => pm2.restart('envy', cb)));
    await waitUntil('a second run', () => fs.readFileSync(log, 'utf8').split('X=').length > 2);
    assert.ok(!seen('two'), 'a plain restart keeps the environment it had');
    ok(await callback((cb) => pm2.restart('envy', { updateEnv: true }, cb)));
    await waitUntil('X=two', () => seen('two'));
  } finally {
    if (before === undefined) delete process.env[key];
    else process.env[key] = before;
    await cleanup(h, pm2);
  }
});
