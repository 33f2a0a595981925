// Types of the corral Node package: PM2's programmatic API, under PM2's
// names, so that code typed against `pm2` type-checks against this package.
//
// Every call takes an errback `(err, result)`; `err` is `null` on success,
// else an `Error` whose `code` is the daemon's (`not_found`, ...). Without
// an errback a call returns a promise of the result instead (an addition:
// PM2 7's calls return nothing).

// ---- the calls --------------------------------------------------------------

/** Connect to the daemon, starting a detached one if none answers. */
export function connect(errback: ErrCallback): void;
/**
 * Connect; with `noDaemonMode` true and no daemon running, the daemon
 * started is tied to this process and stops (with its apps) when it exits.
 */
export function connect(noDaemonMode: boolean, errback: ErrCallback): void;
export function connect(noDaemonMode?: boolean): Promise<ConnectMeta>;

/** Start apps: options, a config file, or a script (with options or a config file). */
export function start(options: StartOptions, errback: ErrProcCallback): void;
export function start(jsonConfigFile: string, errback: ErrProcCallback): void;
export function start(script: string, errback: ErrProcCallback): void;
export function start(script: string, options: StartOptions, errback: ErrProcCallback): void;
export function start(script: string, jsonConfigFile: string, errback: ErrProcCallback): void;
export function start(
  optionsOrScriptOrFile: StartOptions | string,
  optionsOrFile?: StartOptions | string
): Promise<ProcessDescription[]>;

/** Close the connection and every bus: the program can exit. */
export function disconnect(errback?: ErrCallback): void;
export function close(errback?: ErrCallback): void;

/** Stop an app (a name, a pm_id, a namespace or "all"); it stays in the list. */
export function stop(process: string | number, errback: ErrProcCallback): void;
export function stop(process: string | number): Promise<ProcessDescription[]>;

/** Stop and start again; the same pm_id. */
export function restart(process: string | number, errback: ErrProcCallback): void;
export function restart(process: string | number, options: ReloadOptions, errback: ErrProcCallback): void;
export function restart(process: string | number, options?: ReloadOptions): Promise<ProcessDescription[]>;

/** Stop and forget. */
declare function del(process: string | number, errback: ErrProcCallback): void;
declare function del(process: string | number): Promise<ProcessDescription[]>;
export { del as delete };

/** A rolling restart: at least one instance serves at every moment. */
export function reload(process: string | number, errback: ErrProcCallback): void;
export function reload(process: string | number, options: ReloadOptions, errback: ErrProcCallback): void;
export function reload(process: string | number, options?: ReloadOptions): Promise<ProcessDescription[]>;

/** A reload in which each old process gets the `shutdown` message first. */
export function gracefulReload(process: string | number, errback: ErrProcCallback): void;
export function gracefulReload(process: string | number, options: ReloadOptions, errback: ErrProcCallback): void;
export function gracefulReload(process: string | number, options?: ReloadOptions): Promise<ProcessDescription[]>;

/** Zero the restart counters. */
export function reset(process: string | number, errback: ErrProcCallback): void;
export function reset(process: string | number): Promise<ProcessDescription[]>;

/** Grow or shrink an app to `instances` (a number, "+n" or "-n"). */
export function scale(name: string, instances: number | string, errback: ErrProcDescsCallback): void;
export function scale(name: string, instances: number | string): Promise<ProcessDescription[]>;

/** Stop every app and the daemon. */
export function killDaemon(errback: ErrResultCallback<KillResult>): void;
export function killDaemon(): Promise<KillResult>;
export function kill(errback: ErrResultCallback<KillResult>): void;

/** The apps a name or pm_id designates; `[]` when none. */
export function describe(process: string | number, errback: ErrProcDescsCallback): void;
export function describe(process: string | number): Promise<ProcessDescription[]>;

/** Every app. */
export function list(errback: ErrProcDescsCallback): void;
export function list(): Promise<ProcessDescription[]>;

