//! The deadline set (STYLE 5): `(monotonic ms, what)` kept sorted, whose
//! first entry sets the poll timeout, so a daemon with nothing due sleeps
//! until an fd is ready. Entries are removed when their owner knows it no
//! longer wants them (the sampler); most are simply left to fire and are
//! ignored by their owner when stale (a machine's deadline that moved on),
//! which costs one comparison. Knows nothing of what the timers are for.

use std::collections::BTreeSet;
use std::time::Duration;

/// Deadlines of kind `T`.
#[derive(Debug)]
pub struct Timers<T: Ord + Copy> {
    set: BTreeSet<(u64, T)>,
}

impl<T: Ord + Copy> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            set: BTreeSet::new(),
        }
    }
}

impl<T: Ord + Copy> Timers<T> {
    /// Fire `what` at `at`.
    pub fn arm(&mut self, at: u64, what: T) {
        self.set.insert((at, what));
    }

    /// Forget `what` at `at`, if it is still there.
    pub fn disarm(&mut self, at: u64, what: T) {
        self.set.remove(&(at, what));
    }

    /// How long the loop may sleep at `now`: until the first deadline, or
    /// for ever (`None`) when none is set.
    pub fn timeout(&self, now: u64) -> Option<Duration> {
        self.set
            .first()
            .map(|(t, _)| Duration::from_millis(t.saturating_sub(now)))
    }

    /// The next deadline due at `now`, taken out of the set.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, T)> {
        match self.set.first() {
            Some(&(t, _)) if t <= now => self.set.pop_first(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fire_in_order_and_only_when_due() {
        let mut t = Timers::default();
        assert_eq!(t.timeout(0), None);
        t.arm(30, 'c');
        t.arm(10, 'a');
        t.arm(20, 'b');
        t.arm(20, 'b');
        assert_eq!(t.set.len(), 3);
        assert_eq!(t.timeout(5), Some(Duration::from_millis(5)));
        assert_eq!(t.timeout(15), Some(Duration::ZERO));
        assert_eq!(t.pop_due(20), Some((10, 'a')));
        assert_eq!(t.pop_due(20), Some((20, 'b')));
        assert_eq!(t.pop_due(20), None);
        t.disarm(30, 'c');
        t.disarm(30, 'x');
        assert!(t.set.is_empty());
    }
}
