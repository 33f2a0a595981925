'use strict';
// PM2's programmatic API over corral's control socket.
//
// Every call takes PM2's arguments and calls back PM2's way: `errback(err,
// result)` with `err === null` on success and an `Error` (its `code` the
// daemon's: `not_found`, `invalid_option`, ...) otherwise. Without a
// callback a call returns a promise (an addition: PM2 7 returns nothing),
// which is marked handled so that an ignored failure never crashes the
// program, as an ignored failure never does with PM2.
//
// Calls connect on their own when `connect` was not called, launching a
// daemon if none answers, as PM2's do.

const fs = require('fs');
const path = require('path');
const vm = require('vm');
const { pathToFileURL } = require('url');

const { Connection, noDaemonError } = require('./connection');
const { Bus } = require('./bus');
const { execFile } = require('child_process');
const { resolvePaths, launchDetached, launchTied, findBinary } = require('./daemon');

/** How long killDaemon waits for the daemon to go after it answered. */
const KILL_WAIT_MS = 10000;

/** Keys of PM2's API (commander leftovers, start/reload options) that are not app options. */
/** The caller's environment (`process` is a parameter name here). */
function process_env() {
  return global.process.env;
}

const API_ONLY_KEYS = ['rawArgs', 'scriptArgs', 'updateEnv', 'parallel', 'only', 'force_name', 'started_as_module'];

/** Config files PM2 recognizes, by how the name ends. */
const CONFIG_ENDINGS = [
  ['.json', 'json'],
  ['.yml', 'yaml'],
  ['.yaml', 'yaml'],
  ['.config.js', 'js'],
  ['.config.cjs', 'js'],
  ['.config.mjs', 'mjs'],
];

function configKind(s) {
  if (typeof s !== 'string') return null;
  for (const [ending, kind] of CONFIG_ENDINGS) {
    if (s.endsWith(ending)) return kind;
  }
  return null;
}

/** Run `promise`; hand its outcome to `cb`, or return it when there is none. */
function settle(promise, cb) {
  if (typeof cb === 'function') {
    promise.then(
      (res) => process.nextTick(cb, null, res),
      (err) => process.nextTick(cb, err)
    );
    return undefined;
  }
  promise.catch(() => {});
  return promise;
}

/** An Error for a call given the wrong arguments; `code` is `bad_request`. */
function usageError(message) {
  const err = new Error(message);
  err.code = 'bad_request';
  return err;
}

/** What the daemon takes as a target: a pm_id, "all", or a name. */
function target(process) {
  if (typeof process === 'number') return process;
  if (typeof process === 'string' && process !== '') return process;
  throw usageError(`a process must be a name, a pm_id or "all", got ${JSON.stringify(process)}`);
}

/** The name the daemon gives an app without one: its script's stem. */
function defaultName(script) {
  const s = String(script).trim();
  if (/\s/.test(s)) return s;
  return path.basename(s, path.extname(s));
}

/** PM2's operate results: the description with name/status/... on top. */
function acted(descs) {
  return (descs || []).map((d) =>
    Object.assign({}, d, {
      namespace: d.pm2_env && d.pm2_env.namespace,
      status: d.pm2_env && d.pm2_env.status,
      restart_time: d.pm2_env && d.pm2_env.restart_time,
    })
  );
}

/** The caller's environment, as the apps inherit it (strings only). */
function callerEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (typeof v === 'string') env[k] = v;
  }
  return env;
}

class API {
  /**
   * `opts.cwd`: base of relative scripts, app cwds and config files
   * (default: the cwd at construction). `opts.pm2_home` (or
   * `opts.corral_home`): the corral home instead of $CORRAL_HOME.
   * `opts.daemon_mode: false`: as `connect(true, ...)`.
   */
  constructor(opts) {
    opts = opts || {};
    this.cwd = opts.cwd ? path.resolve(opts.cwd) : process.cwd();
    this.pm2_home = opts.corral_home || opts.pm2_home || null;
    this.daemon_mode = opts.daemon_mode === undefined ? true : Boolean(opts.daemon_mode);
    this._conn = null;
    this._connecting = null;
    this._child = null;
    this._buses = new Set();
    this._busOpening = null;
  }

  // ---- connection --------------------------------------------------------

  /**
   * `connect([noDaemonMode], errback(err, meta))`. With `noDaemonMode`
   * true and no daemon running, the daemon started is tied to this
   * process: it stops its apps and exits when this process exits.
   */
  connect(noDaemon, cb) {
    if (typeof noDaemon === 'function') {
      cb = noDaemon;
      noDaemon = false;
    }
    if (noDaemon === true) this.daemon_mode = false;
    return settle(this._connect(), cb);
  }