/** The daemon's version, pid, protocol and uptime. */
export function ping(errback: ErrResultCallback<PingResult>): void;
export function ping(): Promise<PingResult>;

/** Save the app list for resurrection (`force`: even an empty one over a full dump). */
export function dump(errback: ErrResultCallback): void;
export function dump(force: boolean, errback: ErrResultCallback): void;
export function dump(force?: boolean): Promise<any>;

/** Empty the log files of an app (of every app without `process`); calls back with the list. */
export function flush(process: number | string, errback: ErrProcDescsCallback): void;
export function flush(errback: ErrProcDescsCallback): void;
export function flush(process?: number | string): Promise<ProcessDescription[]>;

/** Reopen every log file (after an outside rotation renamed them). */
export function reloadLogs(errback: ErrResultCallback<ReloadLogsResult>): void;
export function reloadLogs(): Promise<ReloadLogsResult>;

/** Open an event bus. */
export function launchBus(errback: ErrBusCallback): void;
export function launchBus(): Promise<Bus>;

/** Send a signal (a name or a number) to every process of an app. */
export function sendSignalToProcessName(signal: string | number, process: number | string, errback: ErrResultCallback): void;
export function sendSignalToProcessName(signal: string | number, process: number | string): Promise<ProcessDescription[]>;
export function sendSignalToProcessId(signal: string | number, process: number | string, errback: ErrResultCallback): void;

/** How `startup` / `uninstallStartup` run (`corral startup` flags). */
export interface StartupOptions {
  user?: string;
  hp?: string;
  serviceName?: string;
  /** Print the unit (in `result.output`); write and run nothing. */
  dryRun?: boolean;
}

/** What `startup` did: `corral startup`'s output. */
export interface StartupResult {
  success: true;
  output: string;
}

/**
 * Have the app list started at boot on this `platform` (systemd, openrc,
 * ...), as `corral startup` does. Without root: an Error with code
 * `not_root` whose message is the `sudo` command to run.
 */
export function startup(platform: Platform, errback: ErrResultCallback<StartupResult>): void;
export function startup(platform: Platform, opts: StartupOptions, errback: ErrResultCallback<StartupResult>): void;
export function startup(platform?: Platform, opts?: StartupOptions): Promise<StartupResult>;
/** Disable and remove the boot unit, as `corral unstartup` does. */
export function uninstallStartup(platform: Platform, errback: ErrResultCallback<StartupResult>): void;
export function uninstallStartup(platform: Platform, opts: StartupOptions, errback: ErrResultCallback<StartupResult>): void;
export function uninstallStartup(platform?: Platform, opts?: StartupOptions): Promise<StartupResult>;

/** Send a packet to an app's `process.on('message')`. */
export function sendDataToProcessId(proc_id: number, packet: object, cb: ErrResultCallback<SendDataResult>): void;
export function sendDataToProcessId(packet: DataPacket, cb: ErrResultCallback<SendDataResult>): void;
export function sendDataToProcessId(packet: DataPacket): Promise<SendDataResult>;
export function sendDataToProcessId(proc_id: number, packet: object): Promise<SendDataResult>;

/** The class of the default object, for another instance: `new pm2.custom({cwd})`. */
export class custom {
  constructor(options?: CustomOptions);
  cwd: string;
  daemon_mode: boolean;
  connect: typeof connect;
  start: typeof start;
  disconnect: typeof disconnect;
  close: typeof close;
  stop: typeof stop;
  restart: typeof restart;
  delete: typeof del;
  reload: typeof reload;
  gracefulReload: typeof gracefulReload;
  reset: typeof reset;
  scale: typeof scale;
  killDaemon: typeof killDaemon;
  kill: typeof kill;
  describe: typeof describe;
  list: typeof list;
  ping: typeof ping;
  dump: typeof dump;
  flush: typeof flush;
  reloadLogs: typeof reloadLogs;
  launchBus: typeof launchBus;
  sendSignalToProcessName: typeof sendSignalToProcessName;
  sendSignalToProcessId: typeof sendSignalToProcessId;
  startup: typeof startup;
  uninstallStartup: typeof uninstallStartup;
  sendDataToProcessId: typeof sendDataToProcessId;
}

