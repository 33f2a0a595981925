//! Cron schedules for corral's `cron_restart` option.
//!
//! This module owns: the cron grammar (5 fields, or 6 with seconds first),
//! its parsed form (one bit set per field plus the Vixie cron day rule),
//! the search for the next matching wall-clock ([`Civil`]) time, the
//! proleptic Gregorian calendar arithmetic that search needs, and the
//! conversions between epoch seconds and local civil time (through libc
//! `localtime_r` / `mktime`, including the DST gap and fold handling used by
//! [`Cron::next_fire`]). It does not own timers or the restarts themselves.

use libc::c_int;

/// Longest cron expression accepted, in bytes.
pub const MAX_EXPR_LEN: usize = 256;

/// How many years past the start [`Cron::next_after`] searches before giving
/// up. Any satisfiable expression matches within 8 years (Feb 29 skips at
/// most 1900-style century years); the margin is generous and still cheap.
pub const MAX_YEARS: i32 = 30;

/// How many candidate civil times [`Cron::next_fire`] tries when a candidate
/// maps to an epoch second that is not after `now` (DST fold or gap).
pub const MAX_FIRE_RETRIES: u32 = 8;

/// `tm_year` counts years from this one.
const TM_YEAR_BASE: i32 = 1900;

/// Days in a 400-year Gregorian cycle.
#[cfg(test)]
const DAYS_PER_400_YEARS: i64 = 146_097;

/// 1970-01-01 was a Thursday (Sunday = 0).
const EPOCH_WEEKDAY: i64 = 4;

/// Days before the first of each month in a non-leap year.
const DAYS_BEFORE_MONTH: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DOW_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A wall-clock time without a time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Civil {
    pub year: i32,
    /// 1-12.
    pub month: u32,
    /// 1-31.
    pub day: u32,
    /// 0-23.
    pub hour: u32,
    /// 0-59.
    pub min: u32,
    /// 0-59.
    pub sec: u32,
}

/// A parsed cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    /// Bit n set = second n matches (0-59).
    seconds: u64,
    /// Bit n set = minute n matches (0-59).
    minutes: u64,
    /// Bit n set = hour n matches (0-23).
    hours: u64,
    /// Bit n set = day-of-month n matches (1-31).
    days: u64,
    /// Bit n set = month n matches (1-12).
    months: u64,
    /// Bit n set = weekday n matches (0-6, Sunday = 0).
    weekdays: u64,
    /// Day-of-month was not `*` / `?`.
    dom_restricted: bool,
    /// Day-of-week was not `*` / `?`.
    dow_restricted: bool,
}

/// How one cron field is spelled and bounded.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for consecutive values starting at `min` (empty = numbers only).
    names: &'static [&'static str],
    /// `?` is allowed (day-of-month and day-of-week).
    is_day: bool,
    /// Day-of-week: `SUN` ends a range as 7 and bit 7 folds onto bit 0.
    is_dow: bool,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    is_day: false,
    is_dow: false,
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    is_day: false,
    is_dow: false,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    is_day: false,
    is_dow: false,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    is_day: true,
    is_dow: false,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
    is_day: false,
    is_dow: false,
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &DOW_NAMES,
    is_day: true,
    is_dow: true,
};

/// One parsed field: its bit set and whether it was written as `*` / `?`.
struct FieldSet {
    bits: u64,
    star: bool,
}