  /** Connected (launching a daemon if needed): `{conn, meta}`. */
  _connect() {
    if (this._conn && !this._conn.closed) {
      return Promise.resolve(this._meta(false));
    }
    if (!this._connecting) {
      this._connecting = this._open().finally(() => {
        this._connecting = null;
      });
    }
    return this._connecting;
  }

  async _open() {
    const paths = resolvePaths(this.pm2_home);
    let fresh = false;
    let conn;
    try {
      conn = await Connection.open(paths.socket);
    } catch (e) {
      if (e.code !== 'ENOENT' && e.code !== 'ECONNREFUSED') {
        throw noDaemonError(`cannot connect to ${paths.socket}: ${e.message}`, e);
      }
      let answer = 'ready';
      if (this.daemon_mode) {
        answer = await launchDetached(paths);
      } else {
        this._child = await launchTied(paths);
      }
      try {
        conn = await Connection.open(paths.socket);
      } catch (e2) {
        throw noDaemonError(
          answer === 'ready' ? `cannot connect to ${paths.socket}: ${e2.message}` : answer,
          e2
        );
      }
      fresh = true;
    }
    conn.onClose = () => {
      if (this._conn === conn) this._conn = null;
    };
    this._conn = conn;
    this._paths = paths;
    return this._meta(fresh);
  }

  _meta(fresh) {
    return {
      daemon_mode: this.daemon_mode,
      new_pm2_instance: fresh,
      rpc_socket_file: this._paths.socket,
      pub_socket_file: this._paths.socket,
      pm2_home: this._paths.home,
    };
  }

  /**
   * One request on the (lazily opened) connection. A request made while a
   * bus is being opened waits until it listens, so that what the request
   * causes (an app's answer to sendDataToProcessId) reaches the bus.
   */
  async _request(cmd, args) {
    if (this._busOpening) await this._busOpening;
    // A disconnect() between the call and its write closed the connection
    // the call was waiting for: the call was made first, so it is sent on
    // a new one.
    for (let attempt = 0; ; attempt++) {
      await this._connect();
      const conn = this._conn;
      if (conn && !conn.closed) return conn.request(cmd, args);
      if (attempt > 0) throw noDaemonError('the connection to the daemon closed before the request was sent');
    }
  }

  /**
   * Close the connection and every bus. The program can then exit; a
   * daemon of `connect(true)` lives until it does.
   */
  disconnect(cb) {
    for (const b of this._buses) b.close();
    this._buses.clear();
    if (this._conn) this._conn.close();
    this._conn = null;
    if (typeof cb === 'function') process.nextTick(cb, null, { msg: 'disconnected' });
  }

  close(cb) {
    this.disconnect(cb);
  }

  // ---- starting ----------------------------------------------------------

  /**
   * `start(options | jsonConfigFile | script [, options | jsonConfigFile],
   * errback(err, procs))`.
   */
  start(cmd, opts, cb) {
    if (typeof opts === 'function') {
      cb = opts;
      opts = undefined;
    }
    return settle(this._start(cmd, opts), cb);
  }

  async _start(cmd, opts) {
    if (typeof cmd === 'string' && configKind(cmd)) {
      const config = await this._loadConfig(cmd);
      return this._startApps(config, opts && typeof opts === 'object' ? opts : {}, true);
    }
    if (cmd && typeof cmd === 'object') {
      return this._startApps(cmd, opts && typeof opts === 'object' ? opts : {}, true);
    }
    if (typeof cmd !== 'string' || cmd === '') {
      throw usageError('start needs options, a config file or a script');
    }
    let options = {};
    if (typeof opts === 'string') {
      // start(script, jsonConfigFile): the file's (first) app, this script.
      const apps = appsOf(await this._loadConfig(opts));
      options = Object.assign({}, apps[0] || {});
    } else if (opts && typeof opts === 'object') {
      options = Object.assign({}, opts);
    }
    // A known name, pm_id, namespace or "all": start (restart) it, as PM2.
    const looksLikeName = !cmd.includes('/') && path.extname(cmd) === '' && !/\s/.test(cmd);
    if (looksLikeName && !options.script) {
      const known = await this._describe(cmd);
      if (known.length > 0 || cmd === 'all') {
        return acted(await this._request('restart', { target: target(cmd) }));
      }
    }
    if (opts && Array.isArray(opts.scriptArgs) && options.args === undefined) options.args = opts.scriptArgs;
    if (opts && Array.isArray(opts.rawArgs) && options.args === undefined) {
      const i = opts.rawArgs.indexOf('--');
      if (i !== -1) options.args = opts.rawArgs.slice(i + 1);
    }
    options.script = cmd;
    return this._startApps(options, {}, false);
  }