// ---- shapes -----------------------------------------------------------------

export interface CustomOptions {
  /** Base of relative scripts, app cwds and config files (default: the cwd now). */
  cwd?: string;
  /** The corral home instead of $CORRAL_HOME (`corral_home` is the same). */
  pm2_home?: string;
  corral_home?: string;
  /** false: as connect(true, ...). */
  daemon_mode?: boolean;
}

export interface ConnectMeta {
  daemon_mode: boolean;
  /** Whether this call started the daemon. */
  new_pm2_instance: boolean;
  rpc_socket_file: string;
  pub_socket_file: string;
  pm2_home: string;
}

/** What stop, restart, reload, delete and start call back with, per process. */
export interface Proc extends ProcessDescription {
  namespace?: string;
  status?: ProcessStatus;
  restart_time?: number;
}

/** An app as list and describe give it (PM2's `jlist` element). */
export interface ProcessDescription {
  name?: string;
  /** 0 when not running. */
  pid?: number;
  pm_id?: number;
  monit?: Monit;
  pm2_env?: Pm2Env;
}

export interface Monit {
  /** Resident memory, bytes. */
  memory?: number;
  /** Percent of one core. */
  cpu?: number;
}

export interface Pm2Env {
  name?: string;
  pm_id?: number;
  namespace?: string;
  status?: ProcessStatus;
  pm_cwd?: string;
  pm_exec_path?: string;
  pm_out_log_path?: string;
  pm_err_log_path?: string;
  pm_pid_path?: string;
  exec_interpreter?: string;
  exec_mode?: 'fork_mode' | 'cluster_mode';
  node_args?: string[];
  args?: string[];
  instances?: number;
  NODE_APP_INSTANCE?: number;
  pm_uptime?: number;
  created_at?: number;
  restart_time?: number;
  unstable_restarts?: number;
  /** Output lines not logged because they could not be written whole (a full disk). */
  log_lines_dropped?: number;
  /** The process's cgroup, when the daemon kills through one (else null). */
  cgroup?: string | null;
  exit_code?: number | null;
  autorestart?: boolean;
  watch?: boolean | string[];
  /** The `env` option's keys only: never the inherited environment. */
  env?: { [key: string]: string };
  /** Bytes. */
  max_memory_restart?: number | null;
  [key: string]: any;
}

export interface StartOptions {
  name?: string;
  script?: string;
  args?: string | string[];
  interpreter?: string;
  interpreter_args?: string | string[];
  node_args?: string | string[];
  cwd?: string;
  output?: string;
  error?: string;
  out_file?: string;
  error_file?: string;
  log_date_format?: string;
  time?: boolean;
  pid?: string;
  pid_file?: string;
  min_uptime?: number | string;
  max_restarts?: number;
  /** Bytes, or "512K", "100M", "1G". */
  max_memory_restart?: number | string;
  kill_timeout?: number | string;
  kill_signal?: string;
  restart_delay?: number | string;
  exp_backoff_restart_delay?: number;
  autorestart?: boolean;
  autostart?: boolean;
  stop_exit_codes?: number | number[];
  /** fork (the default) or cluster; several instances without it mean cluster. */
  exec_mode?: 'fork' | 'fork_mode' | 'cluster' | 'cluster_mode' | string;
  instances?: number | 'max';
  instance_var?: string;
  merge_logs?: boolean;
  watch?: boolean | string[];
  ignore_watch?: string[];
  watch_delay?: number;
  cron?: string;
  cron_restart?: string;
  force?: boolean;
  wait_ready?: boolean;
  listen_timeout?: number;
  shutdown_with_message?: boolean;
  treekill?: boolean;
  source_map_support?: boolean;
  disable_source_map_support?: boolean;
  execute_command?: boolean;
  write?: boolean;
  namespace?: string;
  uid?: string | number;
  gid?: string | number;
  env?: { [key: string]: string };
  [key: string]: any;
}

