//! Config files: which paths are config files rather than scripts, and
//! reading one into the JSON value it stands for. The shapes of that value
//! (`{"apps": [...]}`, an array, one app) are `options::apps_of_config`'s.
//!
//! A path is a config file, as PM2 decides (`Common.isConfigFile`), when its
//! name ends in `.json`, `.json5`, `.yml`, `.yaml`, `.config.js`,
//! `.config.cjs` or `.config.mjs`; and, unlike PM2 (which would run it as an
//! app, never what was meant), when it is named `ecosystem*.js`, `.cjs` or
//! `.mjs`. PM2 matches these anywhere in the name; corral matches the end,
//! so `app.json.sh` is a script.
//!
//! `.json` is read by `relaxed_json` (PM2 evaluates it as JavaScript, so
//! comments, trailing commas and unquoted keys are common), `.yml`/`.yaml`
//! by `mini_yaml`. A JavaScript config is evaluated by `node`, as PM2 loads
//! it: `require` for CommonJS (`.js`, `.cjs`), dynamic `import` for ESM
//! (`.mjs`, or a `.js` that `require` refuses as ESM), the module's default
//! export when it is an ES module. This runs in a short child process of
//! the client, never in the daemon: the child prints the exported value as
//! JSON (functions and `undefined` dropped, as `JSON.stringify` drops them)
//! after a marker, so what the config itself prints does not corrupt it
//! (it is passed on to stderr, as is what it writes there). The child is killed after
//! [`EVAL_TIMEOUT`].

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::Value;

use crate::{mini_yaml, relaxed_json};

/// How long a JavaScript config may take to evaluate.
pub(crate) const EVAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes read from a config file, or from node evaluating one.
pub(crate) const MAX_CONFIG_SIZE: usize = 16 << 20;
/// Most bytes of node's error output quoted in an error.
const MAX_ERROR_QUOTE: usize = 4096;
/// Put before the JSON on node's stdout.
const MARKER: &str = "\u{0}corral-config\u{0}";

/// How a config file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Json,
    Yaml,
    /// JavaScript, evaluated by node.
    Js,
}

/// The kind of config file `path` is, or `None` for a script.
pub(crate) fn kind_of(path: &str) -> Option<Kind> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ends = |suffixes: &[&str]| suffixes.iter().any(|s| name.ends_with(s) && name != *s);
    if ends(&[".json", ".json5"]) {
        Some(Kind::Json)
    } else if ends(&[".yml", ".yaml"]) {
        Some(Kind::Yaml)
    } else if ends(&[".config.js", ".config.cjs", ".config.mjs"])
        || (name.starts_with("ecosystem") && ends(&[".js", ".cjs", ".mjs"]))
    {
        Some(Kind::Js)
    } else {
        None
    }
}

/// The value a config file stands for. Errors name the file (as given)
/// and, for a syntax error, the line.
pub(crate) fn read(path: &Path) -> Result<Value, String> {
    let label = path.display().to_string();
    let kind = kind_of(&label).unwrap_or(Kind::Json);
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {label}: {e}"))?;
    if meta.len() > MAX_CONFIG_SIZE as u64 {
        return Err(format!(
            "{label}: larger than {} MiB",
            MAX_CONFIG_SIZE >> 20
        ));
    }
    if kind == Kind::Js {
        return eval_js(path, &label);
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {label}: {e}"))?;
    parse_text(&text, kind, &label)
}

/// The value of config text read elsewhere (stdin): YAML unless it starts
/// (after blanks and `//` or `/*` comments) with `{` or `[`, then JSON as
/// PM2 reads it.
pub(crate) fn parse_stdin(text: &str, label: &str) -> Result<Value, String> {
    let kind = if looks_like_json(text) {
        Kind::Json
    } else {
        Kind::Yaml
    };
    parse_text(text, kind, label)
}

fn looks_like_json(text: &str) -> bool {
    let mut rest = text.trim_start_matches('\u{feff}').trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r
                .split_once('\n')
                .map_or("", |(_, after)| after)
                .trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r
                .split_once("*/")
                .map_or("", |(_, after)| after)
                .trim_start();
        } else {
            return rest.starts_with(['{', '[']);
        }
    }
}

