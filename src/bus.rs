//! The event bus, daemon side: who subscribed to what, and the bounded
//! queue of each subscriber. A subscriber that reads too slowly never blocks
//! the daemon or the apps: past `MAX_QUEUE` its events are dropped and
//! counted, and a `bus:dropped` event says how many once it catches up.

use serde_json::{Value, json};

/// The most bytes queued for one subscriber.
pub const MAX_QUEUE: usize = 1 << 20;
/// Event names only the daemon publishes; an app's typed message with one
/// of them goes out as `process:msg`.
pub const RESERVED: &[&str] = &[
    "process:event",
    "log:out",
    "log:err",
    "daemon:kill",
    "daemon:update",
    "bus:dropped",
];
/// The longest piece of a line a `log:*` event carries.
pub const MAX_LINE: usize = 64 * 1024;

/// `line` in pieces of at most `max` bytes (`MAX_LINE` for an event), each
/// cut before a UTF-8 character that would not fit whole.
pub fn pieces(line: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let max = max.max(4);
    let mut rest = line;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(max);
        // Back to the start of the character at the cut (continuation bytes
        // are 10xxxxxx), three bytes at most: not UTF-8, cut where it is.
        if cut < rest.len()
            && let Some(k) = (0..=3).find(|&k| rest.get(cut - k).is_some_and(|b| b & 0xC0 != 0x80))
        {
            cut -= k;
        }
        let (piece, r) = rest.split_at(cut);
        rest = r;
        Some(piece)
    })
}

/// Which events a subscriber wants: all, or these names; a name ending in
/// `*` is a prefix (`log:*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Filter(Option<Vec<String>>);

impl Filter {
    pub fn new(events: Option<Vec<String>>) -> Filter {
        Filter(events)
    }

    pub fn wants(&self, event: &str) -> bool {
        match &self.0 {
            None => true,
            Some(names) => names.iter().any(|n| match n.strip_suffix('*') {
                Some(prefix) => event.starts_with(prefix),
                None => n == event,
            }),
        }
    }
}

/// One subscriber's side of the bus.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    pub filter: Filter,
    /// Events dropped since the last `bus:dropped`.
    pub dropped: u64,
}

impl Subscription {
    pub fn new(filter: Filter) -> Subscription {
        Subscription { filter, dropped: 0 }
    }

    /// Append `line` to `queue` if it fits; count it as dropped otherwise.
    /// A `bus:dropped` goes first once the queue has room again.
    pub fn offer(&mut self, queue: &mut Vec<u8>, line: &str) {
        if self.dropped > 0 {
            let note = line_of("bus:dropped", json!({"count": self.dropped}));
            if queue.len() + note.len() + line.len() > MAX_QUEUE {
                self.dropped += 1;
                return;
            }
            queue.extend_from_slice(note.as_bytes());
            self.dropped = 0;
        }
        if queue.len() + line.len() > MAX_QUEUE {
            self.dropped += 1;
            return;
        }
        queue.extend_from_slice(line.as_bytes());
    }
}

/// The line of one event, newline included.
pub fn line_of(event: &str, data: Value) -> String {
    let mut s = json!({"event": event, "data": data}).to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_goes_in_pieces_cut_between_characters() {
        let cases: &[(&str, usize, &[&str])] = &[
            ("", 4, &[]),
            ("abc", 4, &["abc"]),
            ("abcdefghij", 4, &["abcd", "efgh", "ij"]),
            // é is 2 bytes, € 3: a piece ends before a character that
            // would not fit.
            ("abcé", 4, &["abc", "é"]),
            ("ab€cd", 4, &["ab", "€c", "d"]),
            ("€€", 4, &["€", "€"]),
        ];
        for (line, max, want) in cases {
            let got: Vec<&[u8]> = pieces(line.as_bytes(), *max).collect();
            let want: Vec<&[u8]> = want.iter().map(|w| w.as_bytes()).collect();
            assert_eq!(got, want, "{line:?} by {max}");
        }
        // Not UTF-8: cut at the size.
        let bad = [0x80u8; 10];
        let got: Vec<usize> = pieces(&bad, 4).map(<[u8]>::len).collect();
        assert_eq!(got, [4, 4, 2]);
    }

    #[test]
    fn filters_by_name_and_prefix() {
        let cases: &[(Option<&[&str]>, &str, bool)] = &[
            (None, "log:out", true),
            (Some(&["log:out"]), "log:out", true),
            (Some(&["log:out"]), "log:err", false),
            (Some(&["log:*"]), "log:err", true),
            (Some(&["log:*"]), "process:event", false),
            (Some(&["process:event", "log:*"]), "process:event", true),
            (Some(&[]), "process:event", false),
        ];
        for (names, event, want) in cases {
            let f = Filter::new(names.map(|n| n.iter().map(|s| s.to_string()).collect()));
            assert_eq!(f.wants(event), *want, "{names:?} {event}");
        }
    }

    #[test]
    fn a_full_queue_drops_and_then_says_so() {
        let mut sub = Subscription::new(Filter::default());
        let mut queue = Vec::new();
        let line = line_of("log:out", json!({"data": "x".repeat(1000)}));
        let fits = MAX_QUEUE / line.len();
        for _ in 0..fits + 5 {
            sub.offer(&mut queue, &line);
        }
        assert_eq!(sub.dropped, 5);
        assert!(queue.len() <= MAX_QUEUE);
        // The reader catches up.
        queue.clear();
        sub.offer(&mut queue, &line);
        let text = String::from_utf8(queue).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            r#"{"data":{"count":5},"event":"bus:dropped"}"#
        );
        assert!(lines.next().unwrap().contains("log:out"));
        assert_eq!(sub.dropped, 0);
    }
}