impl Cron {
    /// Parses 5 fields (minute hour day-of-month month day-of-week; the
    /// second is 0) or 6 fields (second first). Errors name the expression,
    /// the field and what is wrong with it.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        if expr.len() > MAX_EXPR_LEN {
            return Err(format!(
                "cron expression is {} bytes long, over the limit of {MAX_EXPR_LEN} bytes",
                expr.len()
            ));
        }
        let shown = expr.trim();
        let parts: Vec<&str> = expr.split_whitespace().collect();
        let [sec, min, hour, dom, month, dow] = match parts.as_slice() {
            [min, hour, dom, month, dow] => ["0", min, hour, dom, month, dow],
            [sec, min, hour, dom, month, dow] => [*sec, min, hour, dom, month, dow],
            other => {
                return Err(format!(
                    "cron `{shown}`: expected 5 or 6 fields, got {}",
                    other.len()
                ));
            }
        };
        let wrap = |e: String| format!("cron `{shown}`: {e}");
        let sec = parse_field(&SECOND, sec).map_err(wrap)?;
        let min = parse_field(&MINUTE, min).map_err(wrap)?;
        let hour = parse_field(&HOUR, hour).map_err(wrap)?;
        let dom = parse_field(&DAY_OF_MONTH, dom).map_err(wrap)?;
        let month = parse_field(&MONTH, month).map_err(wrap)?;
        let dow = parse_field(&DAY_OF_WEEK, dow).map_err(wrap)?;
        Ok(Cron {
            seconds: sec.bits,
            minutes: min.bits,
            hours: hour.bits,
            days: dom.bits,
            months: month.bits,
            weekdays: dow.bits,
            dom_restricted: !dom.star,
            dow_restricted: !dow.star,
        })
    }

    /// The first civil time strictly after `t` that matches, or `None` if
    /// there is none within [`MAX_YEARS`] years (e.g. `0 0 30 2 *`) or `t`
    /// is not a valid civil time (a field out of range, Feb 30, ...).
    ///
    /// Non-matching months and days are skipped whole and hours, minutes and
    /// seconds jump to the next matching value, so the cost is bounded by
    /// roughly (days searched + a few) steps, never by seconds.
    pub fn next_after(&self, t: Civil) -> Option<Civil> {
        if !t.is_valid() {
            return None;
        }
        let last_year = t.year.saturating_add(MAX_YEARS);
        let mut c = t.next_second()?;
        loop {
            if c.year > last_year {
                return None;
            }
            match next_bit(self.months, c.month) {
                None => {
                    c = Civil::midnight(c.year.checked_add(1)?, 1, 1);
                    continue;
                }
                Some(m) if m != c.month => {
                    c = Civil::midnight(c.year, m, 1);
                    continue;
                }
                Some(_) => {}
            }
            if !self.day_matches(c.year, c.month, c.day) {
                c = c.next_day()?;
                continue;
            }
            match next_bit(self.hours, c.hour) {
                None => {
                    c = c.next_day()?;
                    continue;
                }
                Some(h) if h != c.hour => {
                    c.hour = h;
                    c.min = 0;
                    c.sec = 0;
                }
                Some(_) => {}
            }
            match next_bit(self.minutes, c.min) {
                None => {
                    c = c.next_hour()?;
                    continue;
                }
                Some(m) if m != c.min => {
                    c.min = m;
                    c.sec = 0;
                }
                Some(_) => {}
            }
            match next_bit(self.seconds, c.sec) {
                None => c = c.next_minute()?,
                Some(s) => {
                    c.sec = s;
                    return Some(c);
                }
            }
        }
    }

    /// The next firing strictly after epoch second `now`, in the local time
    /// zone, as an epoch second.
    ///
    /// The search runs on local civil time; each candidate is converted back
    /// with `mktime`. In a DST fold (a civil time that occurs twice) the
    /// earliest occurrence after `now` is used, so a job fires once per
    /// matching civil time; the search moves forward in civil time, so once
    /// `now` is past the end of the fold's first pass (e.g. 01:59:59 before
    /// a 02:00 fall-back) the repeated hour is not searched again, and a
    /// schedule like `* * * * * *` resumes at 02:00 after the fold. In a DST gap (a civil time that does not exist)
    /// the candidate resolves to what `mktime` gives with `tm_isdst = -1`
    /// (see [`local_epoch`]); if that is not after `now`, to the later of the
    /// two readings, which is the instant just past the gap. If a candidate
    /// still is not after `now`, the search continues from the candidate, at
    /// most [`MAX_FIRE_RETRIES`] times.
    pub fn next_fire(&self, now: i64) -> Option<i64> {
        let mut from = local_civil(now);
        for _ in 0..MAX_FIRE_RETRIES {
            let candidate = self.next_after(from)?;
            if let Some(epoch) = resolve_after(candidate, now) {
                return Some(epoch);
            }
            from = candidate;
        }
        None
    }

    /// The Vixie cron day rule: when both day fields are restricted a day
    /// matches if either does; otherwise both must (the `*` one always does).
    fn day_matches(&self, year: i32, month: u32, day: u32) -> bool {
        let dom = has_bit(self.days, day);
        let dow = has_bit(self.weekdays, weekday(year, month, day));
        if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }
}

/// Local civil time of an epoch second (`timefmt::local_tm`, which falls
/// back to UTC where the C library cannot convert it). A leap second
/// (second 60) reads as second 59.
pub fn local_civil(epoch: i64) -> Civil {
    let t = crate::timefmt::local_tm(epoch.saturating_mul(1000));
    Civil {
        year: t.year,
        month: t.month,
        day: t.day,
        hour: t.hour,
        min: t.min,
        sec: t.sec.min(59),
    }
}

/// Epoch second of a local civil time (`mktime` with `tm_isdst = -1`).
///
/// A time inside a DST gap (skipped by a spring-forward) does not exist; it
/// resolves to whatever the C library's `mktime` gives (glibc normally reads
/// it with the offset in force before the gap, which lands past the gap).
/// In a DST fold the C library picks one of the two instants. `None` if `c`
/// is not a valid civil time or `mktime` fails.
pub fn local_epoch(c: Civil) -> Option<i64> {
    mktime_with(c, -1)
}

/// Converts `c` with `mktime`, passing `isdst` as `tm_isdst`.
fn mktime_with(c: Civil, isdst: c_int) -> Option<i64> {
    if !c.is_valid() {
        return None;
    }
    crate::timefmt::init();
    // SAFETY: `libc::tm` holds only integers and (on some platforms) a
    // `tm_zone` pointer; all-zero bits are a valid value for every field.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = c.year.checked_sub(TM_YEAR_BASE)?;
    tm.tm_mon = c_int::try_from(c.month - 1).ok()?;
    tm.tm_mday = c_int::try_from(c.day).ok()?;
    tm.tm_hour = c_int::try_from(c.hour).ok()?;
    tm.tm_min = c_int::try_from(c.min).ok()?;
    tm.tm_sec = c_int::try_from(c.sec).ok()?;
    tm.tm_isdst = isdst;
    // mktime returns -1 both for failure and for 1969-12-31 23:59:59 UTC; a
    // successful call overwrites this sentinel with the real day of year.
    tm.tm_yday = -1;
    // SAFETY: `tm` is a live, exclusively borrowed local for the whole call;
    // `mktime` only reads and normalizes it.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 && tm.tm_yday == -1 {
        return None;
    }
    // `time_t` is 32 bits on some targets, so this is not always a no-op.
    #[allow(clippy::useless_conversion)]
    Some(i64::from(t))
}