fn parse_text(text: &str, kind: Kind, label: &str) -> Result<Value, String> {
    let parsed = match kind {
        Kind::Yaml => mini_yaml::parse(text),
        _ => relaxed_json::parse(text),
    };
    parsed.map_err(|e| format!("{label} {e}"))
}

/// The program node runs: load the config named by its first argument and
/// print the marker and the exported value as JSON.
const LOADER: &str = r#"'use strict';
const path = require('path');
const url = require('url');
const file = path.resolve(process.argv[1]);
const MARKER = '\u0000corral-config\u0000';
const isModule = (m) => Object.prototype.toString.call(m) === '[object Module]';
const unwrap = (m) => (isModule(m) ? (m.default !== undefined ? m.default : { ...m }) : m);
async function load() {
  if (!/\.mjs$/.test(file)) {
    try {
      return unwrap(require(file));
    } catch (e) {
      if (!e || e.code !== 'ERR_REQUIRE_ESM') throw e;
    }
  }
  return unwrap(await import(url.pathToFileURL(file).href));
}
load()
  .then((conf) => {
    const json = JSON.stringify(conf === undefined ? null : conf);
    process.stdout.write(MARKER + (json === undefined ? 'null' : json) + '\n', () =>
      process.exit(0));
  })
  .catch((e) => {
    process.stderr.write(String((e && e.stack) || e) + '\n', () => process.exit(1));
  });
"#;

/// Evaluate a JavaScript config with node.
fn eval_js(path: &Path, label: &str) -> Result<Value, String> {
    let mut child = Command::new("node")
        .arg("-e")
        .arg(LOADER)
        // After `--`, a path starting with `-` is not taken for an option.
        .arg("--")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!(
                "{label}: a JavaScript config is evaluated with node, \
                 and node is not on PATH (install it, or write the config as .json or .yml)"
            ),
            _ => format!("{label}: cannot run node to evaluate it: {e}"),
        })?;
    let (out, err) = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), Some(err)) => (out, err),
        _ => return Err(format!("{label}: cannot read node's output")),
    };
    let read = read_both(out, err, Instant::now() + EVAL_TIMEOUT);
    if read.is_err() {
        // Ours to end: the child we just started, by its handle.
        let _ = child.kill();
    }
    let status = child.wait();
    let (out, err) = read.map_err(|e| format!("{label}: {e}"))?;
    let status = status.map_err(|e| format!("{label}: waiting for node: {e}"))?;
    let out = String::from_utf8_lossy(&out);
    let (printed, json) = match out.rsplit_once(MARKER) {
        Some((printed, json)) if status.success() => (printed, Some(json)),
        _ => (out.as_ref(), None),
    };
    // What the config printed itself goes on, to stderr.
    let printed = printed.strip_suffix('\n').unwrap_or(printed);
    if !printed.is_empty() {
        let _ = writeln!(io::stderr(), "{printed}");
    }
    let err = String::from_utf8_lossy(&err);
    let Some(json) = json else {
        // node's own frames and the loader's say nothing about the config.
        let mut quote = err
            .lines()
            .filter(|l| {
                !(l.trim_start().starts_with("at ")
                    && (l.contains("node:internal") || l.contains("[eval]")))
            })
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_string();
        if quote.len() > MAX_ERROR_QUOTE {
            let mut cut = MAX_ERROR_QUOTE;
            while !quote.is_char_boundary(cut) {
                cut -= 1;
            }
            quote.truncate(cut);
            quote.push_str(" [...]");
        }
        let how = match status.code() {
            Some(code) => format!("exit status {code}"),
            None => "a signal".to_string(),
        };
        return Err(if quote.is_empty() {
            format!("{label}: evaluating it with node failed ({how})")
        } else {
            format!("{label}: evaluating it with node failed ({how}):\n{quote}")
        });
    };
    // What the config wrote to stderr (console.error, node's warnings).
    if !err.trim().is_empty() {
        let _ = write!(io::stderr(), "{err}");
    }
    serde_json::from_str(json.trim_end())
        .map_err(|e| format!("{label}: node printed a value that is not JSON: {e}"))
}

