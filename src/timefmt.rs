//! Log timestamps: converting epoch milliseconds to broken-down local (or UTC) time, and
//! parsing/rendering moment.js-style format strings (`log_date_format`) such as
//! `YYYY-MM-DD HH:mm:ss.SSS Z`.
//!
//! Parsing happens once per format ([`Format::parse`]); rendering a line is then a walk over
//! pre-parsed items that only appends to the caller's buffer.

use std::sync::Once;

/// A broken-down local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tm {
    pub year: i32,
    /// 1-12
    pub month: u32,
    /// 1-31
    pub day: u32,
    /// 0-23
    pub hour: u32,
    /// 0-59
    pub min: u32,
    /// 0-60 (60 only for a leap second, if the zone data has them)
    pub sec: u32,
    /// 0-999
    pub millis: u32,
    /// Offset of local time from UTC, east positive (e.g. 7200 for UTC+02:00).
    pub utc_offset_secs: i32,
}

static TZ_INIT: Once = Once::new();

// The `libc` crate does not bind tzset(3); both glibc and musl export it.
unsafe extern "C" {
    fn tzset();
}

/// Loads the local time zone (`TZ`, else `/etc/localtime`) into libc, once per process.
///
/// [`local_tm`] calls this itself, so calling it is optional; calling it early (e.g. at daemon
/// start-up) just moves the one-time cost of reading the zone file out of the first log line.
/// A later change of `TZ` in the environment is not picked up.
pub fn init() {
    TZ_INIT.call_once(|| {
        // SAFETY: tzset has no preconditions; it reads TZ and zone files into libc's own state.
        // `Once` guarantees we call it from one thread only.
        unsafe { tzset() };
    });
}

/// Local time of `epoch_ms` (milliseconds since the Unix epoch) via `libc::localtime_r`,
/// which honours `TZ` / `/etc/localtime`. Negative epochs are fine (millis are always 0-999).
///
/// The zone is loaded once per process (see `init`). If libc cannot convert the time
/// (out of range), the UTC rendering from `utc_tm` is returned.
pub fn local_tm(epoch_ms: i64) -> Tm {
    init();
    let secs = epoch_ms.div_euclid(1000);
    let millis = epoch_ms.rem_euclid(1000) as u32;
    // musl's libc crate marks `time_t` deprecated (it is to become 64-bit
    // there); it is still the type localtime_r takes.
    #[allow(deprecated)]
    let t = secs as libc::time_t;
    // SAFETY: libc::tm is a plain C struct of integers plus a nullable pointer (tm_zone);
    // all-zero bytes are a valid value for it.
    let mut out: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live, properly aligned locals for the whole call;
    // localtime_r is the re-entrant variant and writes only into `out`.
    let r = unsafe { libc::localtime_r(&t, &mut out) };
    if r.is_null() {
        return utc_tm(epoch_ms);
    }
    Tm {
        year: out.tm_year.saturating_add(1900),
        month: (out.tm_mon + 1) as u32,
        day: out.tm_mday as u32,
        hour: out.tm_hour as u32,
        min: out.tm_min as u32,
        sec: out.tm_sec as u32,
        millis,
        utc_offset_secs: out.tm_gmtoff as i32,
    }
}

/// UTC time of `epoch_ms`, computed without libc (proleptic Gregorian calendar);
/// `utc_offset_secs` is 0. Pure.
pub fn utc_tm(epoch_ms: i64) -> Tm {
    let secs = epoch_ms.div_euclid(1000);
    let millis = epoch_ms.rem_euclid(1000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Tm {
        year: year as i32,
        month,
        day,
        hour: (sod / 3600) as u32,
        min: (sod % 3600 / 60) as u32,
        sec: (sod % 60) as u32,
        millis,
        utc_offset_secs: 0,
    }
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31).
///
/// Works in 400-year eras starting on March 1st so that the leap day is the last day of
/// each shifted year, which makes month lengths a simple linear formula.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the origin from 1970-01-01 to 0000-03-01 (719_468 days earlier).
    let z = days + 719_468;
    let era = z.div_euclid(146_097); // days per 400 years
    let doe = z.rem_euclid(146_097); // day of era, 0..=146_096
    // Year of era, correcting for the 4/100/400 leap-year rules.
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // month index with March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One parsed piece of a format string.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Lit(String),
    /// `YYYY`: at least 4 digits, `-` for years before 0.
    Year4,
    /// `YY`: last two digits of the year.
    Year2,
    Month,
    Month2,
    Day,
    Day2,
    Hour24,
    Hour24Pad,
    Hour12,
    Hour12Pad,
    Min,
    MinPad,
    Sec,
    SecPad,
    /// `S`..`SSSSSSSSS`: that many fractional-second digits (beyond 3 they are zeros).
    Frac(u32),
    /// `Z`: `+02:00`
    Offset,
    /// `ZZ`: `+0200`
    OffsetCompact,
    /// `A`: `AM`/`PM`
    Upper,
    /// `a`: `am`/`pm`
    Lower,
    /// `X`: unix seconds
    UnixSecs,
    /// `x`: unix milliseconds
    UnixMs,
}

