//! Boot units: what `corral startup` writes so that a user's daemon comes
//! back at boot with its saved list, and what `corral unstartup` removes;
//! plus the daemon's side of systemd's `Type=notify` (`sd_notify`,
//! `watchdog_interval`).
//!
//! The unit text, its path, and the commands that enable and disable it are
//! pure functions of a [`Unit`] (user, home, binary, PATH) and an [`Init`]
//! system, tested from tables. Writing, running the commands and saving the
//! list are the thin side-effecting functions at the end.
//!
//! Decisions:
//! - systemd is `Type=notify` running `corral daemon --no-daemon` itself (no
//!   PID file in a user's home, PM2's most reported startup fault), with
//!   `ExecStartPost=-corral resurrect`: systemd runs it once the daemon said
//!   `READY=1`, and the `-` keeps the daemon up when there is no dump yet.
//!   `KillMode=process`: systemd signals the daemon alone, which stops its
//!   apps with their own kill timeouts and signals.
//! - The script-based inits (OpenRC, FreeBSD rc.d, SysV, launchd) have no
//!   readiness protocol, so they start the daemon with `corral ping` (which
//!   returns once the daemon serves) and then `corral resurrect`, as the
//!   user, and stop it with `corral dump` (saving the list, as SIGTERM
//!   does under systemd) then `corral kill`. They never read a PID file
//!   the user could write.
//! - PM2's `upstart` was always an `/etc/init.d` script; here too: `upstart`
//!   is the SysV script, enabled with `update-rc.d` where it exists, else
//!   `chkconfig`.
//! - `CORRAL_STARTUP_ROOT` (tests, packaging) puts every path under a
//!   directory, including the probes of init detection, and the enable
//!   commands are printed but not run.
//! - Everything interpolated is checked for control characters and quoted
//!   for the file's own syntax (systemd, sh, XML): a home given with `--hp`
//!   must not be able to add a line to a file root writes.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The PATH a unit gets when the caller has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment variable that puts every startup path under a directory.
pub const ROOT_ENV: &str = "CORRAL_STARTUP_ROOT";

/// How long saving the list may take before startup goes on without it.
pub const SAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// An init system corral can write a boot unit for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    Systemd,
    Openrc,
    Launchd,
    Rcd,
    Sysv,
}

/// The platform names `startup` accepts (PM2's and ours) and what they mean.
pub const PLATFORM_NAMES: &[(&str, Init)] = &[
    ("systemd", Init::Systemd),
    ("ubuntu", Init::Systemd),
    ("debian", Init::Systemd),
    ("centos", Init::Systemd),
    ("redhat", Init::Systemd),
    ("fedora", Init::Systemd),
    ("arch", Init::Systemd),
    ("oracle", Init::Systemd),
    ("openrc", Init::Openrc),
    ("gentoo", Init::Openrc),
    ("alpine", Init::Openrc),
    ("launchd", Init::Launchd),
    ("darwin", Init::Launchd),
    ("macos", Init::Launchd),
    ("rcd", Init::Rcd),
    ("freebsd", Init::Rcd),
    ("sysv", Init::Sysv),
    ("systemv", Init::Sysv),
    ("upstart", Init::Sysv),
    ("ubuntu14", Init::Sysv),
    ("ubuntu12", Init::Sysv),
    ("amazon", Init::Sysv),
    ("centos6", Init::Sysv),
];

/// PM2 platforms corral does not write units for.
const UNSUPPORTED: &[&str] = &["openbsd", "rcd-openbsd", "smf", "sunos", "solaris"];

impl Init {
    /// The init system a platform name means.
    pub fn from_name(name: &str) -> Result<Init, String> {
        if let Some((_, init)) = PLATFORM_NAMES.iter().find(|(n, _)| *n == name) {
            return Ok(*init);
        }
        let known = "systemd, openrc, sysv, rcd, launchd (or ubuntu, centos, redhat, \
                     gentoo, amazon, darwin, freebsd, upstart)";
        if UNSUPPORTED.contains(&name) {
            return Err(format!(
                "platform `{name}` is not supported by corral; supported: {known}"
            ));
        }
        Err(format!("unknown platform `{name}`; give one of {known}"))
    }

    /// The name printed and used in the commands corral prints.
    pub fn name(self) -> &'static str {
        match self {
            Init::Systemd => "systemd",
            Init::Openrc => "openrc",
            Init::Launchd => "launchd",
            Init::Rcd => "rcd",
            Init::Sysv => "sysv",
        }
    }

    /// The running init system, from files that exist (`exists` is given a
    /// path relative to the root, without its leading `/`); `None` when no
    /// sign of one is found. systemd's own test (`sd_booted`) comes first, so
    /// a box with systemd installed but not running is not taken for it.
    pub fn detect(exists: &dyn Fn(&str) -> bool) -> Option<Init> {
        const SIGNS: &[(&str, Init)] = &[
            ("run/systemd/system", Init::Systemd),
            ("run/openrc", Init::Openrc),
            ("sbin/openrc-run", Init::Openrc),
            ("usr/sbin/openrc-run", Init::Openrc),
            ("bin/launchctl", Init::Launchd),
            ("etc/rc.subr", Init::Rcd),
            ("usr/sbin/update-rc.d", Init::Sysv),
            ("sbin/update-rc.d", Init::Sysv),
            ("sbin/chkconfig", Init::Sysv),
            ("usr/sbin/chkconfig", Init::Sysv),
        ];
        SIGNS.iter().find(|(p, _)| exists(p)).map(|(_, i)| *i)
    }
}