/// Everything on both pipes until both close, or an error at `deadline`.
fn read_both(
    mut out: impl Read + AsFd,
    mut err: impl Read + AsFd,
    deadline: Instant,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let mut chunk = [0u8; 8192];
    while out_open || err_open {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "node did not finish evaluating it within {} s",
                EVAL_TIMEOUT.as_secs()
            ));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let flags = |open: bool| match open {
            true => PollFlags::POLLIN,
            false => PollFlags::empty(),
        };
        let (out_ready, err_ready) = {
            let mut fds = [
                PollFd::new(out.as_fd(), flags(out_open)),
                PollFd::new(err.as_fd(), flags(err_open)),
            ];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("reading node's output: {e}")),
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        for (ready, open, src, buf) in [
            (
                out_ready,
                &mut out_open,
                &mut out as &mut dyn Read,
                &mut out_buf,
            ),
            (
                err_ready,
                &mut err_open,
                &mut err as &mut dyn Read,
                &mut err_buf,
            ),
        ] {
            if !(ready && *open) {
                continue;
            }
            match src.read(&mut chunk) {
                Ok(0) => *open = false,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading node's output: {e}")),
            }
            if buf.len() > MAX_CONFIG_SIZE {
                return Err(format!(
                    "node printed more than {} MiB",
                    MAX_CONFIG_SIZE >> 20
                ));
            }
        }
    }
    Ok((out_buf, err_buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_file_names() {
        let cases: &[(&str, Option<Kind>)] = &[
            ("ecosystem.config.js", Some(Kind::Js)),
            ("/srv/app/ecosystem.config.cjs", Some(Kind::Js)),
            ("pm2.config.mjs", Some(Kind::Js)),
            ("ecosystem.js", Some(Kind::Js)),
            ("ecosystem-prod.mjs", Some(Kind::Js)),
            ("./ecosystem.prod.cjs", Some(Kind::Js)),
            ("process.json", Some(Kind::Json)),
            ("a/b/apps.json5", Some(Kind::Json)),
            ("ecosystem.yml", Some(Kind::Yaml)),
            ("x.yaml", Some(Kind::Yaml)),
            ("app.js", None),
            ("server.mjs", None),
            ("config.js", None),
            ("ecosystem/app.js", None),
            ("app.json.sh", None),
            ("run.py", None),
            ("python3 -m http.server", None),
            (".json", None),
            ("ecosystem", None),
        ];
        for (path, want) in cases {
            assert_eq!(kind_of(path), *want, "path {path}");
        }
    }

    #[test]
    fn stdin_format() {
        let cases: &[(&str, Result<Value, &str>)] = &[
            (
                r#"{"apps":[{"script":"a"}]}"#,
                Ok(json!({"apps": [{"script": "a"}]})),
            ),
            (
                "// c\n/* d */ [{script: 'a',},]",
                Ok(json!([{"script": "a"}])),
            ),
            (
                "apps:\n  - script: a\n",
                Ok(json!({"apps": [{"script": "a"}]})),
            ),
            ("script: a\n", Ok(json!({"script": "a"}))),
            (
                "{\n  a: 1\n  b: 2}",
                Err("stdin line 3: expected `,` or `}` after the value of `a`, found `b`"),
            ),
            (
                "a: &x 1\n",
                Err("stdin line 1: anchors (&) are not supported"),
            ),
        ];
        for (text, want) in cases {
            let want = want.clone().map_err(str::to_string);
            assert_eq!(parse_stdin(text, "stdin"), want, "text {text:?}");
        }
    }
}
