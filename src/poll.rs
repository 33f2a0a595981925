//! Sampling the apps' memory and CPU (the `monit` of a description): one
//! scan of `/proc` per sample, summed over each app's whole process group
//! — PM2 counts the main pid only. Samples are taken when something needs
//! them: a `list` or `describe` (of the apps it shows), and the apps with
//! `max_memory_restart` on the daemon's interval. Nothing samples an app
//! nobody looks at.
//!
//! CPU is computed per process, as PM2's `ls` does: from that process's
//! previous reading (whenever it was taken), or over its whole life when
//! there is none. A reading younger than `MIN_GAP` keeps the figure it
//! gave rather than divide a tick or two by a tiny interval. A process is
//! known by (pid, start time), so a recycled pid starts over; a child that
//! exits between readings does not make the sum go backwards.

use std::collections::{HashMap, HashSet};

use crate::procfs;
use crate::protocol::Monit;

/// Default time between two samples of the apps with `max_memory_restart`
/// (ms).
pub const DEFAULT_INTERVAL: u64 = 1000;
/// The shortest interval accepted (ms): below it the figures are noise and
/// the daemon's own CPU use is not.
pub const MIN_INTERVAL: u64 = 100;
/// A reading younger than this (ms) is not divided again: its CPU figure
/// stands.
pub const MIN_GAP: u64 = 500;

/// A process's last reading.
#[derive(Clone, Copy, Debug)]
struct Reading {
    pgrp: i32,
    /// utime + stime.
    ticks: u64,
    /// Monotonic ms.
    at: u64,
    /// Percent of one core, as computed at `at`.
    cpu: f64,
}

/// The processes read before: (pid, starttime) and the last reading,
/// sorted by key. Sorted vectors rather than hash maps: what is kept
/// between samples costs its entries and no more (a map of a thousand
/// entries keeps 2048 slots).
type Seen = Vec<((i32, u64), Reading)>;

/// The state kept between samples.
#[derive(Default)]
pub struct Sampler {
    seen: Seen,
    /// Each group's last usage and when it was read (monotonic ms), sorted
    /// by group.
    groups: Vec<(i32, u64, Monit)>,
    ticks_per_sec: u64,
    page_size: u64,
}