  /** Read a config file (relative to this API's cwd). */
  async _loadConfig(file) {
    const full = path.resolve(this.cwd, file);
    const kind = configKind(file);
    if (kind === 'yaml') {
      throw usageError(
        `${full}: YAML config files are read by the corral command line only; give this client JSON or JS`
      );
    }
    if (kind === 'js') {
      try {
        delete require.cache[require.resolve(full)];
        return require(full);
      } catch (e) {
        throw usageError(`cannot load ${full}: ${e.message}`);
      }
    }
    if (kind === 'mjs') {
      try {
        const m = await import(pathToFileURL(full).href + `?t=${Date.now()}`);
        return m.default || m;
      } catch (e) {
        throw usageError(`cannot load ${full}: ${e.message}`);
      }
    }
    let text;
    try {
      text = fs.readFileSync(full, 'utf8');
    } catch (e) {
      throw usageError(`cannot read ${full}: ${e.message}`);
    }
    try {
      return JSON.parse(text);
    } catch (e) {
      // As PM2 reads it: a JavaScript object literal (comments, trailing
      // commas, unquoted keys).
      try {
        return vm.runInNewContext('(' + text + '\n)', Object.create(null), { filename: full, timeout: 1000 });
      } catch (e2) {
        throw usageError(`${full} is not valid JSON: ${e.message}`);
      }
    }
  }

  /**
   * Start apps given as objects. With `restartRunning` (PM2's JSON
   * starts), an app whose name runs already is restarted instead.
   */
  async _startApps(config, opts, restartRunning) {
    let apps = appsOf(config).map((a) => Object.assign({}, a));
    if (opts.only) {
      const only = String(opts.only).split(/[, ]/).filter(Boolean);
      apps = apps.filter((a) => only.includes(a.name));
    }
    if (apps.length === 0) throw usageError('no app to start');
    for (const app of apps) {
      for (const k of API_ONLY_KEYS) delete app[k];
      if (opts.cwd) app.cwd = opts.cwd;
      if (opts.namespace && !app.namespace) app.namespace = opts.namespace;
      if (typeof opts.instances === 'number') app.instances = opts.instances;
      if (typeof app.script !== 'string' || app.script === '') {
        throw usageError(`an app needs a script (got ${JSON.stringify(app)})`);
      }
      app.cwd = path.resolve(this.cwd, typeof app.cwd === 'string' ? app.cwd : '.');
      clusterByDefault(app);
    }
    const running = new Set();
    if (restartRunning) {
      const settled = new Set(['stopped', 'errored']);
      for (const d of await this._request('list')) {
        if (!settled.has(d.pm2_env.status)) running.add(d.name);
      }
    }
    const restarted = [];
    const fresh = [];
    for (const app of apps) {
      const name = typeof app.name === 'string' ? app.name : defaultName(app.script);
      if (restartRunning && !app.force && running.has(name)) {
        if (!restarted.includes(name)) restarted.push(name);
      } else {
        fresh.push(app);
      }
    }
    let out = [];
    for (const name of restarted) {
      out = out.concat(acted(await this._request('restart', { target: name })));
    }
    if (fresh.length > 0) {
      const args = { apps: fresh, caller_env: callerEnv() };
      if (typeof opts.env === 'string') args.env_name = opts.env;
      out = out.concat(await this._request('start', args));
    }
    return out;
  }

  // ---- acting on apps ----------------------------------------------------

  _operate(cmd, process, cb, opts) {
    return settle(
      Promise.resolve().then(async () => {
        const args = { target: target(process) };
        // PM2's `{updateEnv: true}`: the apps take this process's
        // environment (keys gone from it are gone from theirs).
        if (opts && typeof opts === 'object' && opts.updateEnv) {
          const env = {};
          for (const [k, v] of Object.entries(process_env())) if (typeof v === 'string') env[k] = v;
          args.caller_env = env;
        }
        return acted(await this._request(cmd, args));
      }),
      cb
    );
  }

  /** `stop(process, errback(err, procs))`. */
  stop(process, cb) {
    return this._operate('stop', process, cb);
  }

  /** `restart(process, [options], errback(err, procs))`. */
  restart(process, opts, cb) {
    if (typeof opts === 'function') cb = opts;
    return this._operate('restart', process, cb, opts);
  }