/// How a SysV script is registered with the runlevels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysvTool {
    /// Debian and Ubuntu.
    UpdateRcD,
    /// Red Hat, CentOS 6, Amazon Linux.
    Chkconfig,
}

impl SysvTool {
    /// `update-rc.d` where it exists (relative paths as in [`Init::detect`]),
    /// else `chkconfig`.
    pub fn detect(exists: &dyn Fn(&str) -> bool) -> SysvTool {
        if exists("usr/sbin/update-rc.d") || exists("sbin/update-rc.d") {
            SysvTool::UpdateRcD
        } else {
            SysvTool::Chkconfig
        }
    }
}

/// What a boot unit is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// The user the daemon runs as.
    pub user: String,
    /// Its `CORRAL_HOME`.
    pub home: PathBuf,
    /// The absolute path of the corral binary.
    pub binary: PathBuf,
    /// The `PATH` the daemon (and so its apps) gets.
    pub path_env: String,
    /// The service name; `None`: `corral-<user>` (rc.d: `corral_<user>`,
    /// launchd: `com.corral.<user>`).
    pub service: Option<String>,
    pub sysv_tool: SysvTool,
}

/// A command to run, as its argv.
pub type Cmd = Vec<String>;

/// Everything `startup` writes and runs, and `unstartup` undoes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub init: Init,
    pub service: String,
    /// Where the unit goes (absolute, before any root override).
    pub file: PathBuf,
    pub mode: u32,
    pub text: String,
    /// Run after writing the file.
    pub enable: Vec<Cmd>,
    /// Run before removing the file.
    pub disable: Vec<Cmd>,
    /// Run after removing the file.
    pub after_remove: Vec<Cmd>,
}

fn cmd(words: &[&str]) -> Cmd {
    words.iter().map(|w| w.to_string()).collect()
}

/// Refuse what no unit file may hold: control characters (a newline would
/// add a line to a file root writes) and an empty value.
fn check_text(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{what} `{}` holds a control character ({:?})",
            value.escape_debug(),
            c
        ));
    }
    Ok(())
}

/// A user name as `useradd` allows it: letters, digits, `._-`, not
/// starting with `-`, at most 32 bytes.
pub fn check_user(user: &str) -> Result<(), String> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad user name `{}`: letters, digits, `.`, `_` and `-` only",
            user.escape_debug()
        ))
    }
}

/// A service name: letters, digits, `._@-`, not starting with `-` or `.`.
fn check_service(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad service name `{}`: letters, digits, `.`, `_`, `@` and `-` only",
            name.escape_debug()
        ))
    }
}

fn path_str<'a>(what: &str, p: &'a Path) -> Result<&'a str, String> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("{what} {} is not UTF-8", p.display()))?;
    check_text(what, s)?;
    if !p.is_absolute() {
        return Err(format!("{what} {s} is not an absolute path"));
    }
    Ok(s)
}

/// The unit for `init`: its text, path and commands.
pub fn plan(init: Init, unit: &Unit) -> Result<Plan, String> {
    check_user(&unit.user)?;
    let home = path_str("home", &unit.home)?;
    let binary = path_str("corral binary", &unit.binary)?;
    check_text("PATH", &unit.path_env)?;
    let service = match &unit.service {
        Some(s) => s.clone(),
        None => match init {
            Init::Rcd => format!("corral_{}", unit.user.replace(['.', '-'], "_")),
            Init::Launchd => format!("com.corral.{}", unit.user),
            _ => format!("corral-{}", unit.user),
        },
    };
    check_service(&service)?;
    if init == Init::Rcd
        && !service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "bad service name `{service}` for rc.d: letters, digits and `_` only (it names a shell variable)"
        ));
    }
    let v = Values {
        user: &unit.user,
        home,
        binary,
        path: &unit.path_env,
        service: &service,
    };
    let s = service.as_str();
    let plan = match init {
        Init::Systemd => Plan {
            init,
            file: PathBuf::from(format!("/etc/systemd/system/{s}.service")),
            mode: 0o644,
            text: systemd_unit(&v),
            enable: vec![
                cmd(&["systemctl", "daemon-reload"]),
                cmd(&["systemctl", "enable", &format!("{s}.service")]),
            ],
            disable: vec![cmd(&["systemctl", "disable", &format!("{s}.service")])],
            after_remove: vec![cmd(&["systemctl", "daemon-reload"])],
            service,
        },
        Init::Openrc => Plan {
            init,
            file: PathBuf::from(format!("/etc/init.d/{s}")),
            mode: 0o755,
            text: openrc_script(&v),
            enable: vec![cmd(&["rc-update", "add", s, "default"])],
            disable: vec![cmd(&["rc-update", "del", s, "default"])],
            after_remove: vec![],
            service,
        },
        Init::Sysv => {
            let (enable, disable) = match unit.sysv_tool {
                SysvTool::UpdateRcD => (
                    vec![cmd(&["update-rc.d", s, "defaults"])],
                    vec![cmd(&["update-rc.d", "-f", s, "remove"])],
                ),
                SysvTool::Chkconfig => (
                    vec![
                        cmd(&["chkconfig", "--add", s]),
                        cmd(&["chkconfig", s, "on"]),
                    ],
                    vec![cmd(&["chkconfig", "--del", s])],
                ),
            };
            Plan {
                init,
                file: PathBuf::from(format!("/etc/init.d/{s}")),
                mode: 0o755,
                text: sysv_script(&v),
                enable,
                disable,
                after_remove: vec![],
                service,
            }
        }
        Init::Rcd => Plan {
            init,
            file: PathBuf::from(format!("/usr/local/etc/rc.d/{s}")),
            mode: 0o755,
            text: rcd_script(&v),
            enable: vec![cmd(&["sysrc", &format!("{s}_enable=YES")])],
            disable: vec![cmd(&["sysrc", "-x", &format!("{s}_enable")])],
            after_remove: vec![],
            service,
        },
        Init::Launchd => {
            let file = format!("/Library/LaunchDaemons/{s}.plist");
            Plan {
                init,
                mode: 0o644,
                text: launchd_plist(&v),
                enable: vec![cmd(&["launchctl", "load", "-w", &file])],
                disable: vec![cmd(&["launchctl", "unload", "-w", &file])],
                after_remove: vec![],
                file: PathBuf::from(file),
                service,
            }
        }
    };
    Ok(plan)
}

