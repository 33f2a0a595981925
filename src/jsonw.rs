//! JSON written by hand where it is written most (descriptions for `jlist`,
//! the journal at every change of the table): numbers two digits per
//! division, strings copied whole when nothing in them needs an escape.
//! serde_json does the rest; what these write is what it writes.

use std::path::Path;

/// A JSON string: copied whole when nothing in it needs an escape (the
/// usual case), else escaped by serde_json.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        let _ = serde_json::to_writer(out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

pub(crate) fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A path as text (not UTF-8: with U+FFFD, as `Path::display`).
pub(crate) fn path(out: &mut Vec<u8>, p: &Path) {
    match p.to_str() {
        Some(s) => string(out, s),
        None => string(out, &p.to_string_lossy()),
    }
}

pub(crate) fn strings<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a str>) {
    array(out, items, string);
}

/// A JSON array of `items`, each written by `each`.
pub(crate) fn array<T>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = T>,
    each: impl Fn(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, x) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, x);
    }
    out.push(b']');
}

pub(crate) fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// "00" to "99", for `uint`.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// A number in decimal, without the formatting machinery; two digits per
/// division (the size-optimised build divides with a `div` each: a list
/// of 1000 apps writes 26,000 numbers).
pub(crate) fn uint(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut first = digits.len();
    while n >= 10 {
        let i = (n % 100) as usize * 2;
        n /= 100;
        first -= 2;
        if let (Some(d), Some(p)) = (digits.get_mut(first..first + 2), PAIRS.get(i..i + 2)) {
            d.copy_from_slice(p);
        }
    }
    if n > 0 || first == digits.len() {
        first -= 1;
        if let Some(d) = digits.get_mut(first) {
            *d = b'0' + n as u8;
        }
    }
    out.extend_from_slice(digits.get(first..).unwrap_or_default());
}

pub(crate) fn int(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    uint(out, n.unsigned_abs());
}

pub(crate) fn opt_uint(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => uint(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_serde_json_writes_them() {
        for n in [
            0u64,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            1000,
            12345,
            1_733_228_400_123,
            u32::MAX.into(),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            uint(&mut out, n);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&n).unwrap()
            );
        }
        for n in [
            0i64,
            -1,
            1,
            -10,
            255,
            -255,
            i32::MIN.into(),
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            int(&mut out, n);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&n).unwrap()
            );
        }
    }

    #[test]
    fn strings_as_serde_json_writes_them() {
        let cases = [
            "",
            "plain",
            "/var/log/app-out.log",
            "quote \" here",
            "back\\slash",
            "tab\tnew\nline\r",
            "\u{1}\u{1f}\u{7f}",
            "é ünïcode ✓ 🐄",
            "</script>",
        ];
        for s in cases {
            let mut out = Vec::new();
            string(&mut out, s);
            let got = String::from_utf8(out).unwrap();
            assert_eq!(got, serde_json::to_string(s).unwrap(), "{s:?}");
            assert_eq!(serde_json::from_str::<String>(&got).unwrap(), s);
        }
        let mut out = Vec::new();
        strings(&mut out, ["a", "b\"c"].into_iter());
        assert_eq!(out, br#"["a","b\"c"]"#);
        let mut out = Vec::new();
        strings(&mut out, std::iter::empty());
        assert_eq!(out, b"[]");
    }
}
