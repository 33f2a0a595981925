//! The dump on disk: saving the table (`dump`, and on SIGTERM/SIGINT
//! before the apps are stopped) and bringing it back (`resurrect`). The
//! format is `crate::dump`'s; this module owns the file rules:
//!
//! - the file is `$DUMP_FILE_PATH` (of the daemon's environment; a relative
//!   path is taken from the home), else `<home>/dump.json`; a client never
//!   names it, so a root daemon never writes or reads a file a client chose;
//! - written through `.tmp`, fsync, rename, directory fsync, mode 0600;
//! - the file it replaces is kept as `.bak`, unless that one held no app
//!   (so an empty dump never pushes a good one out of `.bak`);
//! - an empty list never replaces a dump that holds apps unless forced,
//!   and on a signal an empty list writes nothing at all;
//! - `resurrect` reads the file, or `.bak` when the file is missing or
//!   unreadable, and installs every entry whose name is not in the table:
//!   what runs is left alone, so resurrecting twice changes nothing. Each
//!   keeps its pm_id when no app of this daemon ever had it. An app saved
//!   stopped comes back installed, not started. It inherits the daemon's
//!   environment with its `env` keys on top: the environment of the shell
//!   that first started it is not saved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;

use serde_json::Value;

use crate::app::{App, Slot};
use crate::dump::{self, Saved, Wanted};
use crate::options::parse_app;
use crate::protocol::{ErrorCode, Status, WireError};
use crate::state;
use crate::sys;

use super::requests::open_logs;
use super::schedule::check_watch;
use super::table::Entry;
use super::{Daemon, internal};

/// The environment variable naming the dump file (PM2's name).
pub const DUMP_PATH_ENV: &str = "DUMP_FILE_PATH";
/// The dump file in the home, without `DUMP_FILE_PATH`.
pub const DUMP_FILE: &str = "dump.json";
/// The dump file's mode: it holds the apps' `env`.
const DUMP_MODE: u32 = 0o600;

/// What a resurrect installed.
pub(super) struct Resurrected {
    pub ids: Vec<u32>,
    pub failed: Vec<WireError>,
    pub warnings: Vec<String>,
    /// How many entries were not in the table already.
    pub asked: usize,
}

