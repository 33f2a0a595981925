//! Sampling the apps' memory and CPU (the `monit` of a description): one
//! scan of `/proc` per sample, on a deadline of the daemon's loop, summed
//! over each app's whole process group — PM2 counts the main pid only.
//!
//! CPU is computed per process from tick deltas between two samples, so a
//! child that exits between samples does not make the sum go backwards;
//! a process is known by (pid, start time), so a recycled pid starts over.

use std::collections::HashMap;

use crate::procfs;
use crate::protocol::Monit;

/// Default time between two samples (ms).
pub const DEFAULT_INTERVAL: u64 = 1000;
/// The shortest interval accepted (ms): below it the figures are noise and
/// the daemon's own CPU use is not.
pub const MIN_INTERVAL: u64 = 100;

/// A process seen in the last sample: (pid, starttime) -> utime + stime.
type Seen = HashMap<(i32, u64), u64>;

/// The state kept between samples.
#[derive(Default)]
pub struct Sampler {
    seen: Seen,
    /// Monotonic ms of the last sample.
    last_at: Option<u64>,
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
            last_at: None,
            ticks_per_sec: procfs::clock_ticks_per_sec(),
            page_size: procfs::page_size(),
        }
    }

    /// Scan /proc and give the usage of each group in `pgids` at `now`
    /// (monotonic ms). Groups with no process get zero.
    pub fn sample(&mut self, pgids: &[i32], now: u64) -> HashMap<i32, Monit> {
        let members = scan(pgids);
        self.account(&members, pgids, now)
    }

    /// The pure part of `sample`: fold one scan into usage per group.
    pub fn account(&mut self, members: &[Member], pgids: &[i32], now: u64) -> HashMap<i32, Monit> {
        let secs = self
            .last_at
            .map(|t| now.saturating_sub(t) as f64 / 1000.0)
            .unwrap_or(0.0);
        let mut out: HashMap<i32, (u64, u64)> = pgids.iter().map(|&g| (g, (0, 0))).collect();
        let mut seen = Seen::with_capacity(members.len());
        for m in members {
            let key = (m.pid, m.starttime);
            // A process new since the last sample was (almost always) born
            // after it: its whole life falls in this interval.
            let delta = match self.seen.get(&key) {
                Some(&before) => m.ticks.saturating_sub(before),
                None => m.ticks,
            };
            seen.insert(key, m.ticks);
            if let Some(acc) = out.get_mut(&m.pgrp) {
                acc.0 += delta;
                acc.1 += m.rss_pages;
            }
        }
        self.seen = seen;
        self.last_at = Some(now);
        let hz = self.ticks_per_sec.max(1) as f64;
        out.into_iter()
            .map(|(g, (ticks, pages))| {
                let cpu = if secs > 0.0 {
                    ticks as f64 / hz / secs * 100.0
                } else {
                    0.0
                };
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

    /// Forget the previous sample (no app online: the next one starts over).
    pub fn reset(&mut self) {
        self.seen.clear();
        self.last_at = None;
    }
}

/// Every process whose group is in `pgids`.
fn scan(pgids: &[i32]) -> Vec<Member> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A process that vanished meanwhile is a normal outcome.
        let Ok(Some(st)) = procfs::read_stat(pid) else {
            continue;
        };
        if pgids.contains(&st.pgrp) {
            out.push(Member {
                pid,
                pgrp: st.pgrp,
                starttime: st.starttime,
                ticks: st.utime + st.stime,
                rss_pages: st.rss_pages.max(0) as u64,
            });
        }
    }
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
            last_at: None,
            ticks_per_sec: 100,
            page_size: 4096,
        }
    }

    #[test]
    fn usage_per_group_from_a_table_of_scans() {
        let mut s = sampler();
        // (scan, now, expected (memory, cpu) of group 10, of group 20)
        type Step = (Vec<Member>, u64, (u64, f64), (u64, f64));
        let steps: Vec<Step> = vec![
            // First sample: memory only, no CPU yet.
            (
                vec![member(10, 10, 50, 100), member(11, 10, 5, 10)],
                0,
                (110 * 4096, 0.0),
                (0, 0.0),
            ),
            // One second later: 100 ticks in the group = one core.
            (
                vec![member(10, 10, 140, 100), member(11, 10, 15, 10)],
                1000,
                (110 * 4096, 100.0),
                (0, 0.0),
            ),
            // A child exits: the sum does not go backwards. A new process
            // counts its whole (short) life.
            (
                vec![member(10, 10, 150, 100), member(20, 20, 7, 1)],
                2000,
                (100 * 4096, 10.0),
                (4096, 7.0),
            ),
            // Half a core over two seconds.
            (
                vec![member(10, 10, 250, 100), member(20, 20, 7, 1)],
                4000,
                (100 * 4096, 50.0),
                (4096, 0.0),
            ),
        ];
        for (i, (scan, now, g10, g20)) in steps.into_iter().enumerate() {
            let got = s.account(&scan, &[10, 20], now);
            let m10 = &got[&10];
            let m20 = &got[&20];
            assert_eq!((m10.memory, m10.cpu), g10, "step {i}, group 10");
            assert_eq!((m20.memory, m20.cpu), g20, "step {i}, group 20");
        }
    }

    #[test]
    fn a_recycled_pid_starts_over() {
        let mut s = sampler();
        s.account(&[member(10, 10, 500, 1)], &[10], 0);
        let mut again = member(10, 10, 20, 1);
        again.starttime = 99;
        let got = s.account(&[again], &[10], 1000);
        assert_eq!(got[&10].cpu, 20.0);
    }

    #[test]
    fn scans_this_process_group() {
        let me = std::process::id() as i32;
        let pgrp = procfs::read_stat(me).unwrap().unwrap().pgrp;
        let found = scan(&[pgrp]);
        assert!(found.iter().any(|m| m.pid == me), "{found:?}");
        assert!(found.iter().all(|m| m.pgrp == pgrp));
    }
}
