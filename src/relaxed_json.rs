//! JSON as PM2 reads a `.json` config: PM2 evaluates the file as a
//! JavaScript expression, so files in the wild carry what JavaScript allows
//! and JSON does not. This module owns a small hand-written parser for that
//! superset, producing a `serde_json::Value`, with errors that carry the
//! line number.
//!
//! Accepted beyond JSON: `//` and `/* */` comments, trailing commas,
//! unquoted keys (identifiers and numbers), single-quoted and backtick
//! strings (a backtick string with `${` is refused: that needs a `.js`
//! config), JavaScript escapes (`\xHH`, `\v`, `\0`, line continuations),
//! numbers with a leading `+` or `.`, hexadecimal integers, and
//! `undefined` (the key is dropped, as `JSON.stringify` drops it; `null` in
//! an array). A key given twice keeps its last value, as in JavaScript.
//! Refused, with the line: anything else, `NaN` and `Infinity` (no JSON
//! value), and nesting deeper than [`MAX_DEPTH`].

use std::fmt;

use serde_json::{Map, Number, Value};

/// Deepest nesting of arrays and objects accepted.
pub(crate) const MAX_DEPTH: usize = 128;

/// What is wrong and on which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parse one value (the whole text).
pub(crate) fn parse(text: &str) -> Result<Value, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
        line: 1,
        depth: 0,
    };
    p.skip_blank()?;
    if p.peek().is_none() {
        return Err(p.error("empty file: expected a value"));
    }
    let value = p.value()?.unwrap_or(Value::Null);
    p.skip_blank()?;
    if p.peek().is_some() {
        return Err(p.error(format!("unexpected {} after the value", p.found())));
    }
    Ok(value)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
    depth: usize,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.s.get(self.pos + n).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        if b == b'\n' {
            self.line += 1;
        }
        Some(b)
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            message: message.into(),
        }
    }

    /// What is at the cursor, for an error message.
    fn found(&self) -> String {
        match self.peek() {
            None => "end of file".to_string(),
            Some(_) => {
                let rest = String::from_utf8_lossy(self.s.get(self.pos..).unwrap_or_default());
                match rest.chars().next().unwrap_or('?') {
                    c if c.is_control() || c.is_whitespace() => {
                        format!("`{}`", c.escape_default())
                    }
                    c => format!("`{c}`"),
                }
            }
        }
    }

    /// Skip white space and comments.
    fn skip_blank(&mut self) -> Result<(), ParseError> {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(b' ' | b'\t' | b'\n' | b'\r'), _) => {
                    self.bump();
                }
                (Some(b'/'), Some(b'/')) => {
                    while let Some(b) = self.peek() {
                        if b == b'\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    let start = self.line;
                    self.pos += 2;
                    loop {
                        match (self.peek(), self.peek_at(1)) {
                            (Some(b'*'), Some(b'/')) => {
                                self.pos += 2;
                                break;
                            }
                            (Some(_), _) => {
                                self.bump();
                            }
                            (None, _) => {
                                return Err(ParseError {
                                    line: start,
                                    message: "unterminated comment `/*`".to_string(),
                                });
                            }
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// A value; `None` for `undefined`.
    fn value(&mut self) -> Result<Option<Value>, ParseError> {
        match self.peek() {
            Some(b'{') => self.nested(Self::object).map(Some),
            Some(b'[') => self.nested(Self::array).map(Some),
            Some(q @ (b'"' | b'\'' | b'`')) => self.string(q).map(|s| Some(Value::String(s))),
            Some(b'-' | b'+' | b'.' | b'0'..=b'9') => self.number().map(Some),
            Some(b) if is_ident_start(b) => {
                let word = self.ident();
                match word.as_str() {
                    "true" => Ok(Some(Value::Bool(true))),
                    "false" => Ok(Some(Value::Bool(false))),
                    "null" => Ok(Some(Value::Null)),
                    "undefined" => Ok(None),
                    "NaN" | "Infinity" => {
                        Err(self.error(format!("`{word}` cannot be written as JSON")))
                    }
                    _ => Err(self.error(format!(
                        "`{word}` is not a value (a string needs quotes; \
                         variables and code need a .js config)"
                    ))),
                }
            }
            _ => Err(self.error(format!("expected a value, found {}", self.found()))),
        }
    }

    fn nested(
        &mut self,
        parse: fn(&mut Self) -> Result<Value, ParseError>,
    ) -> Result<Value, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let v = parse(self);
        self.depth -= 1;
        v
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_ident_char) {
            self.pos += 1;
        }
        String::from_utf8_lossy(self.s.get(start..self.pos).unwrap_or_default()).into_owned()
    }

    fn object(&mut self) -> Result<Value, ParseError> {
        let open = self.line;
        self.bump();
        let mut map = Map::new();
        loop {
            self.skip_blank()?;
            let key = match self.peek() {
                Some(b'}') => {
                    self.bump();
                    return Ok(Value::Object(map));
                }
                Some(q @ (b'"' | b'\'' | b'`')) => self.string(q)?,
                Some(b'0'..=b'9') => match self.number()? {
                    Value::Number(n) => n.to_string(),
                    _ => return Err(self.error("bad numeric key")),
                },
                Some(b) if is_ident_start(b) => self.ident(),
                None => {
                    return Err(self.error(format!(
                        "unexpected end of file: the object opened on line {open} is not closed"
                    )));
                }
                _ => {
                    return Err(
                        self.error(format!("expected a key or `}}`, found {}", self.found()))
                    );
                }
            };
            self.skip_blank()?;
            if self.peek() != Some(b':') {
                return Err(self.error(format!(
                    "expected `:` after the key `{key}`, found {}",
                    self.found()
                )));
            }
            self.bump();
            self.skip_blank()?;
            match self.value()? {
                Some(v) => {
                    map.insert(key.clone(), v);
                }
                None => {
                    map.remove(&key);
                }
            }
            self.skip_blank()?;
            match self.peek() {
                Some(b',') => {
                    self.bump();
                }
                Some(b'}') => {
                    self.bump();
                    return Ok(Value::Object(map));
                }
                None => {
                    return Err(self.error(format!(
                        "unexpected end of file: the object opened on line {open} is not closed"
                    )));
                }
                _ => {
                    return Err(self.error(format!(
                        "expected `,` or `}}` after the value of `{key}`, found {}",
                        self.found()
                    )));
                }
            }
        }
    }

    fn array(&mut self) -> Result<Value, ParseError> {
        let open = self.line;
        self.bump();
        let mut items = Vec::new();
        loop {
            self.skip_blank()?;
            match self.peek() {
                Some(b']') => {
                    self.bump();
                    return Ok(Value::Array(items));
                }
                None => {
                    return Err(self.error(format!(
                        "unexpected end of file: the array opened on line {open} is not closed"
                    )));
                }
                _ => {}
            }
            items.push(self.value()?.unwrap_or(Value::Null));
            self.skip_blank()?;
            match self.peek() {
                Some(b',') => {
                    self.bump();
                }
                Some(b']') => {
                    self.bump();
                    return Ok(Value::Array(items));
                }
                None => {
                    return Err(self.error(format!(
                        "unexpected end of file: the array opened on line {open} is not closed"
                    )));
                }
                _ => {
                    return Err(self.error(format!(
                        "expected `,` or `]` after an item, found {}",
                        self.found()
                    )));
                }
            }
        }
    }

    fn hex_digits(&mut self, n: usize) -> Result<u32, ParseError> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self
                .peek()
                .and_then(|b| (b as char).to_digit(16))
                .ok_or_else(|| self.error("bad escape: expected a hexadecimal digit"))?;
            self.pos += 1;
            v = v * 16 + d;
        }
        Ok(v)
    }

    fn string(&mut self, quote: u8) -> Result<String, ParseError> {
        let open = self.line;
        self.bump();
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(ParseError {
                    line: open,
                    message: "unterminated string".to_string(),
                });
            };
            if b == quote {
                self.bump();
                break;
            }
            match b {
                b'\n' if quote != b'`' => {
                    return Err(self.error("unterminated string (a newline in a string)"));
                }
                b'$' if quote == b'`' && self.peek_at(1) == Some(b'{') => {
                    return Err(self.error("`${` in a template string needs a .js config"));
                }
                b'\\' => {
                    self.bump();
                    let Some(e) = self.bump() else { continue };
                    let c = match e {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'v' => '\u{b}',
                        b'0' => '\0',
                        b'\n' => continue,
                        b'\r' => {
                            if self.peek() == Some(b'\n') {
                                self.bump();
                            }
                            continue;
                        }
                        b'x' => char::from_u32(self.hex_digits(2)?).unwrap_or('\u{fffd}'),
                        b'u' => self.unicode_escape()?,
                        other if other < 0x80 => other as char,
                        _ => {
                            // A backslash before a multi-byte character
                            // escapes nothing (as in JavaScript): drop it.
                            self.pos -= 1;
                            continue;
                        }
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => {
                    out.push(b);
                    self.bump();
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.error("a string is not valid UTF-8"))
    }

    /// After `\u`: `XXXX` (with a surrogate pair) or `{X...}`.
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        if self.peek() == Some(b'{') {
            self.bump();
            let mut v = 0u32;
            while let Some(d) = self.peek().and_then(|b| (b as char).to_digit(16)) {
                self.pos += 1;
                v = v.saturating_mul(16).saturating_add(d);
            }
            if self.bump() != Some(b'}') {
                return Err(self.error("bad escape: expected `}` after `\\u{`"));
            }
            return char::from_u32(v).ok_or_else(|| self.error("bad escape: no such character"));
        }
        let hi = self.hex_digits(4)?;
        if (0xd800..0xdc00).contains(&hi)
            && self.peek() == Some(b'\\')
            && self.peek_at(1) == Some(b'u')
        {
            let save = self.pos;
            self.pos += 2;
            let lo = self.hex_digits(4)?;
            if (0xdc00..0xe000).contains(&lo) {
                let c = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                return Ok(char::from_u32(c).unwrap_or('\u{fffd}'));
            }
            self.pos = save;
        }
        Ok(char::from_u32(hi).unwrap_or('\u{fffd}'))
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let negative = match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                true
            }
            Some(b'+') => {
                self.pos += 1;
                false
            }
            _ => false,
        };
        if self.peek() == Some(b'0') && matches!(self.peek_at(1), Some(b'x' | b'X')) {
            self.pos += 2;
            let digits_start = self.pos;
            while self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                self.pos += 1;
            }
            let digits =
                String::from_utf8_lossy(self.s.get(digits_start..self.pos).unwrap_or_default());
            let n = u64::from_str_radix(&digits, 16)
                .map_err(|_| self.error("bad hexadecimal number"))?;
            return Ok(if negative {
                i64::try_from(n)
                    .map(|n| Value::from(-n))
                    .map_err(|_| self.error("number out of range"))?
            } else {
                Value::from(n)
            });
        }
        let digits_start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E'))
            || (matches!(self.peek(), Some(b'+' | b'-'))
                && matches!(self.s.get(self.pos.wrapping_sub(1)), Some(b'e' | b'E')))
        {
            self.pos += 1;
        }
        let body = String::from_utf8_lossy(self.s.get(digits_start..self.pos).unwrap_or_default())
            .into_owned();
        if body.is_empty() || self.peek().is_some_and(is_ident_char) {
            if body.is_empty() && self.peek().is_some_and(is_ident_start) {
                let word = self.ident();
                return Err(self.error(format!("`{word}` cannot be written as JSON")));
            }
            return Err(self.error(format!(
                "bad number `{}`",
                String::from_utf8_lossy(self.s.get(start..self.pos).unwrap_or_default())
            )));
        }
        if body.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = body.parse::<u64>()
        {
            if !negative {
                return Ok(Value::from(n));
            }
            if let Ok(i) = i64::try_from(n) {
                return Ok(Value::from(-i));
            }
        }
        let f: f64 = body
            .parse()
            .map_err(|_| self.error(format!("bad number `{body}`")))?;
        let f = if negative { -f } else { f };
        Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| self.error(format!("number `{body}` out of range")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepted() {
        let cases: &[(&str, Value)] = &[
            (r#"{"a": 1}"#, json!({"a": 1})),
            ("\u{feff}[1,2]", json!([1, 2])),
            ("{a: 1, b_c$: 'x',}", json!({"a": 1, "b_c$": "x"})),
            ("[1, 2, 3,]", json!([1, 2, 3])),
            (
                "// top\n{ /* inline */ apps: [ // list\n {script: \"a.js\"}, ], }\n// end",
                json!({"apps": [{"script": "a.js"}]}),
            ),
            (r#"'it\'s'"#, json!("it's")),
            (r#""tab\there\u0041\x42\v""#, json!("tab\there\u{41}B\u{b}")),
            (r#""\ud83d\ude00 \u{1F600}""#, json!("\u{1F600} \u{1F600}")),
            ("\"a\\\nb\"", json!("ab")),
            ("`multi\nline`", json!("multi\nline")),
            ("{a: undefined, b: 1}", json!({"b": 1})),
            ("[undefined]", json!([null])),
            ("{a: 1, a: 2}", json!({"a": 2})),
            ("{1: 'one'}", json!({"1": "one"})),
            (
                "[0, -1, +2, 1.5, .5, 1e3, -2.5E-1, 0x1F, 18446744073709551615]",
                json!([
                    0,
                    -1,
                    2,
                    1.5,
                    0.5,
                    1000.0,
                    -0.25,
                    31,
                    18446744073709551615u64
                ]),
            ),
            ("[true, false, null]", json!([true, false, null])),
            ("{\"ünï\": 'çødé'}", json!({"ünï": "çødé"})),
            ("  42  ", json!(42)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).as_ref(), Ok(want), "text {text:?}");
        }
    }

    #[test]
    fn refused_with_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "empty file: expected a value"),
            ("// only a comment\n", 2, "empty file: expected a value"),
            (
                "{\n  a: 1\n  b: 2\n}",
                3,
                "expected `,` or `}` after the value of `a`, found `b`",
            ),
            (
                "{\n\"apps\": [\n",
                3,
                "unexpected end of file: the array opened on line 2 is not closed",
            ),
            (
                "{\n  a 1\n}",
                2,
                "expected `:` after the key `a`, found `1`",
            ),
            ("[1,,2]", 1, "expected a value, found `,`"),
            ("\n\n'abc", 3, "unterminated string"),
            ("'ab\ncd'", 1, "unterminated string (a newline in a string)"),
            ("/* open\n\n", 1, "unterminated comment `/*`"),
            ("{a: NaN}", 1, "`NaN` cannot be written as JSON"),
            ("[-Infinity]", 1, "`Infinity` cannot be written as JSON"),
            (
                "{a: process.env.X}",
                1,
                "`process` is not a value (a string needs quotes; \
                 variables and code need a .js config)",
            ),
            ("`${x}`", 1, "`${` in a template string needs a .js config"),
            ("[1] [2]", 1, "unexpected `[` after the value"),
            ("[12abc]", 1, "bad number `12`"),
            ("{a: 1}\n;", 2, "unexpected `;` after the value"),
            ("'\\x4'", 1, "bad escape: expected a hexadecimal digit"),
        ];
        for (text, line, message) in cases {
            let want = ParseError {
                line: *line,
                message: message.to_string(),
            };
            assert_eq!(parse(text), Err(want), "text {text:?}");
        }
    }

    #[test]
    fn depth_is_limited() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(
            parse(&deep).map_err(|e| e.message),
            Err(format!("nested deeper than {MAX_DEPTH} levels"))
        );
    }

    #[test]
    fn error_display() {
        let e = ParseError {
            line: 7,
            message: "x".into(),
        };
        assert_eq!(e.to_string(), "line 7: x");
    }
}