  /** `reload(process, [options], errback(err, procs))`: rolling, zero-downtime. */
  reload(process, opts, cb) {
    if (typeof opts === 'function') cb = opts;
    return this._operate('reload', process, cb, opts);
  }

  /** `gracefulReload(process, [options], errback(err, procs))`: a reload whose old processes get `shutdown` first. */
  gracefulReload(process, opts, cb) {
    if (typeof opts === 'function') cb = opts;
    return this._operate('graceful_reload', process, cb, opts);
  }

  /** `delete(process, errback(err, procs))`. */
  delete(process, jsonVia, cb) {
    if (typeof jsonVia === 'function') cb = jsonVia;
    return this._operate('delete', process, cb);
  }

  /** `reset(process, errback(err, procs))`: zero the restart counters. */
  reset(process, cb) {
    return this._operate('reset', process, cb);
  }

  /** `scale(name, n | "+n" | "-n", errback(err, procs))`. */
  scale(name, instances, cb) {
    return settle(this._request('scale', { target: String(name), instances }), cb);
  }

  async _describe(process) {
    try {
      return await this._request('describe', { target: target(process) });
    } catch (e) {
      if (e.code === 'not_found') return [];
      throw e;
    }
  }

  /** `describe(process, errback(err, descriptions))`; `[]` for an unknown one. */
  describe(process, cb) {
    return settle(Promise.resolve().then(() => this._describe(process)), cb);
  }

  /** `list([opts], errback(err, descriptions))`. */
  list(opts, cb) {
    if (typeof opts === 'function') cb = opts;
    return settle(this._request('list'), cb);
  }

  /** `ping(errback(err, {version, pid, protocol, uptime_ms}))`. */
  ping(cb) {
    return settle(this._request('ping'), cb);
  }

  /**
   * `dump([force], errback(err, result))`: save the app list for
   * `resurrect`. Needs a daemon that serves `dump`.
   */
  dump(force, cb) {
    if (typeof force === 'function') {
      cb = force;
      force = false;
    }
    const args = force === true ? { force: true } : {};
    return settle(
      this._request('dump', args).then((r) => Object.assign({ success: true }, r)),
      cb
    );
  }

  /**
   * `flush([process], errback(err, descriptions))`: empty the log files
   * (of `process`, or of every app); calls back with the list, as PM2.
   */
  flush(process, cb) {
    if (typeof process === 'function') {
      cb = process;
      process = undefined;
    }
    return settle(
      Promise.resolve().then(async () => {
        const args = process === undefined || process === null ? {} : { target: target(process) };
        await this._request('flush', args);
        return this._request('list');
      }),
      cb
    );
  }

  /** `reloadLogs(errback(err, {success, files}))`: reopen every log file. */
  reloadLogs(cb) {
    return settle(
      this._request('reload_logs').then((r) => Object.assign({ success: true }, r)),
      cb
    );
  }

  /** `sendSignalToProcessName(signal, process, errback(err, procs))`. */
  sendSignalToProcessName(signal, process, cb) {
    return settle(
      Promise.resolve().then(() => this._request('send_signal', { signal, target: target(process) })),
      cb
    );
  }

  /** `sendSignalToProcessId(signal, pm_id, errback(err, procs))`. */
  sendSignalToProcessId(signal, id, cb) {
    return this.sendSignalToProcessName(signal, typeof id === 'string' && /^\d+$/.test(id) ? Number(id) : id, cb);
  }

  /**
   * `sendDataToProcessId(pm_id, packet, errback)` or
   * `sendDataToProcessId(packet, errback)` with `packet.id`: the packet
   * arrives in the app's `process.on('message')`.
   */
  sendDataToProcessId(id, packet, cb) {
    if (id !== null && typeof id === 'object') {
      cb = packet;
      packet = id;
    } else {
      packet = Object.assign({}, packet, { id });
    }
    return settle(
      Promise.resolve().then(async () => {
        if (!packet || typeof packet !== 'object') throw usageError('sendDataToProcessId needs a packet object');
        if (typeof packet.id === 'string' && /^\d+$/.test(packet.id)) packet = Object.assign({}, packet, { id: Number(packet.id) });
        await this._request('send_data', { packet });
        return { success: true, data: packet };
      }),
      cb
    );
  }

  /**
   * `startup(platform, [opts], errback(err, result))`: have the app list
   * started at boot, as `corral startup` does (the same binary, home and
   * socket): the unit written and enabled as root (`result.output` says
   * what was done), the `sudo` command to run otherwise (an Error with
   * code `not_root` whose message holds it). `opts`: `user`, `hp`,
   * `serviceName`, `dryRun` (print the unit, write nothing).
   */
  startup(platform, opts, cb) {
    return this._bootVerb('startup', platform, opts, cb);
  }