/// `path` + `.bak`.
fn with_suffix(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

impl Daemon {
    /// The dump file.
    pub(super) fn dump_path(&self) -> PathBuf {
        match std::env::var_os(DUMP_PATH_ENV) {
            Some(p) if !p.is_empty() => self.home.dir.join(p),
            _ => self.home.dir.join(DUMP_FILE),
        }
    }

    /// Every app of the table as the dump keeps it (apps being deleted
    /// are left out).
    fn saved_apps(&self) -> Vec<Saved> {
        self.table
            .iter()
            .filter_map(|(pm_id, e)| saved_entry(pm_id, e))
            .collect()
    }

    /// `dump`: write the table to the dump file; its path and how many
    /// apps it holds.
    pub(super) fn save_dump(&mut self, force: bool) -> Result<(PathBuf, usize), WireError> {
        let apps = self.saved_apps();
        let path = self.dump_path();
        let refused = |m: String| WireError::new(ErrorCode::BadRequest, m);
        let previous = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(internal(&format!("cannot read {}: {e}", path.display())));
            }
        };
        // How many apps the previous dump holds (None: unreadable).
        let held = previous.as_ref().map(|b| {
            match dump::read(&String::from_utf8_lossy(b), &path.display().to_string()) {
                Ok(r) => Some(r.apps.len()),
                Err(_) if b.iter().all(u8::is_ascii_whitespace) => Some(0),
                Err(_) => None,
            }
        });
        if apps.is_empty() && !force {
            match held {
                Some(Some(0)) | None => {}
                Some(Some(n)) => {
                    return Err(refused(format!(
                        "no app to save: {} keeps its {n} apps (an empty list replaces it only with `corral dump --force`)",
                        path.display()
                    )));
                }
                Some(None) => {
                    return Err(refused(format!(
                        "no app to save: {} is left as it is (it is not a dump this corral reads; `corral dump --force` replaces it)",
                        path.display()
                    )));
                }
            }
        }
        if let Some(bytes) = &previous
            && held != Some(Some(0))
        {
            let bak = with_suffix(&path, ".bak");
            sys::write_atomic_private(&bak, bytes, DUMP_MODE)
                .map_err(|e| internal(&format!("cannot write {}: {e}", bak.display())))?;
        }
        sys::write_atomic_private(&path, dump::to_text(&apps).as_bytes(), DUMP_MODE)
            .map_err(|e| internal(&format!("cannot write {}: {e}", path.display())))?;
        Ok((path, apps.len()))
    }

    /// On SIGTERM/SIGINT, before the apps stop: save what runs, as PM2
    /// does, but never an empty list.
    pub(super) fn dump_on_signal(&mut self, signal: &str) {
        if self.saved_apps().is_empty() {
            self.log(&format!("{signal}: no app, the dump is left as it is"));
            return;
        }
        match self.save_dump(false) {
            Ok((path, n)) => self.log(&format!("{signal}: saved {n} apps to {}", path.display())),
            Err(e) => self.log(&format!("{signal}: the list was not saved: {}", e.message)),
        }
    }

    /// The entries of the dump file (or of its `.bak`), and what to say
    /// about them.
    fn read_dump(&self) -> Result<(Vec<Saved>, Vec<String>), WireError> {
        let path = self.dump_path();
        let bak = with_suffix(&path, ".bak");
        let read = |p: &std::path::Path| -> Result<dump::Read, String> {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            dump::read(&text, &p.display().to_string())
        };
        match read(&path) {
            Ok(r) => Ok((r.apps, r.warnings)),
            Err(first) => match read(&bak) {
                Ok(mut r) => {
                    r.warnings
                        .insert(0, format!("{first}; read {} instead", bak.display()));
                    Ok((r.apps, r.warnings))
                }
                Err(_) if !path.exists() => Err(WireError::new(
                    ErrorCode::NotFound,
                    format!(
                        "no dump at {} (save the list with `corral dump` first)",
                        path.display()
                    ),
                )),
                Err(_) => Err(WireError::new(ErrorCode::BadRequest, first)),
            },
        }
    }

    /// `resurrect`: install the apps of the dump (or `given`, entries a
    /// client read) that are not in the table, each started unless it was
    /// saved stopped.
    pub(super) fn resurrect(
        &mut self,
        given: Option<Vec<Value>>,
    ) -> Result<Resurrected, WireError> {
        let (entries, mut warnings) = match given {
            Some(list) => {
                let mut entries = Vec::new();
                for (i, v) in list.into_iter().enumerate() {
                    let e = dump::entry(v).map_err(|e| {
                        WireError::new(ErrorCode::BadRequest, format!("apps[{i}]: {e}"))
                    })?;
                    entries.push(e);
                }
                (entries, Vec::new())
            }
            None => self.read_dump()?,
        };
        // What runs is left alone: by name, as PM2 does.
        let present: BTreeSet<String> = entries
            .iter()
            .filter(|e| !self.named(&e.name).is_empty())
            .map(|e| e.name.clone())
            .collect();
        let entries: Vec<Saved> = entries
            .into_iter()
            .filter(|e| !present.contains(&e.name))
            .collect();
        // Saved pm_ids this daemon never gave out are kept; the others get
        // new ones past every kept one.
        let first_free = self.table.next_id();
        let mut kept = BTreeSet::new();
        for e in &entries {
            if e.pm_id >= first_free {
                kept.insert(e.pm_id);
            }
        }
        let mut next = kept
            .iter()
            .next_back()
            .map_or(first_free, |m| m + 1)
            .max(first_free);
        let mut used = BTreeSet::new();
        let mut ids = Vec::new();
        let mut failed = Vec::new();
        let asked = entries.len();
        for e in entries {
            let pm_id = if kept.contains(&e.pm_id) && used.insert(e.pm_id) {
                e.pm_id
            } else {
                next += 1;
                next - 1
            };
            let who = format!("{} (pm_id {})", e.name, e.pm_id);
            match self.resurrect_one(pm_id, e) {
                Ok(w) => {
                    warnings.extend(w.into_iter().map(|w| format!("{who}: {w}")));
                    ids.push(pm_id);
                }
                Err(err) => {
                    failed.push(WireError::new(err.code, format!("{who}: {}", err.message)))
                }
            }
        }
        let n = ids.len();
        self.log(&format!(
            "resurrect: {n} apps back, {} not, {} already there",
            failed.len(),
            present.len()
        ));
        Ok(Resurrected {
            ids,
            failed,
            warnings,
            asked,
        })
    }

    /// Install one saved app as `pm_id`; the option warnings.
    fn resurrect_one(&mut self, pm_id: u32, e: Saved) -> Result<Vec<String>, WireError> {
        let online = e.wanted == Wanted::Online;
        let (app, warnings) = self.resolve_saved(pm_id, e, None)?;
        let binds = self.bind_listen(&app.spec)?;
        let logs = open_logs(&app, &self.home, self.log_defaults)?;
        check_watch(&app)?;
        // Bound before anything could fail, held once nothing can.
        if let Some((key, socks)) = binds {
            self.listeners.insert(key, socks);
        }
        self.install(pm_id, false, app, logs, online)?;
        Ok(warnings)
    }

    /// A saved entry (dump, journal, hand-over) as an app again, as
    /// `pm_id`: its options parsed and checked anew, its name as saved;
    /// `base_env`, the environment it inherited. The option warnings too.
    pub(super) fn resolve_saved(
        &self,
        pm_id: u32,
        e: Saved,
        base_env: Option<Rc<BTreeMap<String, String>>>,
    ) -> Result<(App, Vec<String>), WireError> {
        let parsed = parse_app(&e.options)
            .map_err(|err| WireError::new(ErrorCode::InvalidOption, err.to_string()))?;
        let spec = parsed.spec;
        if spec.name != e.name {
            return Err(WireError::new(
                ErrorCode::BadRequest,
                format!("its options name it {}", spec.name),
            ));
        }
        let slot = Slot {
            pm_id,
            instance: e.instance,
            count: e.instances.max(1),
            cluster: spec.rare().cluster.unwrap_or(false) && !spec.rare().execute_command,
        };
        let app = App::resolve(
            spec, &e.options, slot, &self.home, base_env, e.env_name, self.root,
        )?;
        Ok((app, parsed.warnings))
    }
}