/// The checked values a unit is made of.
struct Values<'a> {
    user: &'a str,
    home: &'a str,
    binary: &'a str,
    path: &'a str,
    service: &'a str,
}

fn header(comment: &str, v: &Values, init: &str) -> String {
    format!(
        "{comment} corral's boot unit for user {user}, written by `corral startup {init}`.\n\
         {comment} Remove it with `corral unstartup {init} -u {user}`.\n",
        user = v.user
    )
}

/// systemd's specifiers (`%h`…) are expanded in most settings: a literal
/// `%` is `%%`.
fn sd_escape_specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// One word of an `Exec*=` line: `$` and `%` escaped, quoted when it holds
/// blanks, quotes or backslashes.
fn sd_exec_word(s: &str) -> String {
    let s = sd_escape_specifiers(s).replace('$', "$$");
    if s.chars().any(|c| c.is_whitespace() || "\"'\\;".contains(c)) {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

/// An `Environment=` assignment, quoted when it needs to be.
fn sd_env(key: &str, value: &str) -> String {
    let a = sd_escape_specifiers(&format!("{key}={value}"));
    if a.chars().any(|c| c.is_whitespace() || "\"'\\".contains(c)) {
        format!(
            "Environment=\"{}\"",
            a.replace('\\', "\\\\").replace('"', "\\\"")
        )
    } else {
        format!("Environment={a}")
    }
}

fn systemd_unit(v: &Values) -> String {
    let bin = sd_exec_word(v.binary);
    let mut s = header("#", v, "systemd");
    let _ = write!(
        s,
        "[Unit]\n\
         Description=corral process manager ({user})\n\
         After=network.target\n\
         \n\
         [Service]\n\
         # The daemon says READY=1 on $NOTIFY_SOCKET once it serves its socket.\n\
         Type=notify\n\
         NotifyAccess=main\n\
         User={user}\n\
         {home}\n\
         {path}\n\
         ExecStart={bin} daemon --no-daemon\n\
         # The saved list, once the daemon is ready; `-`: no dump yet is no failure.\n\
         ExecStartPost=-{bin} resurrect\n\
         ExecReload={bin} reload all\n\
         # systemd signals the daemon only; it stops its apps itself, each with\n\
         # its own stop signal and kill timeout.\n\
         KillMode=process\n\
         Restart=on-failure\n\
         LimitNOFILE=infinity\n\
         # The daemon pings WATCHDOG=1 at half this interval while its loop runs.\n\
         #WatchdogSec=30s\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        user = v.user,
        home = sd_env("CORRAL_HOME", v.home),
        path = sd_env("PATH", v.path),
    );
    s
}

/// A word for `sh`: as is when it is plainly safe, else single-quoted.
pub fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:,+=@%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The command line (for `sh -c`, run as the user) that runs corral with
/// its home and PATH; the verb is appended.
fn inner_command(v: &Values) -> String {
    format!(
        "CORRAL_HOME={} PATH={} exec {}",
        sh_quote(v.home),
        sh_quote(v.path),
        sh_quote(v.binary)
    )
}

fn openrc_script(v: &Values) -> String {
    let mut s = String::from("#!/sbin/openrc-run\n");
    s.push_str(&header("#", v, "openrc"));
    let _ = write!(
        s,
        "\n\
         description=\"corral process manager ({user})\"\n\
         extra_started_commands=\"reload\"\n\
         \n\
         corral_user={quser}\n\
         corral_cmd={cmd}\n\
         \n\
         depend() {{\n\
         \tneed net localmount\n\
         \tafter bootmisc\n\
         }}\n\
         \n\
         # corral, as the user, with its CORRAL_HOME and PATH.\n\
         as_user() {{\n\
         \tsu -s /bin/sh -c \"$corral_cmd $*\" \"$corral_user\"\n\
         }}\n\
         \n\
         start() {{\n\
         \tebegin \"Starting corral for $corral_user\"\n\
         \t# ping starts the daemon and returns once it serves.\n\
         \tas_user ping >/dev/null\n\
         \teend $? || return 1\n\
         \tas_user resurrect >/dev/null || ewarn \"corral: nothing resurrected (no saved list yet?)\"\n\
         \treturn 0\n\
         }}\n\
         \n\
         stop() {{\n\
         \tebegin \"Stopping corral for $corral_user\"\n\
         \t# Save the list first, as SIGTERM does under systemd (an empty\n\
         \t# list never replaces a saved one).\n\
         \tas_user dump >/dev/null 2>&1\n\
         \tas_user kill >/dev/null\n\
         \teend $?\n\
         }}\n\
         \n\
         reload() {{\n\
         \tebegin \"Reloading the apps of $corral_user\"\n\
         \tas_user reload all >/dev/null\n\
         \teend $?\n\
         }}\n",
        user = v.user,
        quser = sh_quote(v.user),
        cmd = sh_quote(&inner_command(v)),
    );
    s
}

fn sysv_script(v: &Values) -> String {
    let mut s = String::from("#!/bin/sh\n");
    let _ = write!(
        s,
        "### BEGIN INIT INFO\n\
         # Provides:          {service}\n\
         # Required-Start:    $local_fs $remote_fs $network\n\
         # Required-Stop:     $local_fs $remote_fs $network\n\
         # Default-Start:     2 3 4 5\n\
         # Default-Stop:      0 1 6\n\
         # Short-Description: corral process manager ({user})\n\
         ### END INIT INFO\n\
         # chkconfig: 2345 90 10\n\
         # description: corral process manager ({user})\n",
        service = v.service,
        user = v.user,
    );
    s.push_str(&header("#", v, "sysv"));
    let _ = write!(
        s,
        "\n\
         corral_user={quser}\n\
         corral_cmd={cmd}\n\
         corral_socket={socket}\n\
         \n\
         # corral, as the user, with its CORRAL_HOME and PATH.\n\
         as_user() {{\n\
         \tsu -s /bin/sh -c \"$corral_cmd $*\" \"$corral_user\"\n\
         }}\n\
         \n\
         case \"$1\" in\n\
         start)\n\
         \techo \"Starting corral for $corral_user\"\n\
         \t# ping starts the daemon and returns once it serves.\n\
         \tas_user ping >/dev/null || exit 1\n\
         \tas_user resurrect >/dev/null || echo \"corral: nothing resurrected (no saved list yet?)\"\n\
         \t;;\n\
         stop)\n\
         \techo \"Stopping corral for $corral_user\"\n\
         \t# Save the list first, as SIGTERM does under systemd (an empty\n\
         \t# list never replaces a saved one).\n\
         \tas_user dump >/dev/null 2>&1\n\
         \tas_user kill\n\
         \t;;\n\
         restart | force-reload)\n\
         \t\"$0\" stop\n\
         \t\"$0\" start\n\
         \t;;\n\
         reload)\n\
         \tas_user reload all >/dev/null\n\
         \t;;\n\
         status)\n\
         \tif [ -S \"$corral_socket\" ]; then\n\
         \t\tas_user ls\n\
         \telse\n\
         \t\techo \"corral is not running for $corral_user\"\n\
         \t\texit 3\n\
         \tfi\n\
         \t;;\n\
         *)\n\
         \techo \"Usage: $0 {{start|stop|restart|reload|force-reload|status}}\" >&2\n\
         \texit 2\n\
         \t;;\n\
         esac\n",
        quser = sh_quote(v.user),
        cmd = sh_quote(&inner_command(v)),
        socket = sh_quote(&format!("{}/corral.sock", v.home)),
    );
    s
}

fn rcd_script(v: &Values) -> String {
    let mut s = String::from("#!/bin/sh\n");
    let _ = write!(
        s,
        "# PROVIDE: {service}\n\
         # REQUIRE: LOGIN\n\
         # KEYWORD: shutdown\n",
        service = v.service
    );
    s.push_str(&header("#", v, "rcd"));
    let _ = write!(
        s,
        "\n\
         . /etc/rc.subr\n\
         \n\
         name={service}\n\
         rcvar={service}_enable\n\
         start_cmd=corral_start\n\
         stop_cmd=corral_stop\n\
         reload_cmd=corral_reload\n\
         extra_commands=reload\n\
         \n\
         corral_user={quser}\n\
         corral_home={home}\n\
         corral_path={path}\n\
         corral_cmd={cmd}\n\
         \n\
         # corral, as the user, with its CORRAL_HOME and PATH.\n\
         as_user() {{\n\
         \tenv CORRAL_HOME=\"$corral_home\" PATH=\"$corral_path\" su -m \"$corral_user\" -c \"$corral_cmd $*\"\n\
         }}\n\
         \n\
         corral_start() {{\n\
         \techo \"Starting corral for $corral_user\"\n\
         \t# ping starts the daemon and returns once it serves.\n\
         \tas_user ping >/dev/null || return 1\n\
         \tas_user resurrect >/dev/null || echo \"corral: nothing resurrected (no saved list yet?)\"\n\
         }}\n\
         \n\
         corral_stop() {{\n\
         \techo \"Stopping corral for $corral_user\"\n\
         \t# Save the list first, as SIGTERM does under systemd (an empty\n\
         \t# list never replaces a saved one).\n\
         \tas_user dump >/dev/null 2>&1\n\
         \tas_user kill\n\
         }}\n\
         \n\
         corral_reload() {{\n\
         \tas_user reload all >/dev/null\n\
         }}\n\
         \n\
         load_rc_config $name\n\
         : ${{{service}_enable:=NO}}\n\
         run_rc_command \"$1\"\n",
        service = v.service,
        quser = sh_quote(v.user),
        home = sh_quote(v.home),
        path = sh_quote(v.path),
        cmd = sh_quote(&format!("exec {}", sh_quote(v.binary))),
    );
    s
}

/// Text for an XML element.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn launchd_plist(v: &Values) -> String {
    let bin = sh_quote(v.binary);
    let run = xml_escape(&format!("{bin} ping >/dev/null && exec {bin} resurrect"));
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <!-- corral's boot unit for user {user}, written by `corral startup launchd`.\n     \
         Remove it with `corral unstartup launchd -u {user}`. -->\n\
         <plist version=\"1.0\">\n\
         <dict>\n\
         \t<key>Label</key>\n\
         \t<string>{service}</string>\n\
         \t<key>UserName</key>\n\
         \t<string>{user}</string>\n\
         \t<key>ProgramArguments</key>\n\
         \t<array>\n\
         \t\t<string>/bin/sh</string>\n\
         \t\t<string>-c</string>\n\
         \t\t<string>{run}</string>\n\
         \t</array>\n\
         \t<key>RunAtLoad</key>\n\
         \t<true/>\n\
         \t<key>EnvironmentVariables</key>\n\
         \t<dict>\n\
         \t\t<key>CORRAL_HOME</key>\n\
         \t\t<string>{home}</string>\n\
         \t\t<key>PATH</key>\n\
         \t\t<string>{path}</string>\n\
         \t</dict>\n\
         \t<key>StandardOutPath</key>\n\
         \t<string>{log}</string>\n\
         \t<key>StandardErrorPath</key>\n\
         \t<string>{log}</string>\n\
         </dict>\n\
         </plist>\n",
        user = xml_escape(v.user),
        service = xml_escape(v.service),
        home = xml_escape(v.home),
        path = xml_escape(v.path),
        log = xml_escape(&format!("{}/launchd.log", v.home)),
    )
}