/// Resolves a candidate civil time to an epoch second after `now`, or `None`
/// if every reading of it is at or before `now`.
fn resolve_after(c: Civil, now: i64) -> Option<i64> {
    // Each reading with an explicit DST flag, and whether it reads back as `c`.
    let readings = [0, 1].map(|isdst| {
        mktime_with(c, isdst).map(|e| Reading {
            epoch: e,
            exact: local_civil(e) == c,
        })
    });
    choose_epoch(now, &readings, local_epoch(c))
}

/// One `mktime` reading of a civil time.
#[derive(Clone, Copy, Debug)]
struct Reading {
    epoch: i64,
    /// `localtime_r` of `epoch` gives the civil time back (it exists).
    exact: bool,
}

/// Picks the epoch for a candidate from its readings (see
/// [`Cron::next_fire`]): the earliest exact reading after `now`; none if the
/// time exists but only at or before `now`; for a gap, `mktime`'s own
/// `guess`, else the latest reading, whichever is first after `now`.
fn choose_epoch(now: i64, readings: &[Option<Reading>], guess: Option<i64>) -> Option<i64> {
    let exact = readings.iter().flatten().filter(|r| r.exact);
    if exact.clone().next().is_some() {
        return exact.map(|r| r.epoch).filter(|&e| e > now).min();
    }
    if let Some(g) = guess.filter(|&g| g > now) {
        return Some(g);
    }
    readings
        .iter()
        .flatten()
        .map(|r| r.epoch)
        .max()
        .filter(|&e| e > now)
}

impl Civil {
    /// Midnight at the start of the given day.
    fn midnight(year: i32, month: u32, day: u32) -> Civil {
        Civil {
            year,
            month,
            day,
            hour: 0,
            min: 0,
            sec: 0,
        }
    }

    /// Every field is within range, including the day for its month.
    fn is_valid(&self) -> bool {
        (1..=12).contains(&self.month)
            && (1..=days_in_month(self.year, self.month)).contains(&self.day)
            && self.hour < 24
            && self.min < 60
            && self.sec < 60
    }

    /// Midnight of the following day; `None` past the last `i32` year.
    fn next_day(self) -> Option<Civil> {
        if self.day < days_in_month(self.year, self.month) {
            Some(Civil::midnight(self.year, self.month, self.day + 1))
        } else if self.month < 12 {
            Some(Civil::midnight(self.year, self.month + 1, 1))
        } else {
            Some(Civil::midnight(self.year.checked_add(1)?, 1, 1))
        }
    }

    fn next_hour(self) -> Option<Civil> {
        if self.hour < 23 {
            Some(Civil {
                hour: self.hour + 1,
                min: 0,
                sec: 0,
                ..self
            })
        } else {
            self.next_day()
        }
    }

    fn next_minute(self) -> Option<Civil> {
        if self.min < 59 {
            Some(Civil {
                min: self.min + 1,
                sec: 0,
                ..self
            })
        } else {
            self.next_hour()
        }
    }

    fn next_second(self) -> Option<Civil> {
        if self.sec < 59 {
            Some(Civil {
                sec: self.sec + 1,
                ..self
            })
        } else {
            self.next_minute()
        }
    }
}

fn is_leap(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Leap years in `1..=year` (negative for years before 1, counting year 0
/// and the proleptic ones), so `leaps_through(b) - leaps_through(a)` counts
/// the leap years in `a+1..=b`.
fn leaps_through(year: i64) -> i64 {
    year.div_euclid(4) - year.div_euclid(100) + year.div_euclid(400)
}

/// Days from 1970-01-01 to January 1 of `year`.
fn days_before_year(year: i64) -> i64 {
    (year - 1970) * 365 + leaps_through(year - 1) - leaps_through(1969)
}

/// Days from 1970-01-01 to the start of `month` (1-12) in `year`.
fn days_before_month(year: i32, month: u32) -> i64 {
    let index = month.saturating_sub(1) as usize;
    let mut days = DAYS_BEFORE_MONTH.get(index).copied().unwrap_or(0);
    if month > 2 && is_leap(year) {
        days += 1;
    }
    days_before_year(i64::from(year)) + i64::from(days)
}

/// Days from 1970-01-01 to the given date (proleptic Gregorian; negative
/// before 1970).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    days_before_month(year, month) + i64::from(day) - 1
}

/// The date `days` days after 1970-01-01, as (year, month, day): the
/// inverse of `days_from_civil`, which the tests check it against.
#[cfg(test)]
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Estimate the year from the mean Gregorian year, then correct it.
    let mut year = 1970 + (days.saturating_mul(400)).div_euclid(DAYS_PER_400_YEARS);
    while days_before_year(year) > days {
        year -= 1;
    }
    while days_before_year(year + 1) <= days {
        year += 1;
    }
    // Within one year, so 0..366 and the cast cannot truncate.
    let mut day_of_year = (days - days_before_year(year)) as u32;
    let leap = i32::try_from(year).map(is_leap).unwrap_or(false);
    for month in 1..=12 {
        let len = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if day_of_year < len {
            return (year, month, day_of_year + 1);
        }
        day_of_year -= len;
    }
    (year, 12, 31)
}

/// Day of the week, Sunday = 0.
fn weekday(year: i32, month: u32, day: u32) -> u32 {
    // rem_euclid(7) is 0..7, so the cast cannot truncate.
    (days_from_civil(year, month, day) + EPOCH_WEEKDAY).rem_euclid(7) as u32
}

fn has_bit(bits: u64, n: u32) -> bool {
    n < u64::BITS && bits & (1 << n) != 0
}