/// What the user wants of app `e` as a dump or the journal keeps it; None
/// for one being deleted.
pub(super) fn saved_wanted(e: &Entry) -> Option<Wanted> {
    let m = e.m();
    Some(match m.wanted() {
        state::Wanted::Gone => return None,
        state::Wanted::Up => Wanted::Online,
        // Errored: it was meant to run, and gave up.
        state::Wanted::Down if m.status() == Status::Errored => Wanted::Online,
        state::Wanted::Down => Wanted::Stopped,
    })
}

/// App `pm_id` as the dump (and the journal) keeps it; `None` while it is
/// being deleted.
pub(super) fn saved_entry(pm_id: u32, e: &Entry) -> Option<Saved> {
    let wanted = saved_wanted(e)?;
    let a = &e.app;
    let mut options = a.options.value();
    if let Value::Object(o) = &mut options {
        // What resurrect needs whoever asks it: the cwd this app resolved,
        // and its name even when it came from the script.
        o.insert("cwd".into(), Value::from(a.cwd.display().to_string()));
        o.insert("name".into(), Value::from(a.spec.name.clone()));
    }
    Some(Saved {
        name: a.spec.name.clone(),
        pm_id,
        namespace: a.spec.namespace.clone().into_owned(),
        instance: a.slot.instance,
        instances: a.slot.count.max(1),
        wanted,
        env_name: a.env_name().map(str::to_string),
        options,
    })
}