/// The command a user without root is told to run (`$PATH` is left for
/// their shell to expand, as PM2 does): the same verb, as root, for them;
/// `env` are more variables to pass (`CORRAL_HOME`), `flags` more options.
pub fn sudo_command(
    binary: &Path,
    verb: &str,
    init: Init,
    user: &str,
    env: &[(&str, &str)],
    flags: &[&str],
) -> String {
    let mut s = String::from("sudo env PATH=\"$PATH\"");
    for (k, v) in env {
        s.push_str(&format!(" {k}={}", sh_quote(v)));
    }
    s.push_str(&format!(
        " {} {verb} {} -u {}",
        sh_quote(&binary.to_string_lossy()),
        init.name(),
        sh_quote(user)
    ));
    for f in flags {
        s.push(' ');
        s.push_str(&sh_quote(f));
    }
    s
}

/// A command as a shell line, for people to read.
pub fn show_cmd(c: &[String]) -> String {
    c.iter().map(|w| sh_quote(w)).collect::<Vec<_>>().join(" ")
}

/// `path` under `root` (`None`: as is).
pub fn rooted(root: Option<&Path>, path: &Path) -> PathBuf {
    match root {
        Some(r) => r.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

// ---- side effects ----------------------------------------------------------

/// Write `text` to `path` with `mode`, atomically (a `.tmp` beside it,
/// fsync, rename), creating missing parent directories 0755.
pub fn write_unit(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    // The umask may have narrowed the mode given at creation.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Run one command, its output passed through; an error names it.
pub fn run_cmd(c: &[String]) -> Result<(), String> {
    let Some((prog, args)) = c.split_first() else {
        return Ok(());
    };
    match std::process::Command::new(prog).args(args).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`{}` failed ({s})", show_cmd(c))),
        Err(e) => Err(format!("cannot run `{}`: {e}", show_cmd(c))),
    }
}

/// What saving the list at startup came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Saved {
    /// The daemon wrote its dump: where, and how many apps.
    Dumped { path: String, count: u64 },
    /// No daemon answers on the socket: nothing to save.
    NoDaemon,
    /// The daemon does not know `dump` yet.
    Unsupported,
    /// The daemon refused, or the exchange failed.
    Failed(String),
}

/// `startup` saves the current list by sending `dump` to the daemon on
/// `socket` — possibly another user's, as `startup` runs as root — never
/// launching one, and with a timeout (`SAVE_TIMEOUT`), which `Client`
/// has not: a daemon that does not answer must not hang the install. A
/// daemon older than `dump` answers `Saved::Unsupported`.
pub fn save_list(socket: &Path) -> Saved {
    let mut stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(s) => s,
        Err(_) => return Saved::NoDaemon,
    };
    let _ = stream.set_read_timeout(Some(SAVE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(SAVE_TIMEOUT));
    if let Err(e) = stream.write_all(b"{\"id\":1,\"cmd\":\"dump\"}\n") {
        return Saved::Failed(format!("cannot send dump to {}: {e}", socket.display()));
    }
    let mut line = String::new();
    if let Err(e) = BufReader::new(&stream).read_line(&mut line) {
        return Saved::Failed(format!("no answer to dump from {}: {e}", socket.display()));
    }
    saved_from_answer(&line)
}

/// Read the daemon's answer to `dump`.
pub fn saved_from_answer(line: &str) -> Saved {
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Saved::Failed(format!("unreadable answer to dump: {e}")),
    };
    let at = |p: &str| v.pointer(p).cloned().unwrap_or_default();
    if at("/ok") == serde_json::Value::Bool(true) {
        return Saved::Dumped {
            path: at("/result/path").as_str().unwrap_or("").to_string(),
            count: at("/result/count").as_u64().unwrap_or(0),
        };
    }
    match at("/error/code").as_str() {
        Some("unknown_command") => Saved::Unsupported,
        _ => Saved::Failed(
            at("/error/message")
                .as_str()
                .unwrap_or("the daemon refused dump")
                .to_string(),
        ),
    }
}

