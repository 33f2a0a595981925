'use strict';
// The event bus, as PM2's `launchBus` hands it out: `bus.on(pattern, fn)`
// where `*` in the pattern matches any run of characters and each match is
// passed to `fn` before the packet (`bus.on('*', (event, packet) => ...)`,
// `bus.on('log:*', (stream, packet) => ...)`, `bus.on('process:msg',
// packet => ...)`).
//
// It is a connection of its own, subscribed to every event. It keeps the
// event loop alive until `bus.close()` or `pm2.disconnect()`, as PM2's does.
//
// `process:event` packets get the app's whole description as `process`
// (its `pm2_env`, with the daemon's `pid` of the moment), as PM2 sends
// them: the daemon sends only name, pm_id, pid and namespace, so the bus
// asks for the description on a second, private connection, and delivers
// events strictly in order meanwhile.

const { openSocket, lineReader, Connection } = require('./connection');

/** `*` → any run of characters, captured; everything else literal. */
function patternRegExp(pattern) {
  if (pattern instanceof RegExp) return pattern;
  const parts = String(pattern)
    .split('*')
    .map((p) => p.replace(/[\\^$.+?()[\]{}|]/g, '\\$&'));
  return new RegExp('^' + parts.join('(.+)') + '$');
}

class Bus {
  /** Open a bus on `socketPath`; resolves once the daemon has subscribed it. */
  static async open(socketPath) {
    const sock = await openSocket(socketPath);
    const bus = new Bus(sock, socketPath);
    await bus._subscribed;
    return bus;
  }

  constructor(sock, socketPath) {
    this.sock = sock;
    this.socketPath = socketPath;
    this.listeners = [];
    this.closed = false;
    this.queue = [];
    this.fetching = false;
    this.describer = null;
    // Last pm2_env seen per pm_id: what a `delete` event describes.
    this.known = new Map();
    this.onClose = null;
    let first = true;
    this._subscribed = new Promise((resolve, reject) => {
      lineReader(sock, (line) => {
        if (first) {
          first = false;
          let resp = null;
          try {
            resp = JSON.parse(line);
          } catch (e) {
            // handled below
          }
          if (resp && resp.ok) resolve();
          else {
            const err = new Error((resp && resp.error && resp.error.message) || 'the daemon refused the bus');
            err.code = (resp && resp.error && resp.error.code) || 'internal';
            reject(err);
            this.close();
          }
          return;
        }
        this._received(line);
      });
      sock.once('close', () => {
        if (first) reject(new Error('the daemon closed the bus'));
      });
    });
    sock.on('error', () => {});
    sock.on('close', () => this._closed());
    sock.write(JSON.stringify({ id: 0, cmd: 'subscribe' }) + '\n');
  }

  /** Call `fn(...captures, packet)` for every event matching `pattern`. */
  on(pattern, fn) {
    this.listeners.push({ pattern, re: patternRegExp(pattern), fn });
    return this;
  }

  /** Remove every listener of `pattern`. */
  off(pattern) {
    this.listeners = this.listeners.filter((l) => l.pattern !== pattern);
    return this;
  }

  /** Stop listening; the bus's connection is closed. */
  close() {
    if (this.closed) return;
    this.sock.end();
    this.sock.destroy();
    this._closed();
  }

  _closed() {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    if (this.describer) this.describer.close();
    this.describer = null;
    if (this.onClose) this.onClose();
  }

  _received(line) {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch (e) {
      return;
    }
    if (!msg || typeof msg.event !== 'string') return;
    this.queue.push({ event: msg.event, data: msg.data, ready: msg.event !== 'process:event' });
    this._pump();
  }

  /** Deliver what can be delivered, in order. */
  _pump() {
    while (this.queue.length > 0 && !this.closed) {
      const head = this.queue[0];
      if (!head.ready) {
        if (!this.fetching) this._describe(head);
        return;
      }
      this.queue.shift();
      this._dispatch(head.event, head.data);
    }
  }

  /** Give a process:event its app's description, then go on. */
  _describe(item) {
    const ref = (item.data && item.data.process) || {};
    this.fetching = true;
    const done = (env) => {
      this.fetching = false;
      item.ready = true;
      if (env) {
        this.known.set(ref.pm_id, env);
        item.data.process = Object.assign({}, env, ref);
      } else if (this.known.has(ref.pm_id)) {
        item.data.process = Object.assign({}, this.known.get(ref.pm_id), ref);
      }
      if (item.data && item.data.event === 'delete') this.known.delete(ref.pm_id);
      this._pump();
    };
    if (typeof ref.pm_id !== 'number') {
      done(null);
      return;
    }
    this._describer()
      .then((conn) => conn.request('describe', { target: ref.pm_id }))
      .then(
        (descs) => done(Array.isArray(descs) && descs[0] && descs[0].pm2_env ? descs[0].pm2_env : null),
        () => done(null)
      );
  }

  _describer() {
    if (this.describer && !this.describer.closed) return Promise.resolve(this.describer);
    return Connection.open(this.socketPath).then((conn) => {
      if (this.closed) {
        conn.close();
        throw new Error('bus closed');
      }
      this.describer = conn;
      return conn;
    });
  }

  _dispatch(event, data) {
    for (const l of this.listeners.slice()) {
      const m = l.re.exec(event);
      if (!m) continue;
      try {
        l.fn.apply(this, m.slice(1).concat([data]));
      } catch (e) {
        // A listener's error is the program's: thrown, as from any event
        // handler, but after the other listeners had their event.
        process.nextTick(() => {
          throw e;
        });
      }
    }
  }
}

module.exports = { Bus, patternRegExp };