/// One process of a group, as the scan found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub pid: i32,
    pub pgrp: i32,
    pub starttime: u64,
    pub ticks: u64,
    pub rss_pages: u64,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler {
            seen: Seen::new(),
            groups: Vec::new(),
            ticks_per_sec: procfs::clock_ticks_per_sec(),
            page_size: procfs::page_size(),
        }
    }

    /// Group `pgid`'s last reading: when, and its usage.
    fn group(&self, pgid: i32) -> Option<&(i32, u64, Monit)> {
        let i = self.groups.binary_search_by_key(&pgid, |g| g.0).ok()?;
        self.groups.get(i)
    }

    /// Read the usage of each group in `pgids` at `now` (monotonic ms),
    /// for [`Sampler::usage`]: a group read less than `max_age` ms before
    /// keeps that reading, the others are read with one scan of /proc.
    /// Whether a scan was made.
    pub fn sample(&mut self, pgids: &[i32], now: u64, max_age: u64) -> bool {
        let stale: Vec<i32> = pgids
            .iter()
            .copied()
            .filter(|&g| {
                self.group(g)
                    .is_none_or(|(_, at, _)| now.saturating_sub(*at) >= max_age)
            })
            .collect();
        if stale.is_empty() {
            return false;
        }
        let wanted: HashSet<i32> = stale.iter().copied().collect();
        let members = scan(&wanted);
        let read = self.account(&members, &stale, now, boot_ms());
        self.record(&stale, &read, now);
        true
    }

    /// Keep the usage of groups `pgids` just read at `now` (`read`): those
    /// read before are updated in place, the others put in their place (in
    /// the order of `pgids`, the apps' order: mostly at the end, and no sort
    /// is needed).
    fn record(&mut self, pgids: &[i32], read: &HashMap<i32, Monit>, now: u64) {
        for &g in pgids {
            let Some(usage) = read.get(&g) else {
                continue;
            };
            let x = (g, now, usage.clone());
            match self.groups.binary_search_by_key(&g, |x| x.0) {
                Ok(i) => {
                    if let Some(old) = self.groups.get_mut(i) {
                        *old = x;
                    }
                }
                Err(i) => self.groups.insert(i, x),
            }
        }
    }

    /// Group `pgid`'s usage at its last reading; zero if it had no
    /// process (or was never read).
    pub fn usage(&self, pgid: i32) -> Monit {
        self.group(pgid).map(|g| g.2.clone()).unwrap_or_default()
    }

    /// The pure part of `sample`: fold one scan into usage per group;
    /// `boot` is the ms since boot at `now` (for a process's lifetime).
    pub fn account(
        &mut self,
        members: &[Member],
        pgids: &[i32],
        now: u64,
        boot: u64,
    ) -> HashMap<i32, Monit> {
        let hz = self.ticks_per_sec.max(1);
        let mut out: HashMap<i32, (f64, u64)> = pgids.iter().map(|&g| (g, (0.0, 0))).collect();
        // The readings kept: those of the processes of groups not read now,
        // and this scan's, each put in its place (the scan is in the order
        // of pids: mostly at the end). Made anew at its size, so the
        // processes of these groups that are gone are forgotten.
        let kept = self.seen.iter().filter(|(_, r)| !out.contains_key(&r.pgrp));
        let mut seen: Seen = Vec::with_capacity(kept.clone().count() + members.len());
        seen.extend(kept);
        for m in members {
            let key = (m.pid, m.starttime);
            let before = self
                .seen
                .binary_search_by_key(&key, |s| s.0)
                .ok()
                .and_then(|i| self.seen.get(i))
                .map(|s| s.1);
            let reading = match before {
                Some(r) if now.saturating_sub(r.at) < MIN_GAP => r,
                before => {
                    // Since the last reading, or over the process's life.
                    let (ticks, ms) = match before {
                        Some(r) => (m.ticks.saturating_sub(r.ticks), now - r.at),
                        None => (m.ticks, boot.saturating_sub(m.starttime * 1000 / hz)),
                    };
                    let cpu = if ms > 0 {
                        ticks as f64 * 1000.0 / hz as f64 / ms as f64 * 100.0
                    } else {
                        0.0
                    };
                    Reading {
                        pgrp: m.pgrp,
                        ticks: m.ticks,
                        at: now,
                        cpu,
                    }
                }
            };
            // A reading of the same process kept from before gives way.
            match seen.binary_search_by_key(&key, |s| s.0) {
                Ok(i) => {
                    if let Some(s) = seen.get_mut(i) {
                        s.1 = reading;
                    }
                }
                Err(i) => seen.insert(i, (key, reading)),
            }
            if let Some(acc) = out.get_mut(&m.pgrp) {
                acc.0 += reading.cpu;
                acc.1 += m.rss_pages;
            }
        }
        self.seen = seen;
        out.into_iter()
            .map(|(g, (cpu, pages))| {
                (
                    g,
                    Monit {
                        memory: pages * self.page_size,
                        cpu: (cpu * 10.0).round() / 10.0,
                    },
                )
            })
            .collect()
    }

    /// Forget the readings of processes whose group is not in `live` (the
    /// apps running now).
    pub fn keep_groups(&mut self, live: &HashSet<i32>) {
        self.seen.retain(|(_, r)| live.contains(&r.pgrp));
        self.groups.retain(|g| live.contains(&g.0));
        fit(&mut self.seen);
        fit(&mut self.groups);
    }

    /// Forget every reading (no app online).
    pub fn reset(&mut self) {
        if !self.seen.is_empty() || !self.groups.is_empty() {
            self.seen = Seen::new();
            self.groups = Vec::new();
        }
    }
}

/// Give back the room of a vector that shrank to a quarter of it (a
/// small one is left alone).
fn fit<T>(v: &mut Vec<T>) {
    if v.capacity() > 4 * v.len() + 16 {
        v.shrink_to(2 * v.len());
    }
}

/// Milliseconds since boot (CLOCK_BOOTTIME, the clock of a process's
/// start time in /proc); 0 if it cannot be read.
fn boot_ms() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `t` is.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec.max(0) as u64 * 1000 + t.tv_nsec.max(0) as u64 / 1_000_000
}