/// The lowest set bit at or above `from`.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    let above = bits & u64::MAX.checked_shl(from)?;
    (above != 0).then(|| above.trailing_zeros())
}

/// Parses one field: a comma list of `*`, `?`, `v`, `a-b`, `*/n`, `a-b/n`,
/// `a/n`. Errors name the field but not the expression.
fn parse_field(field: &Field, text: &str) -> Result<FieldSet, String> {
    let mut set = FieldSet {
        bits: 0,
        star: false,
    };
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{} has an empty item in `{text}`", field.name));
        }
        if item.contains('#') {
            return Err(unsupported(field, item));
        }
        let (base, step) = match item.split_once('/') {
            None => (item, None),
            Some((_, step)) if step.contains('/') => {
                return Err(format!(
                    "{} item `{item}` has more than one `/`",
                    field.name
                ));
            }
            Some((base, step)) => (base, Some(parse_step(field, item, step)?)),
        };
        let (lo, hi) = if base == "*" || base == "?" {
            if base == "?" && !field.is_day {
                return Err(format!(
                    "{} `?` is only allowed in day-of-month and day-of-week",
                    field.name
                ));
            }
            if step.is_none() {
                set.star = true;
            }
            (field.min, field.max)
        } else if let Some((a, b)) = base.split_once('-') {
            if b.contains('-') {
                return Err(format!("{} range `{base}` is malformed", field.name));
            }
            let lo = parse_value(field, item, a, false)?;
            let hi = parse_value(field, item, b, true)?;
            if lo > hi {
                return Err(format!(
                    "{} range `{base}` is reversed (start is after end)",
                    field.name
                ));
            }
            (lo, hi)
        } else {
            let v = parse_value(field, item, base, false)?;
            (v, if step.is_some() { field.max } else { v })
        };
        let step = step.unwrap_or(1) as usize;
        for v in (lo..=hi).step_by(step) {
            set.bits |= 1 << v;
        }
    }
    if field.is_dow && has_bit(set.bits, 7) {
        set.bits = (set.bits & !(1 << 7)) | 1;
    }
    Ok(set)
}

/// Parses the `n` of a `/n` step: 1 up to the field's span.
fn parse_step(field: &Field, item: &str, text: &str) -> Result<u32, String> {
    let span = field.max - field.min + 1;
    if text.is_empty() {
        return Err(format!("{} step is empty in `{item}`", field.name));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{} step `{text}` in `{item}` is not a number",
            field.name
        ));
    }
    match text.parse::<u32>() {
        Ok(0) => Err(format!(
            "{} step 0 in `{item}` is not allowed (steps start at 1)",
            field.name
        )),
        Ok(n) if n <= span => Ok(n),
        _ => Err(format!(
            "{} step {text} in `{item}` is out of range 1-{span}",
            field.name
        )),
    }
}

/// Parses one value (a number or a name) of `item`. `range_end` lets `SUN`
/// end a day-of-week range as 7 (`FRI-SUN`).
fn parse_value(field: &Field, item: &str, text: &str, range_end: bool) -> Result<u32, String> {
    if text.is_empty() {
        return Err(format!("{} has an empty value in `{item}`", field.name));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(v) if (field.min..=field.max).contains(&v) => Ok(v),
            _ => Err(format!(
                "{} {text} is out of range {}-{}",
                field.name, field.min, field.max
            )),
        };
    }
    if let Some(v) = lookup_name(field, text) {
        return Ok(if field.is_dow && range_end && v == 0 {
            7
        } else {
            v
        });
    }
    if is_quartz_extension(field, text) {
        return Err(unsupported(field, item));
    }
    if field.names.is_empty() {
        Err(format!("{} value `{text}` is not a number", field.name))
    } else {
        Err(format!(
            "{} name `{text}` is unknown (expected a number or one of {})",
            field.name,
            field.names.join(", ")
        ))
    }
}

fn lookup_name(field: &Field, text: &str) -> Option<u32> {
    let index = field
        .names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text))?;
    u32::try_from(index).ok().map(|i| field.min + i)
}

/// `L`, `W`, `LW`, or a number / name followed by `L` or `W` (`15W`, `5L`).
fn is_quartz_extension(field: &Field, text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    let stem = upper
        .strip_suffix("LW")
        .or_else(|| upper.strip_suffix('L'))
        .or_else(|| upper.strip_suffix('W'));
    match stem {
        None => false,
        Some(stem) => {
            stem.is_empty()
                || stem.bytes().all(|b| b.is_ascii_digit())
                || lookup_name(field, stem).is_some()
        }
    }
}