/// A parsed moment.js/dayjs format, so the per-line cost is only rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct Format {
    items: Vec<Item>,
}

impl Format {
    /// Parses a moment.js/dayjs format. Never fails.
    ///
    /// Supported tokens: `YYYY YY M MM D DD H HH h hh m mm s ss S SS SSS` (up to nine `S`),
    /// `Z ZZ A a X x`. Text in `[brackets]` is copied literally without the brackets
    /// (up to the first `]`; a `[` with no closing `]` is itself literal).
    ///
    /// The format is scanned in runs of the same letter: a run that is a supported token is
    /// that token, any other run is copied literally. So unsupported moment tokens are not
    /// rendered: `MMM`, `dddd`, `ZZZ`, `YYY` come out as those letters, and `Do` renders the
    /// day followed by a literal `o`. Every other character is literal too. Literal words
    /// containing token letters (`at` would render `a` as am/pm) must be bracketed: `[at]`.
    pub fn parse(fmt: &str) -> Format {
        let mut items = Vec::new();
        let bytes = fmt.as_bytes();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'[' {
                if let Some(len) = fmt[i + 1..].find(']') {
                    push_lit(&mut items, &fmt[i + 1..i + 1 + len]);
                    i += len + 2;
                } else {
                    push_lit(&mut items, "[");
                    i += 1;
                }
                continue;
            }
            if b.is_ascii_alphabetic() {
                let run = bytes.iter().skip(i).take_while(|&&c| c == b).count();
                match token(b, run) {
                    Some(item) => items.push(item),
                    None => push_lit(&mut items, &fmt[i..i + run]),
                }
                i += run;
                continue;
            }
            // Any other character (possibly multi-byte) is literal.
            let len = fmt[i..].chars().next().map_or(1, char::len_utf8);
            push_lit(&mut items, &fmt[i..i + len]);
            i += len;
        }
        Format { items }
    }

    /// How long (ms) a rendering stays the same: 1 with fractions of a
    /// second or `x`, else 1000 — what a caller may cache it for.
    pub fn resolution_ms(&self) -> i64 {
        let fine = self
            .items
            .iter()
            .any(|i| matches!(i, Item::Frac(_) | Item::UnixMs));
        if fine { 1 } else { 1000 }
    }

    /// Appends the rendering of `tm` to `out`. `epoch_ms` is only used by `X` and `x`
    /// (it should be the instant `tm` was made from). Allocates nothing beyond `out`'s growth.
    pub fn render(&self, tm: &Tm, epoch_ms: i64, out: &mut Vec<u8>) {
        for item in &self.items {
            match item {
                Item::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Item::Year4 => push_signed(out, i64::from(tm.year), 4),
                Item::Year2 => push_num(out, u64::from(tm.year.rem_euclid(100) as u32), 2),
                Item::Month => push_num(out, u64::from(tm.month), 1),
                Item::Month2 => push_num(out, u64::from(tm.month), 2),
                Item::Day => push_num(out, u64::from(tm.day), 1),
                Item::Day2 => push_num(out, u64::from(tm.day), 2),
                Item::Hour24 => push_num(out, u64::from(tm.hour), 1),
                Item::Hour24Pad => push_num(out, u64::from(tm.hour), 2),
                Item::Hour12 => push_num(out, u64::from(hour12(tm.hour)), 1),
                Item::Hour12Pad => push_num(out, u64::from(hour12(tm.hour)), 2),
                Item::Min => push_num(out, u64::from(tm.min), 1),
                Item::MinPad => push_num(out, u64::from(tm.min), 2),
                Item::Sec => push_num(out, u64::from(tm.sec), 1),
                Item::SecPad => push_num(out, u64::from(tm.sec), 2),
                Item::Frac(n) => {
                    let nanos = u64::from(tm.millis) * 1_000_000;
                    push_num(out, nanos / 10u64.pow(9 - n), *n as usize);
                }
                Item::Offset => push_offset(out, tm.utc_offset_secs, true),
                Item::OffsetCompact => push_offset(out, tm.utc_offset_secs, false),
                Item::Upper => out.extend_from_slice(if tm.hour < 12 { b"AM" } else { b"PM" }),
                Item::Lower => out.extend_from_slice(if tm.hour < 12 { b"am" } else { b"pm" }),
                Item::UnixSecs => push_signed(out, epoch_ms.div_euclid(1000), 1),
                Item::UnixMs => push_signed(out, epoch_ms, 1),
            }
        }
    }
}