  /** `uninstallStartup(platform, [opts], errback(err, result))`: as `corral unstartup`. */
  uninstallStartup(platform, opts, cb) {
    return this._bootVerb('unstartup', platform, opts, cb);
  }

  _bootVerb(verb, platform, opts, cb) {
    if (typeof platform === 'function') {
      cb = platform;
      platform = undefined;
      opts = {};
    } else if (typeof opts === 'function') {
      cb = opts;
      opts = {};
    }
    opts = opts || {};
    const args = [verb];
    if (typeof platform === 'string' && platform !== '') args.push(platform);
    if (opts.user) args.push('-u', String(opts.user));
    if (opts.hp) args.push('--hp', String(opts.hp));
    if (opts.serviceName) args.push('--service-name', String(opts.serviceName));
    if (opts.dryRun) args.push('--dry-run');
    const run = new Promise((resolve, reject) => {
      let bin;
      try {
        bin = findBinary();
      } catch (e) {
        reject(e);
        return;
      }
      const env = Object.assign({}, process.env, {
        CORRAL_HOME: this._paths.home,
        CORRAL_SOCKET: this._paths.socket,
        CORRAL_BIN: bin,
      });
      execFile(bin, args, { env }, (err, stdout, stderr) => {
        if (!err) {
          resolve({ success: true, output: stdout });
          return;
        }
        const said = `${stderr}${stdout}`.trim();
        const e = new Error(said || `corral ${verb} failed`);
        e.code = /sudo/.test(said) ? 'not_root' : err.code === 2 ? 'bad_request' : 'startup_failed';
        reject(e);
      });
    });
    return settle(run, cb);
  }

  // ---- the bus -----------------------------------------------------------

  /** `launchBus(errback(err, bus))`. */
  launchBus(cb) {
    const opening = Promise.resolve().then(async () => {
      await this._connect();
      const bus = await Bus.open(this._paths.socket);
      this._buses.add(bus);
      bus.onClose = () => this._buses.delete(bus);
      return bus;
    });
    const waited = opening.then(
      () => {},
      () => {}
    );
    this._busOpening = waited;
    waited.then(() => {
      if (this._busOpening === waited) this._busOpening = null;
    });
    return settle(opening, cb);
  }

  // ---- the daemon --------------------------------------------------------

  /**
   * `killDaemon(errback(err, {success, stopped}))`: stop every app and the
   * daemon. Starts none when none runs.
   */
  killDaemon(cb) {
    return settle(this._killDaemon(), cb);
  }

  kill(cb) {
    return this.killDaemon(cb);
  }

  async _killDaemon() {
    let conn = this._conn && !this._conn.closed ? this._conn : null;
    if (!conn) {
      const paths = resolvePaths(this.pm2_home);
      try {
        conn = await Connection.open(paths.socket);
      } catch (e) {
        return { success: true, stopped: 0 };
      }
    }
    const child = this._child;
    const res = await conn.request('kill_daemon');
    const gone = [conn.whenClosed()];
    if (child && child.exitCode === null && child.signalCode === null) {
      gone.push(new Promise((resolve) => child.once('exit', resolve)));
    }
    let timer;
    await Promise.race([
      Promise.all(gone),
      new Promise((resolve) => {
        timer = setTimeout(resolve, KILL_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
    conn.close();
    if (this._conn === conn) this._conn = null;
    if (this._child === child) this._child = null;
    for (const b of this._buses) b.close();
    this._buses.clear();
    return { success: true, stopped: (res && res.stopped) || 0 };
  }
}

/** The apps of a config object: `{apps: [...]}`, `{pm2: [...]}`, an array or one app. */
function appsOf(config) {
  if (Array.isArray(config)) return config;
  if (config && Array.isArray(config.apps)) return config.apps;
  if (config && config.apps && typeof config.apps === 'object') return [config.apps];
  if (config && Array.isArray(config.pm2)) return config.pm2;
  if (config && typeof config === 'object') return [config];
  return [];
}

/** As PM2's API: several instances and no exec_mode mean cluster mode. */
function clusterByDefault(app) {
  if (app.exec_mode !== undefined || app.execMode !== undefined) return;
  if (app.execute_command || app.executeCommand) return;
  const n = app.instances;
  if (n === undefined || n === null) return;
  if (n === 'max' || (Number.isFinite(Number(n)) && Number(n) !== 1)) app.exec_mode = 'cluster';
}

module.exports = { API, configKind, defaultName, appsOf, clusterByDefault };