fn unsupported(field: &Field, item: &str) -> String {
    format!(
        "{} `{item}` is not supported (L, W and # are not supported)",
        field.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn civ(year: i32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Civil {
        Civil {
            year,
            month,
            day,
            hour,
            min,
            sec,
        }
    }

    #[test]
    fn parse_equivalences() {
        let table: &[(&str, &str)] = &[
            ("* * * * *", "0 * * * * *"),
            ("0 0 1 */3 *", "0 0 1 1,4,7,10 *"),
            ("0 12 * * MON-FRI", "0 12 * * 1-5"),
            ("0 12 * * mon-fri", "0 12 * * 1,2,3,4,5"),
            ("* * * jan-mar *", "* * * 1-3 *"),
            ("* * * Jan,DEC *", "* * * 1,12 *"),
            ("0 0 * * 7", "0 0 * * 0"),
            ("0 0 * * SUN", "0 0 * * 0"),
            ("0 0 * * 5-7", "0 0 * * 0,5,6"),
            ("0 0 * * FRI-SUN", "0 0 * * 0,5,6"),
            ("0 0 * * 0-7", "0 0 * * 0-6"),
            ("0 0 ? * *", "0 0 * * *"),
            ("0 0 * * ?", "0 0 * * *"),
            ("5/20 * * * *", "5,25,45 * * * *"),
            ("10-30/10 * * * *", "10,20,30 * * * *"),
            ("*/15 * * * * *", "0,15,30,45 * * * * *"),
            ("0 */6 * * *", "0 0,6,12,18 * * *"),
            ("0 0 */10 * *", "0 0 1,11,21,31 * *"),
            ("  0   0 * *   *  ", "0 0 * * *"),
            ("1-3,2-4 * * * *", "1,2,3,4 * * * *"),
            ("59 23 31 12 *", "0 59 23 31 12 *"),
        ];
        for &(expr, same) in table {
            let a = Cron::parse(expr).map_err(|e| format!("{expr}: {e}"));
            let b = Cron::parse(same).map_err(|e| format!("{same}: {e}"));
            assert_eq!(a, b, "`{expr}` should equal `{same}`");
            assert!(a.is_ok(), "`{expr}` should parse");
        }
    }

    #[test]
    fn parse_field_bits() {
        // (expr, seconds, minutes, hours, days, months, weekdays)
        let table: &[(&str, [u64; 6])] = &[
            (
                "* * * * *",
                [
                    1,
                    (1 << 60) - 1,
                    (1 << 24) - 1,
                    ((1 << 32) - 1) & !1,
                    ((1 << 13) - 1) & !1,
                    (1 << 7) - 1,
                ],
            ),
            (
                "7 8 9 10 11 6",
                [1 << 7, 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 6],
            ),
            (
                "59 59 23 31 12 *",
                [1 << 59, 1 << 59, 1 << 23, 1 << 31, 1 << 12, (1 << 7) - 1],
            ),
        ];
        for (expr, want) in table {
            let c = Cron::parse(expr).map_err(|e| format!("{expr}: {e}"));
            let got = c.map(|c| [c.seconds, c.minutes, c.hours, c.days, c.months, c.weekdays]);
            assert_eq!(got, Ok(*want), "bits of `{expr}`");
        }
    }

    #[test]
    fn parse_day_restriction_flags() {
        // (expr, dom_restricted, dow_restricted)
        let table: &[(&str, bool, bool)] = &[
            ("0 0 * * *", false, false),
            ("0 0 ? * ?", false, false),
            ("0 0 13 * *", true, false),
            ("0 0 * * FRI", false, true),
            ("0 0 13 * FRI", true, true),
            ("0 0 */2 * *", true, false),
            ("0 0 * * */2", false, true),
            ("0 0 1-31 * 0-7", true, true),
        ];
        for &(expr, dom, dow) in table {
            let c = Cron::parse(expr).map(|c| (c.dom_restricted, c.dow_restricted));
            assert_eq!(c, Ok((dom, dow)), "flags of `{expr}`");
        }
    }

    #[test]
    fn parse_errors() {
        let long = "0 ".repeat(MAX_EXPR_LEN);
        // (expr, substring the error must contain)
        let table: &[(&str, &str)] = &[
            ("* * *", "cron `* * *`: expected 5 or 6 fields, got 3"),
            ("", "expected 5 or 6 fields, got 0"),
            ("* * * * * * *", "expected 5 or 6 fields, got 7"),
            (&long, "over the limit of 256 bytes"),
            (
                "60 * * * *",
                "cron `60 * * * *`: minute 60 is out of range 0-59",
            ),
            ("60 * * * * *", "second 60 is out of range 0-59"),
            ("* 24 * * *", "hour 24 is out of range 0-23"),
            ("* * 0 * *", "day-of-month 0 is out of range 1-31"),
            ("* * 32 * *", "day-of-month 32 is out of range 1-31"),
            ("* * * 13 *", "month 13 is out of range 1-12"),
            ("* * * 0 *", "month 0 is out of range 1-12"),
            ("* * * * 8", "day-of-week 8 is out of range 0-7"),
            (
                "99999999999 * * * *",
                "minute 99999999999 is out of range 0-59",
            ),
            ("1-60 * * * *", "minute 60 is out of range 0-59"),
            ("*/0 * * * *", "minute step 0 in `*/0` is not allowed"),
            ("1-5/0 * * * *", "minute step 0 in `1-5/0` is not allowed"),
            (
                "*/61 * * * *",
                "minute step 61 in `*/61` is out of range 1-60",
            ),
            ("*/x * * * *", "minute step `x` in `*/x` is not a number"),
            ("*/ * * * *", "minute step is empty in `*/`"),
            ("1/2/3 * * * *", "minute item `1/2/3` has more than one `/`"),
            ("5-1 * * * *", "minute range `5-1` is reversed"),
            ("0 0 * * SAT-MON", "day-of-week range `SAT-MON` is reversed"),
            ("0 0 * DEC-JAN *", "month range `DEC-JAN` is reversed"),
            ("1-2-3 * * * *", "minute range `1-2-3` is malformed"),
            ("-5 * * * *", "minute has an empty value in `-5`"),
            ("5- * * * *", "minute has an empty value in `5-`"),
            ("* * * FOO *", "month name `FOO` is unknown"),
            ("* * * * FUNDAY", "day-of-week name `FUNDAY` is unknown"),
            ("x * * * *", "minute value `x` is not a number"),
            ("* * MON * *", "day-of-month value `MON` is not a number"),
            ("1,,2 * * * *", "minute has an empty item in `1,,2`"),
            ("1, * * * *", "minute has an empty item in `1,`"),
            (
                "? * * * *",
                "minute `?` is only allowed in day-of-month and day-of-week",
            ),
            ("* * L * *", "day-of-month `L` is not supported"),
            ("* * LW * *", "day-of-month `LW` is not supported"),
            ("* * 15W * *", "day-of-month `15W` is not supported"),
            ("* * * * 5L", "day-of-week `5L` is not supported"),
            ("* * * * FRIL", "day-of-week `FRIL` is not supported"),
            ("* * * * 5#3", "day-of-week `5#3` is not supported"),
        ];
        for &(expr, want) in table {
            match Cron::parse(expr) {
                Ok(c) => panic!("`{expr}` parsed as {c:?}, wanted error `{want}`"),
                Err(e) => assert!(e.contains(want), "`{expr}`: error `{e}` lacks `{want}`"),
            }
        }
    }

    #[test]
    fn errors_name_the_expression() {
        let table: &[(&str, &str)] = &[
            ("61 * * * *", "cron `61 * * * *`: "),
            (" 0 0 L * * ", "cron `0 0 L * *`: "),
        ];
        for &(expr, prefix) in table {
            let e = Cron::parse(expr).err().unwrap_or_default();
            assert!(
                e.starts_with(prefix),
                "`{expr}`: error `{e}` lacks `{prefix}`"
            );
        }
    }

    #[test]
    fn next_after_cases() {
        let table: &[(&str, Civil, Option<Civil>)] = &[
            (
                "*/2 * * * * *",
                civ(2024, 5, 5, 12, 0, 1),
                Some(civ(2024, 5, 5, 12, 0, 2)),
            ),
            (
                "*/2 * * * * *",
                civ(2024, 5, 5, 12, 0, 2),
                Some(civ(2024, 5, 5, 12, 0, 4)),
            ),
            (
                "*/2 * * * * *",
                civ(2024, 5, 5, 12, 0, 58),
                Some(civ(2024, 5, 5, 12, 1, 0)),
            ),
            (
                "*/15 * * * * *",
                civ(2024, 5, 5, 10, 20, 44),
                Some(civ(2024, 5, 5, 10, 20, 45)),
            ),
            (
                "*/15 * * * * *",
                civ(2024, 5, 5, 10, 20, 45),
                Some(civ(2024, 5, 5, 10, 21, 0)),
            ),
            (
                "* * * * *",
                civ(2024, 5, 5, 10, 20, 0),
                Some(civ(2024, 5, 5, 10, 21, 0)),
            ),
            (
                "* * * * *",
                civ(2024, 5, 5, 10, 20, 30),
                Some(civ(2024, 5, 5, 10, 21, 0)),
            ),
            (
                "0 0 * * *",
                civ(2024, 1, 31, 23, 59, 0),
                Some(civ(2024, 2, 1, 0, 0, 0)),
            ),
            (
                "0 0 * * *",
                civ(2023, 2, 28, 12, 0, 0),
                Some(civ(2023, 3, 1, 0, 0, 0)),
            ),
            (
                "0 0 * * *",
                civ(2024, 2, 28, 12, 0, 0),
                Some(civ(2024, 2, 29, 0, 0, 0)),
            ),
            (
                "30 * * * *",
                civ(2024, 3, 10, 23, 45, 0),
                Some(civ(2024, 3, 11, 0, 30, 0)),
            ),
            (
                "0 0 29 2 *",
                civ(2023, 3, 1, 0, 0, 0),
                Some(civ(2024, 2, 29, 0, 0, 0)),
            ),
            (
                "0 0 29 2 *",
                civ(2024, 2, 29, 0, 0, 0),
                Some(civ(2028, 2, 29, 0, 0, 0)),
            ),
            (
                "0 0 29 2 *",
                civ(1896, 3, 1, 0, 0, 0),
                Some(civ(1904, 2, 29, 0, 0, 0)),
            ),
            (
                "0 0 29 2 *",
                civ(1996, 3, 1, 0, 0, 0),
                Some(civ(2000, 2, 29, 0, 0, 0)),
            ),
            ("0 0 30 2 *", civ(2024, 1, 1, 0, 0, 0), None),
            ("0 0 31 4 *", civ(2024, 1, 1, 0, 0, 0), None),
            (
                "0 0 31 * *",
                civ(2024, 4, 1, 0, 0, 0),
                Some(civ(2024, 5, 31, 0, 0, 0)),
            ),
            (
                "0 12 * * MON-FRI",
                civ(2024, 1, 5, 12, 0, 0),
                Some(civ(2024, 1, 8, 12, 0, 0)),
            ),
            (
                "0 12 * * MON-FRI",
                civ(2024, 1, 6, 8, 0, 0),
                Some(civ(2024, 1, 8, 12, 0, 0)),
            ),
            (
                "0 12 * * MON-FRI",
                civ(2024, 1, 8, 11, 59, 59),
                Some(civ(2024, 1, 8, 12, 0, 0)),
            ),
            (
                "0 0 13 * FRI",
                civ(2024, 9, 1, 0, 0, 0),
                Some(civ(2024, 9, 6, 0, 0, 0)),
            ),
            (
                "0 0 13 * FRI",
                civ(2024, 9, 6, 0, 0, 0),
                Some(civ(2024, 9, 13, 0, 0, 0)),
            ),
            (
                "0 0 13 * FRI",
                civ(2024, 9, 13, 0, 0, 0),
                Some(civ(2024, 9, 20, 0, 0, 0)),
            ),
            (
                "0 0 */2 * MON",
                civ(2024, 1, 1, 0, 0, 0),
                Some(civ(2024, 1, 3, 0, 0, 0)),
            ),
            (
                "0 0 * * MON",
                civ(2024, 1, 1, 0, 0, 0),
                Some(civ(2024, 1, 8, 0, 0, 0)),
            ),
            (
                "0 0 ? * SUN",
                civ(2024, 1, 1, 0, 0, 0),
                Some(civ(2024, 1, 7, 0, 0, 0)),
            ),
            (
                "0 0 * * 7",
                civ(2024, 1, 1, 0, 0, 0),
                Some(civ(2024, 1, 7, 0, 0, 0)),
            ),
            (
                "0 0 1 * MON",
                civ(2024, 1, 1, 0, 0, 0),
                Some(civ(2024, 1, 8, 0, 0, 0)),
            ),
            (
                "59 59 23 31 12 *",
                civ(2024, 6, 1, 0, 0, 0),
                Some(civ(2024, 12, 31, 23, 59, 59)),
            ),
            (
                "59 59 23 31 12 *",
                civ(2024, 12, 31, 23, 59, 59),
                Some(civ(2025, 12, 31, 23, 59, 59)),
            ),
            (
                "0 0 0 1 1 *",
                civ(2024, 12, 31, 23, 59, 59),
                Some(civ(2025, 1, 1, 0, 0, 0)),
            ),
            (
                "* * * * * *",
                civ(2024, 12, 31, 23, 59, 59),
                Some(civ(2025, 1, 1, 0, 0, 0)),
            ),
            (
                "0 0 1 */3 *",
                civ(2024, 2, 15, 0, 0, 0),
                Some(civ(2024, 4, 1, 0, 0, 0)),
            ),
            (
                "0 0 1 */3 *",
                civ(2024, 10, 1, 0, 0, 0),
                Some(civ(2025, 1, 1, 0, 0, 0)),
            ),
            (
                "0 9 * JAN-MAR MON",
                civ(2024, 3, 29, 0, 0, 0),
                Some(civ(2025, 1, 6, 9, 0, 0)),
            ),
            (
                "0 0 1 jun *",
                civ(2024, 6, 1, 0, 0, 0),
                Some(civ(2025, 6, 1, 0, 0, 0)),
            ),
            ("0 0 * * *", civ(2024, 13, 1, 0, 0, 0), None),
            ("0 0 * * *", civ(2023, 2, 29, 0, 0, 0), None),
            ("0 0 * * *", civ(2024, 1, 1, 0, 0, 60), None),
            ("0 0 1 1 *", civ(i32::MAX, 6, 1, 0, 0, 0), None),
        ];
        for &(expr, from, want) in table {
            let cron = Cron::parse(expr).map_err(|e| format!("{expr}: {e}"));
            let got = cron.map(|c| c.next_after(from));
            assert_eq!(got, Ok(want), "`{expr}` after {from:?}");
        }
    }

    #[test]
    fn next_after_results_match_and_are_later() {
        // Cross-check against a brute-force minute scan over a window.
        let table: &[(&str, Civil)] = &[
            ("0 0 13 * FRI", civ(2024, 1, 1, 0, 0, 0)),
            ("*/7 3-5 * * *", civ(2024, 2, 28, 23, 0, 0)),
            ("0 0 29 * MON-WED", civ(2023, 12, 30, 0, 0, 0)),
            ("30 4 */5 jan,feb,dec *", civ(2023, 11, 30, 0, 0, 0)),
        ];
        for &(expr, start) in table {
            let Ok(cron) = Cron::parse(expr) else {
                panic!("`{expr}` should parse")
            };
            let mut t = start;
            for _ in 0..20 {
                let Some(next) = cron.next_after(t) else {
                    panic!("`{expr}` after {t:?} found nothing")
                };
                assert!(next > t, "`{expr}`: {next:?} not after {t:?}");
                let mut probe = t.next_minute();
                while let Some(p) = probe.filter(|p| *p < next) {
                    assert!(!matches_civil(&cron, p), "`{expr}` skipped {p:?}");
                    probe = p.next_minute();
                }
                assert!(
                    matches_civil(&cron, next),
                    "`{expr}`: {next:?} doesn't match"
                );
                t = next;
            }
        }
    }

    fn matches_civil(c: &Cron, t: Civil) -> bool {
        has_bit(c.seconds, t.sec)
            && has_bit(c.minutes, t.min)
            && has_bit(c.hours, t.hour)
            && has_bit(c.months, t.month)
            && c.day_matches(t.year, t.month, t.day)
    }

    #[test]
    fn weekdays() {
        // (year, month, day, weekday with Sunday = 0)
        let table: &[(i32, u32, u32, u32)] = &[
            (2024, 1, 1, 1),
            (1970, 1, 1, 4),
            (1969, 12, 31, 3),
            (2000, 2, 29, 2),
            (1900, 3, 1, 4),
            (2025, 1, 1, 3),
            (2024, 9, 6, 5),
            (2024, 9, 13, 5),
            (2024, 1, 7, 0),
        ];
        for &(y, m, d, want) in table {
            assert_eq!(weekday(y, m, d), want, "weekday of {y}-{m}-{d}");
        }
    }

    #[test]
    fn days_from_civil_known_dates() {
        // (year, month, day, days since 1970-01-01), checked against `date +%s`.
        let table: &[(i32, u32, u32, i64)] = &[
            (1970, 1, 1, 0),
            (1969, 12, 31, -1),
            (2024, 1, 1, 19_723),
            (2000, 2, 29, 11_016),
            (1900, 3, 1, -25_508),
            (2000, 3, 1, 11_017),
            (1600, 1, 1, -135_140),
        ];
        for &(y, m, d, want) in table {
            assert_eq!(days_from_civil(y, m, d), want, "days of {y}-{m}-{d}");
            assert_eq!(
                civil_from_days(want),
                (i64::from(y), m, d),
                "date of day {want}"
            );
        }
    }

    #[test]
    fn civil_from_days_round_trips() {
        let table: &[(i64, i64)] = &[(-800_000, -700_000), (-1_000, 1_000), (700_000, 800_000)];
        for &(lo, hi) in table {
            for days in lo..hi {
                let (y, m, d) = civil_from_days(days);
                let Ok(y) = i32::try_from(y) else {
                    panic!("year {y} out of range")
                };
                assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            }
        }
    }

    #[test]
    fn leap_years() {
        let table: &[(i32, bool)] = &[
            (1900, false),
            (2000, true),
            (2023, false),
            (2024, true),
            (2100, false),
            (2400, true),
            (0, true),
            (-4, true),
        ];
        for &(y, want) in table {
            assert_eq!(is_leap(y), want, "is_leap({y})");
        }
    }

    #[test]
    fn choose_epoch_cases() {
        let exact = |epoch| Some(Reading { epoch, exact: true });
        let inexact = |epoch| {
            Some(Reading {
                epoch,
                exact: false,
            })
        };
        // (now, readings, mktime guess, expected)
        type Case = (i64, [Option<Reading>; 2], Option<i64>, Option<i64>);
        let table: &[Case] = &[
            // Ordinary time: both readings agree.
            (100, [exact(200), exact(200)], Some(200), Some(200)),
            // Ordinary time in a zone where one DST flag is off by an hour.
            (100, [exact(200), inexact(3_800)], Some(200), Some(200)),
            // Fold, before both occurrences: the earlier one.
            (100, [exact(3_800), exact(200)], Some(3_800), Some(200)),
            // Fold, between the occurrences: the second one.
            (1_000, [exact(3_800), exact(200)], Some(200), Some(3_800)),
            // Fold, both past: retry later.
            (5_000, [exact(3_800), exact(200)], Some(200), None),
            // Gap: mktime's guess when it is after now.
            (100, [inexact(3_800), inexact(200)], Some(200), Some(200)),
            // Gap: guess not after now, so the later reading.
            (
                1_000,
                [inexact(3_800), inexact(200)],
                Some(200),
                Some(3_800),
            ),
            // Gap with everything past.
            (5_000, [inexact(3_800), inexact(200)], Some(200), None),
            // mktime failed everywhere.
            (100, [None, None], None, None),
        ];
        for (i, (now, readings, guess, want)) in table.iter().enumerate() {
            assert_eq!(choose_epoch(*now, readings, *guess), *want, "case {i}");
        }
    }

    #[test]
    fn local_conversions_round_trip() {
        let table: &[i64] = &[0, 86_400 * 365, 951_782_400, 1_704_067_200, 1_725_580_800];
        for &epoch in table {
            let c = local_civil(epoch);
            assert!(c.is_valid(), "local_civil({epoch}) = {c:?}");
            let back = local_epoch(c);
            assert!(back.is_some(), "local_epoch({c:?}) failed");
            // In a fold `back` may be the other occurrence, but it reads the same.
            assert_eq!(back.map(local_civil), Some(c), "round trip of {epoch}");
        }
    }

    #[test]
    fn local_epoch_rejects_invalid() {
        let table: &[Civil] = &[
            civ(2024, 0, 1, 0, 0, 0),
            civ(2024, 2, 30, 0, 0, 0),
            civ(2024, 1, 1, 24, 0, 0),
            civ(i32::MIN, 1, 1, 0, 0, 0),
        ];
        for &c in table {
            assert_eq!(local_epoch(c), None, "local_epoch({c:?})");
        }
    }

    #[test]
    fn next_fire_properties() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(1_700_000_000);
        // (expr, largest allowed gap after now; an hour of slack covers DST)
        let table: &[(&str, i64)] = &[
            ("* * * * * *", 2),
            ("*/10 * * * * *", 10 + 3_600),
            ("0 * * * * *", 60 + 3_600),
            ("* * * * *", 60 + 3_600),
            ("0 0 * * *", 86_400 + 3_600),
            ("0 0 1 1 *", 366 * 86_400 + 3_600),
        ];
        let starts = [
            now,
            0,
            1_704_067_199,
            1_725_580_800,
            1_711_846_800,
            1_730_000_000,
        ];
        for &(expr, max_gap) in table {
            let Ok(cron) = Cron::parse(expr) else {
                panic!("`{expr}` should parse")
            };
            for &start in &starts {
                let Some(next) = cron.next_fire(start) else {
                    panic!("`{expr}` from {start}: no next fire")
                };
                assert!(next > start, "`{expr}` from {start}: {next} not after");
                assert!(
                    next - start <= max_gap,
                    "`{expr}` from {start}: {next} too far"
                );
            }
        }
    }

    #[test]
    fn next_fire_none_when_unsatisfiable() {
        let table: &[&str] = &["0 0 30 2 *", "0 0 31 11 *"];
        for expr in table {
            let Ok(cron) = Cron::parse(expr) else {
                panic!("`{expr}` should parse")
            };
            assert_eq!(cron.next_fire(1_700_000_000), None, "`{expr}`");
        }
    }
}
