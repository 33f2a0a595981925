'use strict';
// Shared by the tests: a fresh temporary corral home per test, running a
// Node program against it, waiting on a condition with a deadline, and
// cleaning up (the daemon killed, the directory removed).
//
// The corral binary comes from CORRAL_BIN (cargo test sets it), else from
// this checkout's debug build.

const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');

const { Connection } = require('../lib/connection');

const PKG = path.resolve(__dirname, '..');
const FIXTURES = path.join(__dirname, 'apps');

if (!process.env.CORRAL_BIN) {
  const built = path.resolve(PKG, '../../target/debug/corral');
  if (fs.existsSync(built)) process.env.CORRAL_BIN = built;
}

/**
 * A fresh home (`home`) and work directory (`work`, holding copies of the
 * fixtures and `node_modules/pm2` → this package, as `npm install
 * pm2@file:...` would make it).
 */
function makeHome() {
  // Short: the socket path must fit in 107 bytes.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'crn-'));
  const home = path.join(root, 'h');
  const work = path.join(root, 'w');
  fs.mkdirSync(path.join(work, 'node_modules'), { recursive: true });
  fs.symlinkSync(PKG, path.join(work, 'node_modules', 'pm2'));
  for (const f of fs.readdirSync(FIXTURES)) {
    fs.copyFileSync(path.join(FIXTURES, f), path.join(work, f));
  }
  const env = Object.assign({}, process.env, { CORRAL_HOME: home });
  delete env.CORRAL_SOCKET;
  return { root, home, work, env };
}

/** Whether `pid` is a live process (a zombie is not). */
function alive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch (e) {
    return false;
  }
}

/** The daemon's pid from its pid file, or null. */
function daemonPid(h) {
  try {
    return Number(fs.readFileSync(path.join(h.home, 'corral.pid'), 'utf8').trim()) || null;
  } catch (e) {
    return null;
  }
}

/** Poll `cond` until it holds; throw naming `what` after `ms`. */
async function waitUntil(what, cond, ms) {
  const deadline = Date.now() + (ms || 10000);
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Run `node <file>` in the work directory; resolves with `{code, signal,
 * stdout, stderr}`. Killed (and failed) after `ms`.
 */
function runNode(h, file, ms, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file, ...(args || [])], { cwd: h.work, env: h.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${file} did not exit within ${ms || 15000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, ms || 15000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** An API object of this package on the test's home and work directory. */
function client(h, opts) {
  const { custom } = require(PKG);
  return new custom(Object.assign({ pm2_home: h.home, cwd: h.work }, opts || {}));
}

/** Kill the test's daemon (kill_daemon, then SIGKILL) and remove its files. */
async function cleanup(h, api) {
  if (api) api.disconnect();
  const pids = [daemonPid(h)];
  try {
    const conn = await Connection.open(path.join(h.home, 'corral.sock'));
    for (const d of await conn.request('list')) pids.push(d.pid);
    conn.close();
  } catch (e) {
    // no daemon
  }
  const killer = client(h);
  try {
    await killer.killDaemon();
  } catch (e) {
    // gone already
  }
  killer.disconnect();
  for (const pid of pids) {
    if (pid && alive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (e) {
        // raced with its exit
      }
    }
  }
  fs.rmSync(h.root, { recursive: true, force: true });
}

/** A promise of what `fn(cb)` calls back: `{args}` (every argument). */
function callback(fn) {
  return new Promise((resolve) => fn((...args) => resolve(args)));
}

module.exports = { PKG, makeHome, alive, daemonPid, waitUntil, runNode, client, cleanup, callback };