export interface ReloadOptions {
  /** Accepted; the daemon keeps the environment the app was started with. */
  updateEnv?: boolean;
}

export interface KillResult {
  success: true;
  /** How many apps were running. */
  stopped: number;
}

export interface PingResult {
  version: string;
  pid: number;
  protocol: number;
  uptime_ms: number;
  /** Users obeyed besides the daemon's own (`corral daemon --allow-uid`). */
  allow_uid: number[];
  /** Groups obeyed (`corral daemon --allow-gid`). */
  allow_gid: number[];
}

export interface ReloadLogsResult {
  success: true;
  files: number;
}

export interface DataPacket {
  id: number;
  type?: 'process:msg' | string;
  topic?: any;
  data: any;
}

export interface SendDataResult {
  success: true;
  data: DataPacket;
}

/** The event bus. */
export interface Bus {
  /**
   * Call `listener` for each event whose name matches `pattern`, where `*`
   * matches anything: the parts it matched come first, then the packet
   * (`on('*', (event, packet) => ...)`, `on('log:*', (stream, packet) => ...)`).
   */
  on(pattern: 'process:event', listener: (packet: ProcessEventPacket) => void): Bus;
  on(pattern: 'process:msg', listener: (packet: MessagePacket) => void): Bus;
  on(pattern: 'log:out' | 'log:err', listener: (packet: LogPacket) => void): Bus;
  on(pattern: string | RegExp, listener: (...args: any[]) => void): Bus;
  /** Remove every listener of `pattern`. */
  off(pattern: string | RegExp): Bus;
  /** Stop listening. */
  close(): void;
}

/** Name, pm_id, pid and namespace of the app an event is about. */
export interface ProcessRef {
  name: string;
  pm_id: number;
  pid: number;
  namespace: string;
}

export interface ProcessEventPacket {
  /** start, online, exit, stop, restart, delete, restart overlimit. */
  event: string;
  manually: boolean;
  at: number;
  /** The app's pm2_env (its `env`: the given keys only), with the pid of the moment. */
  process: Pm2Env & ProcessRef;
  /** With `exit`. */
  code?: number | null;
  signal?: string | null;
  [key: string]: any;
}

export interface MessagePacket {
  at: number;
  process: ProcessRef;
  /** `{type, data}` messages: the data. */
  data?: any;
  /** Anything else the app sent. */
  raw?: any;
}

export interface LogPacket {
  at: number;
  process: ProcessRef;
  /** One whole line, newline included. */
  data: string;
}

// ---- types ------------------------------------------------------------------

export type ProcessStatus =
  | 'online'
  | 'stopping'
  | 'stopped'
  | 'launching'
  | 'errored'
  | 'one-launch-status'
  | 'waiting restart';
export type Platform =
  | 'ubuntu'
  | 'centos'
  | 'redhat'
  | 'gentoo'
  | 'systemd'
  | 'darwin'
  | 'amazon'
  | 'openrc'
  | 'upstart'
  | 'launchd'
  | 'rcd'
  | 'sysv'
  | string;

/** An Error from the daemon carries its code. */
export interface CorralError extends Error {
  code?: string;
}

export type ErrCallback = (err: CorralError | null, meta?: ConnectMeta) => void;
export type ErrProcCallback = (err: CorralError | null, proc: Proc[]) => void;
export type ErrProcDescCallback = (err: CorralError | null, processDescription: ProcessDescription) => void;
export type ErrProcDescsCallback = (err: CorralError | null, processDescriptionList: ProcessDescription[]) => void;
export type ErrResultCallback<T = any> = (err: CorralError | null, result: T) => void;
export type ErrBusCallback = (err: CorralError | null, bus: Bus) => void;