/// Every process whose group is in `pgids`.
fn scan(pgids: &HashSet<i32>) -> Vec<Member> {
    let mut out = Vec::new();
    procfs::each_usage(|pid, u| {
        if pgids.contains(&u.pgrp) {
            out.push(Member {
                pid,
                pgrp: u.pgrp,
                starttime: u.starttime,
                ticks: u.ticks,
                rss_pages: u.rss_pages.max(0) as u64,
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(pid: i32, pgrp: i32, ticks: u64, rss_pages: u64) -> Member {
        Member {
            pid,
            pgrp,
            starttime: 1,
            ticks,
            rss_pages,
        }
    }

    fn sampler() -> Sampler {
        Sampler {
            seen: Seen::new(),
            groups: Vec::new(),
            ticks_per_sec: 100,
            page_size: 4096,
        }
    }

    /// The ms since boot at `now`: the members (started 1 tick = 10 ms
    /// after boot) are 10 s old at `now` 0.
    fn boot(now: u64) -> u64 {
        10 + 10_000 + now
    }

    #[test]
    fn usage_per_group_from_a_table_of_scans() {
        let mut s = sampler();
        // (scan, now, expected (memory, cpu) of group 10, of group 20)
        type Step = (Vec<Member>, u64, (u64, f64), (u64, f64));
        let steps: Vec<Step> = vec![
            // First reading: CPU over each process's life (10 s): 5 s and
            // 1 s of CPU.
            (
                vec![member(10, 10, 500, 100), member(11, 10, 100, 10)],
                0,
                (110 * 4096, 60.0),
                (0, 0.0),
            ),
            // 300 ms later: too soon to divide again, the figure stands;
            // memory is read anew.
            (
                vec![member(10, 10, 560, 120), member(11, 10, 101, 10)],
                300,
                (130 * 4096, 60.0),
                (0, 0.0),
            ),
            // One second after the first reading (the base kept): 90 + 10
            // ticks = one core.
            (
                vec![member(10, 10, 590, 100), member(11, 10, 110, 10)],
                1000,
                (110 * 4096, 100.0),
                (0, 0.0),
            ),
            // A child exits: the sum does not go backwards. A new process
            // counts its whole life (12 s for 0.12 s).
            (
                vec![member(10, 10, 600, 100), member(20, 20, 12, 1)],
                2000,
                (100 * 4096, 10.0),
                (4096, 1.0),
            ),
            // Half a core over two seconds.
            (
                vec![member(10, 10, 700, 100), member(20, 20, 12, 1)],
                4000,
                (100 * 4096, 50.0),
                (4096, 0.0),
            ),
        ];
        for (i, (scan, now, g10, g20)) in steps.into_iter().enumerate() {
            let got = s.account(&scan, &[10, 20], now, boot(now));
            let m10 = &got[&10];
            let m20 = &got[&20];
            assert_eq!((m10.memory, m10.cpu), g10, "step {i}, group 10");
            assert_eq!((m20.memory, m20.cpu), g20, "step {i}, group 20");
        }
        assert!(
            !s.seen.iter().any(|x| x.0 == (11, 1)),
            "the exited child is forgotten"
        );
    }

    #[test]
    fn sampling_one_group_keeps_the_readings_of_the_others() {
        let mut s = sampler();
        let both = [member(10, 10, 0, 1), member(20, 20, 0, 1)];
        s.account(&both, &[10, 20], 0, boot(0));
        // Group 20 alone, twice; group 10's process is not in these scans.
        s.account(&[member(20, 20, 100, 1)], &[20], 1000, boot(1000));
        s.account(&[member(20, 20, 100, 1)], &[20], 2000, boot(2000));
        // Group 10 over the 4 s since its own last reading.
        let got = s.account(&[member(10, 10, 200, 1)], &[10], 4000, boot(4000));
        assert_eq!(got[&10].cpu, 50.0);
        s.keep_groups(&HashSet::from([20]));
        assert_eq!(s.seen.len(), 1, "only group 20's reading is left");
    }

    #[test]
    fn groups_are_kept_sorted_and_at_their_size() {
        let mut s = sampler();
        let usage = |memory| Monit { memory, cpu: 0.0 };
        // (groups read, now, expected (group, when, memory) after)
        type Step = (Vec<(i32, u64)>, u64, Vec<(i32, u64, u64)>);
        let steps: Vec<Step> = vec![
            (vec![(30, 1), (10, 2)], 5, vec![(10, 5, 2), (30, 5, 1)]),
            (vec![(20, 3)], 6, vec![(10, 5, 2), (20, 6, 3), (30, 5, 1)]),
            (
                vec![(30, 4), (5, 9)],
                7,
                vec![(5, 7, 9), (10, 5, 2), (20, 6, 3), (30, 7, 4)],
            ),
        ];
        for (i, (read, now, want)) in steps.into_iter().enumerate() {
            let pgids: Vec<i32> = read.iter().map(|x| x.0).collect();
            let read = read.into_iter().map(|(g, m)| (g, usage(m))).collect();
            s.record(&pgids, &read, now);
            let got: Vec<(i32, u64, u64)> =
                s.groups.iter().map(|g| (g.0, g.1, g.2.memory)).collect();
            assert_eq!(got, want, "step {i}");
            assert_eq!(s.usage(30).memory, want.last().unwrap().2, "step {i}");
        }
        assert_eq!(s.usage(31), Monit::default());
        // A thousand processes: kept at their number, not at a table's
        // power of two.
        let many: Vec<Member> = (0..1000)
            .map(|p| member(1000 - p, 1000 - p, 1, 1))
            .collect();
        let pgids: Vec<i32> = many.iter().map(|m| m.pgrp).collect();
        s.account(&many, &pgids, 0, boot(0));
        assert_eq!((s.seen.len(), s.seen.capacity()), (1000, 1000));
        assert!(s.seen.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        // Most of them gone: the room is given back.
        s.keep_groups(&(1..=10).collect());
        assert_eq!(s.seen.len(), 10);
        assert!(s.seen.capacity() <= 4 * 10 + 16, "{}", s.seen.capacity());
    }

    #[test]
    fn a_process_that_changed_group_is_kept_once() {
        let mut s = sampler();
        s.account(
            &[member(10, 99, 5, 1), member(11, 99, 5, 1)],
            &[99],
            0,
            boot(0),
        );
        // Pid 10 moved to group 10 (setpgid); group 99 is not read now.
        s.account(&[member(10, 10, 6, 1)], &[10], 1000, boot(1000));
        let got: Vec<(i32, i32)> = s.seen.iter().map(|x| (x.0.0, x.1.pgrp)).collect();
        assert_eq!(got, [(10, 10), (11, 99)]);
    }

    #[test]
    fn a_recycled_pid_starts_over() {
        let mut s = sampler();
        s.account(&[member(10, 10, 500, 1)], &[10], 0, boot(0));
        let mut again = member(10, 10, 20, 1);
        // Born 1 s before the second reading, 20 ticks since.
        again.starttime = (boot(1000) - 1000) / 10;
        let got = s.account(&[again], &[10], 1000, boot(1000));
        assert_eq!(got[&10].cpu, 20.0);
    }

    #[test]
    fn a_group_read_lately_keeps_its_reading() {
        let mut s = Sampler::new();
        let me = std::process::id() as i32;
        let pgrp = procfs::read_stat(me).unwrap().unwrap().pgrp;
        assert!(s.sample(&[pgrp], 1000, MIN_GAP), "a first scan");
        let first = s.usage(pgrp);
        assert!(first.memory > 0, "{first:?}");
        // Read within the age given: the same reading, no scan.
        s.seen.clear();
        assert!(!s.sample(&[pgrp], 1000 + MIN_GAP - 1, MIN_GAP));
        assert_eq!(s.usage(pgrp), first);
        assert!(s.seen.is_empty(), "no scan was made");
        // Older than the age given (or any age, with 0): read anew.
        assert!(s.sample(&[pgrp], 1000 + MIN_GAP - 1, 0));
        assert!(!s.seen.is_empty(), "a scan was made");
        // A group never read (no process) is at zero.
        assert_eq!(s.usage(-7), Monit::default());
    }

    #[test]
    fn scans_this_process_group() {
        let me = std::process::id() as i32;
        let pgrp = procfs::read_stat(me).unwrap().unwrap().pgrp;
        let found = scan(&HashSet::from([pgrp]));
        assert!(found.iter().any(|m| m.pid == me), "{found:?}");
        assert!(found.iter().all(|m| m.pgrp == pgrp));
    }
}