// ---- the daemon under systemd ---------------------------------------------

/// Send `state` (`READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=…`, lines
/// joined by `\n`) to the socket named by `$NOTIFY_SOCKET` (a path, or
/// `@name` for the abstract namespace). `Ok(false)` when it is unset or
/// empty: not started by systemd with `Type=notify`.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(addr) if !addr.is_empty() => {
            notify_to(&addr.to_string_lossy(), state)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Send one datagram to a `NOTIFY_SOCKET` address.
pub fn notify_to(addr: &str, state: &str) -> io::Result<()> {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let to = match addr.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None if addr.starts_with('/') => SocketAddr::from_pathname(addr)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET `{addr}` is neither a path nor @abstract"),
            ));
        }
    };
    // std opens it with SOCK_CLOEXEC.
    let sock = UnixDatagram::unbound()?;
    let n = sock.send_to_addr(state.as_bytes(), &to)?;
    if n != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "NOTIFY_SOCKET took part of the datagram",
        ));
    }
    Ok(())
}

/// systemd's watchdog timeout for this process (`WATCHDOG_USEC`, when
/// `WATCHDOG_PID` is unset or names this process); ping `WATCHDOG=1` at
/// half of it.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] from its variables' values.
pub fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(p) = pid
        && p.trim().parse::<u32>().ok()? != my_pid
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(user: &str) -> Unit {
        Unit {
            user: user.into(),
            home: PathBuf::from(format!("/home/{user}/.corral")),
            binary: PathBuf::from("/usr/local/bin/corral"),
            path_env: "/usr/local/bin:/usr/bin:/bin".into(),
            service: None,
            sysv_tool: SysvTool::UpdateRcD,
        }
    }

    #[test]
    fn platform_names_map_to_init_systems() {
        let table = [
            ("systemd", Ok(Init::Systemd)),
            ("ubuntu", Ok(Init::Systemd)),
            ("centos", Ok(Init::Systemd)),
            ("redhat", Ok(Init::Systemd)),
            ("gentoo", Ok(Init::Openrc)),
            ("openrc", Ok(Init::Openrc)),
            ("amazon", Ok(Init::Sysv)),
            ("upstart", Ok(Init::Sysv)),
            ("sysv", Ok(Init::Sysv)),
            ("systemv", Ok(Init::Sysv)),
            ("darwin", Ok(Init::Launchd)),
            ("launchd", Ok(Init::Launchd)),
            ("freebsd", Ok(Init::Rcd)),
            ("rcd", Ok(Init::Rcd)),
            ("smf", Err("not supported")),
            ("openbsd", Err("not supported")),
            ("windows", Err("unknown platform `windows`")),
        ];
        for (name, want) in table {
            match (Init::from_name(name), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{name}"),
                (Err(e), Err(part)) => assert!(e.contains(part), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn detection_follows_the_signs_in_order() {
        let table: &[(&[&str], Option<Init>)] = &[
            (
                &["run/systemd/system", "sbin/openrc-run"],
                Some(Init::Systemd),
            ),
            (&["sbin/openrc-run"], Some(Init::Openrc)),
            (&["run/openrc"], Some(Init::Openrc)),
            (&["etc/rc.subr"], Some(Init::Rcd)),
            (&["bin/launchctl"], Some(Init::Launchd)),
            (&["usr/sbin/update-rc.d"], Some(Init::Sysv)),
            (&["sbin/chkconfig"], Some(Init::Sysv)),
            (&[], None),
        ];
        for (present, want) in table {
            let got = Init::detect(&|p| present.contains(&p));
            assert_eq!(got, *want, "{present:?}");
        }
        assert_eq!(
            SysvTool::detect(&|p| p == "usr/sbin/update-rc.d"),
            SysvTool::UpdateRcD
        );
        assert_eq!(SysvTool::detect(&|_| false), SysvTool::Chkconfig);
    }

    #[test]
    fn systemd_unit_has_its_key_lines() {
        let p = plan(Init::Systemd, &unit("alice")).unwrap();
        assert_eq!(
            p.file,
            Path::new("/etc/systemd/system/corral-alice.service")
        );
        assert_eq!(p.mode, 0o644);
        for line in [
            "[Unit]",
            "After=network.target",
            "[Service]",
            "Type=notify",
            "User=alice",
            "Environment=CORRAL_HOME=/home/alice/.corral",
            "Environment=PATH=/usr/local/bin:/usr/bin:/bin",
            "ExecStart=/usr/local/bin/corral daemon --no-daemon",
            "ExecStartPost=-/usr/local/bin/corral resurrect",
            "ExecReload=/usr/local/bin/corral reload all",
            "KillMode=process",
            "Restart=on-failure",
            "[Install]",
            "WantedBy=multi-user.target",
        ] {
            assert!(
                p.text.lines().any(|l| l == line),
                "no `{line}` in\n{}",
                p.text
            );
        }
        assert!(!p.text.contains("PIDFile"), "{}", p.text);
        assert_eq!(
            p.enable,
            vec![
                cmd(&["systemctl", "daemon-reload"]),
                cmd(&["systemctl", "enable", "corral-alice.service"])
            ]
        );
        assert_eq!(
            p.disable,
            vec![cmd(&["systemctl", "disable", "corral-alice.service"])]
        );
        assert_eq!(p.after_remove, vec![cmd(&["systemctl", "daemon-reload"])]);
    }

    #[test]
    fn systemd_values_are_escaped() {
        let mut u = unit("bob");
        u.home = PathBuf::from("/srv/my home/100%/.corral");
        u.binary = PathBuf::from("/opt/my bin/$corral");
        let p = plan(Init::Systemd, &u).unwrap();
        assert!(
            p.text
                .contains("Environment=\"CORRAL_HOME=/srv/my home/100%%/.corral\""),
            "{}",
            p.text
        );
        assert!(
            p.text
                .contains("ExecStart=\"/opt/my bin/$$corral\" daemon --no-daemon"),
            "{}",
            p.text
        );
    }

    #[test]
    fn openrc_script_runs_corral_as_the_user() {
        let p = plan(Init::Openrc, &unit("alice")).unwrap();
        assert_eq!(p.file, Path::new("/etc/init.d/corral-alice"));
        assert_eq!(p.mode, 0o755);
        assert!(p.text.starts_with("#!/sbin/openrc-run\n"));
        for line in [
            "corral_user=alice",
            "corral_cmd='CORRAL_HOME=/home/alice/.corral PATH=/usr/local/bin:/usr/bin:/bin exec /usr/local/bin/corral'",
            "\tsu -s /bin/sh -c \"$corral_cmd $*\" \"$corral_user\"",
            "\tas_user ping >/dev/null",
            "\tas_user dump >/dev/null 2>&1",
            "\tas_user kill >/dev/null",
            "\tneed net localmount",
        ] {
            assert!(
                p.text.lines().any(|l| l == line),
                "no `{line}` in\n{}",
                p.text
            );
        }
        assert!(p.text.contains("as_user resurrect"));
        assert_eq!(
            p.enable,
            vec![cmd(&["rc-update", "add", "corral-alice", "default"])]
        );
        assert_eq!(
            p.disable,
            vec![cmd(&["rc-update", "del", "corral-alice", "default"])]
        );
    }

    #[test]
    fn sysv_script_has_lsb_and_chkconfig_headers() {
        let p = plan(Init::Sysv, &unit("alice")).unwrap();
        assert_eq!(p.file, Path::new("/etc/init.d/corral-alice"));
        for line in [
            "#!/bin/sh",
            "### BEGIN INIT INFO",
            "# Provides:          corral-alice",
            "# Default-Start:     2 3 4 5",
            "### END INIT INFO",
            "# chkconfig: 2345 90 10",
            "corral_socket=/home/alice/.corral/corral.sock",
            "\tas_user ping >/dev/null || exit 1",
            "\tas_user dump >/dev/null 2>&1",
            "\tas_user kill",
        ] {
            assert!(
                p.text.lines().any(|l| l == line),
                "no `{line}` in\n{}",
                p.text
            );
        }
        assert_eq!(
            p.enable,
            vec![cmd(&["update-rc.d", "corral-alice", "defaults"])]
        );
        let mut u = unit("alice");
        u.sysv_tool = SysvTool::Chkconfig;
        let p = plan(Init::Sysv, &u).unwrap();
        assert_eq!(
            p.enable,
            vec![
                cmd(&["chkconfig", "--add", "corral-alice"]),
                cmd(&["chkconfig", "corral-alice", "on"])
            ]
        );
        assert_eq!(
            p.disable,
            vec![cmd(&["chkconfig", "--del", "corral-alice"])]
        );
    }

    #[test]
    fn rcd_script_names_a_shell_variable() {
        let p = plan(Init::Rcd, &unit("web-app.1")).unwrap();
        assert_eq!(p.service, "corral_web_app_1");
        assert_eq!(p.file, Path::new("/usr/local/etc/rc.d/corral_web_app_1"));
        for line in [
            "# PROVIDE: corral_web_app_1",
            "# KEYWORD: shutdown",
            ". /etc/rc.subr",
            "name=corral_web_app_1",
            "rcvar=corral_web_app_1_enable",
            "corral_user=web-app.1",
            "corral_home=/home/web-app.1/.corral",
            "corral_cmd='exec /usr/local/bin/corral'",
            ": ${corral_web_app_1_enable:=NO}",
            "run_rc_command \"$1\"",
        ] {
            assert!(
                p.text.lines().any(|l| l == line),
                "no `{line}` in\n{}",
                p.text
            );
        }
        assert_eq!(
            p.enable,
            vec![cmd(&["sysrc", "corral_web_app_1_enable=YES"])]
        );
        assert_eq!(
            p.disable,
            vec![cmd(&["sysrc", "-x", "corral_web_app_1_enable"])]
        );
    }

    #[test]
    fn launchd_plist_is_escaped_xml() {
        let mut u = unit("alice");
        u.home = PathBuf::from("/Users/a&b/.corral");
        let p = plan(Init::Launchd, &u).unwrap();
        assert_eq!(
            p.file,
            Path::new("/Library/LaunchDaemons/com.corral.alice.plist")
        );
        for line in [
            "\t<string>com.corral.alice</string>",
            "\t<key>UserName</key>",
            "\t\t<string>/usr/local/bin/corral ping &gt;/dev/null &amp;&amp; exec /usr/local/bin/corral resurrect</string>",
            "\t\t<string>/Users/a&amp;b/.corral</string>",
            "\t<key>RunAtLoad</key>",
        ] {
            assert!(
                p.text.lines().any(|l| l == line),
                "no `{line}` in\n{}",
                p.text
            );
        }
        assert_eq!(
            p.enable,
            vec![cmd(&[
                "launchctl",
                "load",
                "-w",
                "/Library/LaunchDaemons/com.corral.alice.plist"
            ])]
        );
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        type Change = fn(&mut Unit);
        let table: &[(Change, &str)] = &[
            (|u| u.user = "al\nice".into(), "bad user name"),
            (|u| u.user = "-x".into(), "bad user name"),
            (|u| u.user = String::new(), "bad user name"),
            (
                |u| u.home = PathBuf::from("/home/a\n[Service]"),
                "home `/home/a\\n[Service]` holds a control character",
            ),
            (
                |u| u.home = PathBuf::from("rel/.corral"),
                "not an absolute path",
            ),
            (
                |u| u.binary = PathBuf::from("corral"),
                "corral binary corral is not an absolute path",
            ),
            (|u| u.path_env = "/bin\r".into(), "PATH"),
            (|u| u.service = Some("a/b".into()), "bad service name `a/b`"),
        ];
        for (change, want) in table {
            let mut u = unit("alice");
            change(&mut u);
            for init in [
                Init::Systemd,
                Init::Openrc,
                Init::Sysv,
                Init::Rcd,
                Init::Launchd,
            ] {
                let e = plan(init, &u).unwrap_err();
                assert!(e.contains(want), "{init:?}: {e}");
            }
        }
    }

    #[test]
    fn scripts_parse_as_sh() {
        let mut u = unit("alice");
        u.home = PathBuf::from("/home/o'brien/my apps");
        for init in [Init::Openrc, Init::Sysv, Init::Rcd] {
            let p = plan(init, &u).unwrap();
            let out = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(&p.text)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{init:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                p.text
            );
        }
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        let table = [
            ("/usr/bin/corral", "/usr/bin/corral"),
            ("a b", "'a b'"),
            ("it's", "'it'\\''s'"),
            ("$HOME", "'$HOME'"),
            ("", "''"),
        ];
        for (s, want) in table {
            assert_eq!(sh_quote(s), want, "{s}");
        }
        // What sh makes of it is the value again.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh_quote("a 'b' $c \"d\" \\e")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a 'b' $c \"d\" \\e");
    }

    #[test]
    fn sudo_command_is_what_pm2_prints() {
        let bin = Path::new("/usr/local/bin/corral");
        let c = sudo_command(
            bin,
            "startup",
            Init::Systemd,
            "alice",
            &[],
            &["--hp", "/home/alice"],
        );
        assert_eq!(
            c,
            "sudo env PATH=\"$PATH\" /usr/local/bin/corral startup systemd -u alice --hp /home/alice"
        );
        let c = sudo_command(
            bin,
            "unstartup",
            Init::Openrc,
            "bob",
            &[("CORRAL_HOME", "/srv/my apps")],
            &[],
        );
        assert_eq!(
            c,
            "sudo env PATH=\"$PATH\" CORRAL_HOME='/srv/my apps' /usr/local/bin/corral unstartup openrc -u bob"
        );
    }

    #[test]
    fn rooted_paths_stay_under_the_root() {
        assert_eq!(
            rooted(Some(Path::new("/tmp/r")), Path::new("/etc/init.d/x")),
            Path::new("/tmp/r/etc/init.d/x")
        );
        assert_eq!(rooted(None, Path::new("/etc/x")), Path::new("/etc/x"));
    }

    #[test]
    fn dump_answers_are_read() {
        let table = [
            (
                r#"{"id":1,"ok":true,"result":{"path":"/h/dump.json","count":3}}"#,
                Saved::Dumped {
                    path: "/h/dump.json".into(),
                    count: 3,
                },
            ),
            (
                r#"{"id":1,"ok":false,"error":{"code":"unknown_command","message":"unknown command dump"}}"#,
                Saved::Unsupported,
            ),
            (
                r#"{"id":1,"ok":false,"error":{"code":"internal","message":"disk full"}}"#,
                Saved::Failed("disk full".into()),
            ),
        ];
        for (line, want) in table {
            assert_eq!(saved_from_answer(line), want, "{line}");
        }
        assert!(matches!(saved_from_answer("nope"), Saved::Failed(_)));
        let dir = std::env::temp_dir().join(format!("corral-save-{}", std::process::id()));
        assert_eq!(save_list(&dir.join("none.sock")), Saved::NoDaemon);
    }

    #[test]
    fn watchdog_is_read_from_its_variables() {
        let table = [
            (Some("30000000"), None, Some(Duration::from_secs(30))),
            (Some("30000000"), Some("42"), Some(Duration::from_secs(30))),
            (Some("30000000"), Some("43"), None),
            (Some("0"), None, None),
            (Some("x"), None, None),
            (None, Some("42"), None),
            (Some("500000"), Some("junk"), None),
        ];
        for (usec, pid, want) in table {
            assert_eq!(parse_watchdog(usec, pid, 42), want, "{usec:?} {pid:?}");
        }
    }

    #[test]
    fn notify_reaches_a_path_and_an_abstract_socket() {
        use std::os::unix::net::UnixDatagram;
        let path = std::env::temp_dir().join(format!("corral-sdn-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_file(&path);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("corral-sdn-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(notify_to("relative.sock", "READY=1").is_err());
    }
}
