'use strict';
// Where the daemon lives and how to start one, as corral's Rust client
// does it: home from $CORRAL_HOME (else ~/.corral), socket from
// $CORRAL_SOCKET (else <home>/corral.sock), binary from $CORRAL_BIN (else
// `corral` on PATH).

const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');
const { noDaemonError } = require('./connection');

/** How long a launched daemon may take to say it is ready. */
const LAUNCH_TIMEOUT_MS = 15000;

/** `{home, socket}`; `home` overrides $CORRAL_HOME when given. */
function resolvePaths(home, env) {
  env = env || process.env;
  let h = home || env.CORRAL_HOME;
  if (!h) {
    if (!env.HOME) {
      throw noDaemonError('neither CORRAL_HOME nor HOME is set: cannot find the corral home');
    }
    h = path.join(env.HOME, '.corral');
  }
  h = path.resolve(h);
  const socket = !home && env.CORRAL_SOCKET ? path.resolve(env.CORRAL_SOCKET) : path.join(h, 'corral.sock');
  return { home: h, socket };
}

/** The corral executable: $CORRAL_BIN, else `corral` found on PATH. */
function findBinary(env) {
  env = env || process.env;
  if (env.CORRAL_BIN) return env.CORRAL_BIN;
  for (const dir of (env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, 'corral');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch (e) {
      // not here
    }
  }
  throw noDaemonError(
    'no corral daemon is running and the corral binary was not found: ' +
      'set CORRAL_BIN to its path or put corral on PATH'
  );
}

/**
 * Run `corral daemon <args>` and wait for its first line on stdout
 * (`ready`, or `error: ...`). Resolves with `{child, answer}`.
 */
function runDaemonCommand(paths, args, stdin) {
  const bin = findBinary();
  const env = Object.assign({}, process.env, { CORRAL_HOME: paths.home, CORRAL_SOCKET: paths.socket });
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(bin, ['daemon', ...args], { env, stdio: [stdin, 'pipe', 'ignore'] });
    } catch (e) {
      reject(noDaemonError(`cannot run ${bin} to start the daemon: ${e.message}`, e));
      return;
    }
    let out = '';
    let done = false;
    const finish = (err, answer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.stdout.removeAllListeners('data');
      child.stdout.on('data', () => {});
      if (err) reject(err);
      else resolve({ child, answer });
    };
    const timer = setTimeout(
      () => finish(noDaemonError(`the daemon did not become ready within ${LAUNCH_TIMEOUT_MS / 1000} s`)),
      LAUNCH_TIMEOUT_MS
    );
    child.once('error', (e) => finish(noDaemonError(`cannot run ${bin} to start the daemon: ${e.message}`, e)));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const nl = out.indexOf('\n');
      if (nl !== -1) finish(null, out.slice(0, nl).trim());
    });
    child.stdout.once('end', () => finish(null, out.trim()));
  });
}

/** The message of a launcher's answer (`error: x` → `x`). */
function answerText(answer) {
  return answer.startsWith('error: ') ? answer.slice('error: '.length) : answer || 'the daemon exited';
}

/**
 * Start a detached daemon (`corral daemon`, which forks it, prints `ready`
 * and exits). Resolves with the answer; the caller then connects (another
 * process may have won the race, which is fine).
 */
async function launchDetached(paths) {
  const { child, answer } = await runDaemonCommand(paths, [], 'ignore');
  child.unref();
  if (child.stdout && typeof child.stdout.unref === 'function') child.stdout.unref();
  return answerText(answer);
}

/**
 * Start a daemon tied to this process (`corral daemon --lifeline`): it
 * serves while its stdin stays open, and stops every app and exits when it
 * closes, which happens when this process exits however it exits. Resolves
 * with the child, whose stdin must be kept (never ended).
 */
async function launchTied(paths) {
  const { child, answer } = await runDaemonCommand(paths, ['--lifeline'], 'pipe');
  if (answer !== 'ready') {
    child.stdin.destroy();
    throw noDaemonError(answerText(answer));
  }
  // Nothing of the child may keep this process alive.
  child.stdin.on('error', () => {});
  child.unref();
  for (const s of [child.stdin, child.stdout]) {
    if (s && typeof s.unref === 'function') s.unref();
  }
  return child;
}

module.exports = { resolvePaths, findBinary, launchDetached, launchTied };
