'use strict';
// One connection to corral's control socket: newline-delimited JSON
// requests, answered in order, one JSON line each.
//
// The socket keeps the event loop alive only while an answer is awaited:
// a program that forgets to disconnect still exits once its last call has
// been answered (a bus, which is meant to keep listening, is another
// socket; see bus.js).

const net = require('net');

/** An Error carrying the daemon's error code (`not_found`, ...). */
function daemonError(wire) {
  const err = new Error(wire && wire.message ? wire.message : 'the daemon refused the request');
  err.code = wire && wire.code ? wire.code : 'internal';
  return err;
}

/** An Error for when no daemon answers; `code` is `no_daemon`. */
function noDaemonError(message, cause) {
  const err = new Error(message);
  err.code = 'no_daemon';
  if (cause) err.cause = cause;
  return err;
}

/** Open a Unix stream socket; resolves once connected. */
function openSocket(socketPath) {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ path: socketPath });
    const onError = (e) => {
      sock.destroy();
      reject(e);
    };
    sock.once('error', onError);
    sock.once('connect', () => {
      sock.removeListener('error', onError);
      resolve(sock);
    });
  });
}

/** Split a stream of text into lines; `onLine` gets each without its newline. */
function lineReader(sock, onLine) {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim() !== '') onLine(line);
    }
  });
}

class Connection {
  /** Connect to `socketPath`; rejects with the socket's error. */
  static async open(socketPath) {
    const sock = await openSocket(socketPath);
    return new Connection(sock, socketPath);
  }

  constructor(sock, socketPath) {
    this.socketPath = socketPath;
    this.sock = sock;
    this.closed = false;
    this.closing = false;
    this.nextId = 1;
    // Answers come in the order of the requests.
    this.pending = [];
    this.onClose = null;
    sock.unref();
    lineReader(sock, (line) => this._answer(line));
    sock.on('error', (e) => this._fail(e));
    sock.on('close', () => this._fail(null));
  }

  /**
   * Send `{cmd, ...args}`; resolves with `result`, rejects with an Error
   * whose `code` is the daemon's.
   */
  request(cmd, args) {
    if (this.closed) {
      return Promise.reject(noDaemonError('the connection to the daemon is closed'));
    }
    const id = this.nextId++;
    const line = JSON.stringify(Object.assign({ id, cmd }, args || {})) + '\n';
    return new Promise((resolve, reject) => {
      this.pending.push({ id, resolve, reject });
      this.sock.ref();
      this.sock.write(line);
    });
  }

  _answer(line) {
    const waiter = this.pending.shift();
    if (this.pending.length === 0) {
      this.sock.unref();
      if (this.closing) {
        this.sock.end();
        this._fail(null);
      }
    }
    if (!waiter) return;
    let resp;
    try {
      resp = JSON.parse(line);
    } catch (e) {
      waiter.reject(new Error(`unreadable answer from the daemon: ${line.slice(0, 200)}`));
      return;
    }
    if (resp.ok === true) {
      waiter.resolve(resp.result);
    } else {
      waiter.reject(daemonError(resp.error));
    }
  }

  _fail(e) {
    const first = !this.closed;
    this.closed = true;
    const waiting = this.pending;
    this.pending = [];
    for (const w of waiting) {
      w.reject(e || noDaemonError('the daemon closed the connection'));
    }
    if (first) {
      this.sock.destroy();
      if (this.onClose) this.onClose();
    }
  }

  /** Resolves when the daemon has closed this connection (kill_daemon). */
  whenClosed() {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => this.sock.once('close', resolve));
  }

  /**
   * Close: at once when no answer is awaited, else after the last one (a
   * request already sent, or sent meanwhile, still gets its answer).
   */
  close() {
    if (this.closed || this.closing) return;
    this.closing = true;
    if (this.pending.length === 0) {
      this.sock.end();
      this._fail(null);
    }
  }
}

module.exports = { Connection, openSocket, lineReader, daemonError, noDaemonError };