/// The token for a run of `run` copies of the letter `b`, if supported.
fn token(b: u8, run: usize) -> Option<Item> {
    let item = match (b, run) {
        (b'Y', 4) => Item::Year4,
        (b'Y', 2) => Item::Year2,
        (b'M', 1) => Item::Month,
        (b'M', 2) => Item::Month2,
        (b'D', 1) => Item::Day,
        (b'D', 2) => Item::Day2,
        (b'H', 1) => Item::Hour24,
        (b'H', 2) => Item::Hour24Pad,
        (b'h', 1) => Item::Hour12,
        (b'h', 2) => Item::Hour12Pad,
        (b'm', 1) => Item::Min,
        (b'm', 2) => Item::MinPad,
        (b's', 1) => Item::Sec,
        (b's', 2) => Item::SecPad,
        (b'S', 1..=9) => Item::Frac(run as u32),
        (b'Z', 1) => Item::Offset,
        (b'Z', 2) => Item::OffsetCompact,
        (b'A', 1) => Item::Upper,
        (b'a', 1) => Item::Lower,
        (b'X', 1) => Item::UnixSecs,
        (b'x', 1) => Item::UnixMs,
        _ => return None,
    };
    Some(item)
}

/// Appends literal text, merging with a preceding literal.
fn push_lit(items: &mut Vec<Item>, s: &str) {
    if s.is_empty() {
        return;
    }
    if let Some(Item::Lit(prev)) = items.last_mut() {
        prev.push_str(s);
    } else {
        items.push(Item::Lit(s.to_owned()));
    }
}

fn hour12(hour: u32) -> u32 {
    match hour % 12 {
        0 => 12,
        h => h,
    }
}

/// Appends `v` in decimal, zero-padded to at least `width` digits.
fn push_num(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        if let Some(d) = buf.get_mut(start) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let digits = buf.len() - start;
    for _ in digits..width {
        out.push(b'0');
    }
    out.extend_from_slice(buf.get(start..).unwrap_or_default());
}

/// Like [`push_num`] but with a leading `-` for negative values (padding excludes the sign).
fn push_signed(out: &mut Vec<u8>, v: i64, width: usize) {
    if v < 0 {
        out.push(b'-');
    }
    push_num(out, v.unsigned_abs(), width);
}

/// `+02:00` (colon) or `+0200`.
fn push_offset(out: &mut Vec<u8>, offset_secs: i32, colon: bool) {
    out.push(if offset_secs < 0 { b'-' } else { b'+' });
    let abs = u64::from(offset_secs.unsigned_abs());
    push_num(out, abs / 3600, 2);
    if colon {
        out.push(b':');
    }
    push_num(out, abs % 3600 / 60, 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tm(year: i32, month: u32, day: u32, hms: (u32, u32, u32), millis: u32, off: i32) -> Tm {
        Tm {
            year,
            month,
            day,
            hour: hms.0,
            min: hms.1,
            sec: hms.2,
            millis,
            utc_offset_secs: off,
        }
    }

    fn render(fmt: &str, t: &Tm, epoch_ms: i64) -> String {
        let mut out = Vec::new();
        Format::parse(fmt).render(t, epoch_ms, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn renders_tokens() {
        let afternoon = tm(2024, 3, 5, (14, 7, 9), 45, 7200);
        let midnight = tm(2001, 11, 23, (0, 0, 0), 0, -19_800);
        let noon = tm(1999, 12, 31, (12, 59, 59), 999, 0);
        let ancient = tm(-44, 3, 15, (9, 5, 1), 7, 3600);
        let cases: &[(&str, Tm, i64, &str)] = &[
            (
                "YYYY-MM-DD HH:mm:ss.SSS Z",
                afternoon,
                0,
                "2024-03-05 14:07:09.045 +02:00",
            ),
            ("YYYY-MM-DDTHH:mm:ss", afternoon, 0, "2024-03-05T14:07:09"),
            ("YY M D H h m s", afternoon, 0, "24 3 5 14 2 7 9"),
            ("hh:mm A a", afternoon, 0, "02:07 PM pm"),
            ("h hh A a", midnight, 0, "12 12 AM am"),
            ("h hh A a", noon, 0, "12 12 PM pm"),
            ("Z ZZ", midnight, 0, "-05:30 -0530"),
            ("Z ZZ", noon, 0, "+00:00 +0000"),
            ("S SS SSS SSSS", noon, 0, "9 99 999 9990"),
            ("S SS SSS SSSSSS", afternoon, 0, "0 04 045 045000"),
            ("X x", noon, 1_700_000_000_123, "1700000000 1700000000123"),
            ("X x", noon, -1_500, "-2 -1500"),
            ("YYYY YY", ancient, 0, "-0044 56"),
            ("YYYY", tm(812, 1, 1, (0, 0, 0), 0, 0), 0, "0812"),
            ("[at] HH[h]mm", afternoon, 0, "at 14h07"),
            ("[YYYY] YYYY", afternoon, 0, "YYYY 2024"),
            ("[] [unclosed", afternoon, 0, " [unclo9ed"),
            ("MMM dddd Do ZZZ YYY", afternoon, 0, "MMM dddd 5o ZZZ YYY"),
            ("été — HH", afternoon, 0, "été — 14"),
            ("", afternoon, 0, ""),
        ];
        for (fmt, t, epoch, want) in cases {
            assert_eq!(render(fmt, t, *epoch), *want, "format {fmt:?}");
        }
    }

    #[test]
    fn render_appends() {
        let mut out = b"prefix ".to_vec();
        Format::parse("HH:mm").render(&tm(2024, 1, 1, (9, 3, 0), 0, 0), 0, &mut out);
        assert_eq!(out, b"prefix 09:03");
    }

    #[test]
    fn parse_merges_literals() {
        let cases: &[(&str, &[Item])] = &[
            (
                "YYYY-MM",
                &[Item::Year4, Item::Lit("-".into()), Item::Month2],
            ),
            ("[a]-[b]", &[Item::Lit("a-b".into())]),
            ("MMM", &[Item::Lit("MMM".into())]),
            ("SSSSSSSSS", &[Item::Frac(9)]),
            ("SSSSSSSSSS", &[Item::Lit("SSSSSSSSSS".into())]),
        ];
        for (fmt, want) in cases {
            assert_eq!(Format::parse(fmt).items, *want, "format {fmt:?}");
        }
    }

    #[test]
    fn utc_conversion() {
        let cases: &[(i64, Tm)] = &[
            (0, tm(1970, 1, 1, (0, 0, 0), 0, 0)),
            (-1, tm(1969, 12, 31, (23, 59, 59), 999, 0)),
            (951_782_400_000, tm(2000, 2, 29, (0, 0, 0), 0, 0)),
            (1_700_000_000_123, tm(2023, 11, 14, (22, 13, 20), 123, 0)),
            (4_107_542_400_000, tm(2100, 3, 1, (0, 0, 0), 0, 0)),
            (-62_135_596_800_000, tm(1, 1, 1, (0, 0, 0), 0, 0)),
        ];
        for (epoch, want) in cases {
            assert_eq!(utc_tm(*epoch), *want, "epoch {epoch}");
        }
    }

    #[test]
    fn local_time_is_consistent_with_utc() {
        // Whatever TZ this machine has, local time minus its offset must be UTC.
        let cases: &[(i64, u32)] = &[
            (946_684_800_000, 0),
            (1_700_000_000_123, 123),
            (1_719_000_000_999, 999),
            (1_735_689_599_500, 500),
        ];
        for (epoch, millis) in cases {
            let local = local_tm(*epoch);
            assert_eq!(local.millis, *millis, "epoch {epoch}");
            assert_eq!(local.utc_offset_secs % 60, 0, "epoch {epoch}");
            assert!(local.utc_offset_secs.abs() < 86_400, "epoch {epoch}");
            assert!(local.hour < 24 && local.min < 60 && local.sec < 61);
            let shifted = utc_tm(epoch + i64::from(local.utc_offset_secs) * 1000);
            assert_eq!(
                Tm {
                    utc_offset_secs: local.utc_offset_secs,
                    ..shifted
                },
                local,
                "epoch {epoch}"
            );
        }
    }
}
