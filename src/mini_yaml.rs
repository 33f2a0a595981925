//! The YAML that ecosystem files use, parsed by hand into a
//! `serde_json::Value` (PM2 reads them with js-yaml's default schema; this
//! is the part of it that config files need, and no dependency).
//!
//! Accepted: block mappings and sequences (a sequence may sit at its key's
//! indentation), `- key: value` items, plain scalars resolved as YAML 1.2's
//! core schema does (`null`/`~`/empty, `true`/`false`, decimal, `0x` and
//! `0o` integers, floats, everything else a string), single- and
//! double-quoted strings (one line each), `#` comments, flow sequences
//! `[a, b]` and flow mappings `{a: 1}` (nested, and spanning lines), `|` and
//! `>` block scalars with `-`/`+` chomping, a leading `---` and a trailing
//! `...`.
//!
//! Refused with the line number: anchors `&`, aliases `*`, tags `!`,
//! merge keys `<<`, complex keys `?`, directives `%`, several documents,
//! tabs in indentation, duplicate keys, multi-line plain or quoted
//! scalars, `.inf`/`.nan` (no JSON value), and anything else that does not
//! fit (with "bad indentation" or "expected `key: value`").

use serde_json::{Map, Number, Value};

pub(crate) use crate::relaxed_json::ParseError;

/// Deepest nesting of block and flow collections accepted.
pub(crate) const MAX_DEPTH: usize = 128;

/// Parse one YAML document.
pub(crate) fn parse(text: &str) -> Result<Value, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser {
        lines: text.lines().collect(),
        idx: 0,
        col: None,
        depth: 0,
    };
    p.document_start()?;
    let value = p.node_here(-1)?;
    if let Some(l) = p.peek()? {
        return Err(err(
            l.no,
            "bad indentation (or content after the top value)",
        ));
    }
    p.document_end()?;
    Ok(value)
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// One significant line as the parser sees it: content from its logical
/// start (after `- ` for an item on the same line), comment removed.
#[derive(Debug, Clone)]
struct Logical {
    /// 1-based line number.
    no: usize,
    /// Column of the content's first character.
    indent: usize,
    content: String,
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    /// Index of the current raw line.
    idx: usize,
    /// Where the current line's logical content starts, when the parser is
    /// inside it (after `- `); `None` at a line's start.
    col: Option<usize>,
    depth: usize,
}

/// The line without its comment, trailing space removed. A `#` starts a
/// comment at the start or after a blank, outside quoted strings; a quote
/// opens a string only where a scalar can start.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let prev = i
            .checked_sub(1)
            .and_then(|p| bytes.get(p))
            .copied()
            .unwrap_or(b' ');
        match quote {
            Some(b'"') if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'#' if prev == b' ' || prev == b'\t' => return line[..i].trim_end(),
                b'"' | b'\'' if matches!(prev, b' ' | b'\t' | b'[' | b'{' | b',' | b':') => {
                    quote = Some(b);
                }
                _ => {}
            },
        }
        i += 1;
    }
    line.trim_end()
}

fn leading_spaces(line: &str, no: usize) -> Result<usize, ParseError> {
    let n = line.len() - line.trim_start_matches([' ', '\t']).len();
    if line[..n].contains('\t') {
        return Err(err(no, "tab in indentation (YAML indents with spaces)"));
    }
    Ok(n)
}

fn is_dash_item(content: &str) -> bool {
    content == "-" || content.starts_with("- ")
}

/// Where the `:` of `key: value` is, if the content is a mapping entry.
fn key_separator(content: &str) -> Option<usize> {
    let bytes = content.as_bytes();
    let mut i = 0;
    if let Some(q @ (b'"' | b'\'')) = bytes.first().copied() {
        i = 1;
        while i < bytes.len() {
            if q == b'"' && bytes.get(i) == Some(&b'\\') {
                i += 2;
                continue;
            }
            if bytes.get(i) == Some(&q) {
                if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                    i += 2;
                    continue;
                }
                break;
            }
            i += 1;
        }
        let rest = content.get(i + 1..)?.trim_start();
        let offset = content.len() - rest.len();
        return (rest == ":" || rest.starts_with(": ")).then_some(offset);
    }
    if matches!(bytes.first(), Some(b'[' | b'{')) {
        return None;
    }
    while i < bytes.len() {
        if bytes.get(i) == Some(&b':') && matches!(bytes.get(i + 1), None | Some(b' ')) {
            return Some(i);
        }
        i += 1;
    }
    None
}

impl Parser<'_> {
    /// Line `idx`, or nothing past the end.
    fn line(&self, idx: usize) -> &str {
        self.lines.get(idx).copied().unwrap_or_default()
    }

    fn document_start(&mut self) -> Result<(), ParseError> {
        while self.idx < self.lines.len() {
            let no = self.idx + 1;
            let line = strip_comment(self.line(self.idx));
            if line.starts_with('%') {
                return Err(err(no, "directives (%) are not supported"));
            }
            if line == "---" {
                self.idx += 1;
                return Ok(());
            }
            if line.starts_with("--- ") {
                return Err(err(no, "content after `---` is not supported"));
            }
            if !line.trim().is_empty() {
                return Ok(());
            }
            self.idx += 1;
        }
        Ok(())
    }

    fn document_end(&mut self) -> Result<(), ParseError> {
        // peek() stopped at `---` or `...`; only blank lines may follow `...`.
        if self.idx >= self.lines.len() {
            return Ok(());
        }
        let no = self.idx + 1;
        if strip_comment(self.line(self.idx)) == "---" {
            return Err(err(no, "several documents are not supported"));
        }
        for (i, line) in self.lines.iter().enumerate().skip(self.idx + 1) {
            if !strip_comment(line).trim().is_empty() {
                return Err(err(i + 1, "several documents are not supported"));
            }
        }
        Ok(())
    }

    /// The current significant line, skipping blank and comment lines.
    /// `None` at the end of the document.
    fn peek(&mut self) -> Result<Option<Logical>, ParseError> {
        if let Some(col) = self.col {
            let line = strip_comment(self.line(self.idx));
            return Ok(Some(Logical {
                no: self.idx + 1,
                indent: col,
                content: line.get(col..).unwrap_or("").to_string(),
            }));
        }
        while self.idx < self.lines.len() {
            let raw = self.line(self.idx);
            let no = self.idx + 1;
            let line = strip_comment(raw);
            if line.trim().is_empty() {
                self.idx += 1;
                continue;
            }
            if line == "---" || line == "..." {
                return Ok(None);
            }
            let indent = leading_spaces(line, no)?;
            return Ok(Some(Logical {
                no,
                indent,
                content: line[indent..].to_string(),
            }));
        }
        Ok(None)
    }

    fn next_line(&mut self) {
        self.idx += 1;
        self.col = None;
    }

    fn deeper(&mut self, no: usize) -> Result<(), ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(err(no, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        Ok(())
    }

    /// The node that starts on the current line, which is indented more
    /// than `parent`.
    fn node_here(&mut self, parent: isize) -> Result<Value, ParseError> {
        let Some(l) = self.peek()? else {
            return Ok(Value::Null);
        };
        self.deeper(l.no)?;
        let v = if is_dash_item(&l.content) {
            self.sequence(l.indent)
        } else if l.content.starts_with("? ") || l.content == "?" {
            Err(err(l.no, "complex keys (?) are not supported"))
        } else if key_separator(&l.content).is_some() {
            self.mapping(l.indent)
        } else {
            let v = self.inline(&l, parent);
            if let (Ok(_), Some(next)) = (&v, self.peek()?)
                && next.indent as isize > parent
                && next.indent >= l.indent
            {
                return Err(err(
                    next.no,
                    "bad indentation (a string on several lines needs quotes or `|`)",
                ));
            }
            v
        };
        self.depth -= 1;
        v
    }

    fn sequence(&mut self, indent: usize) -> Result<Value, ParseError> {
        let mut items = Vec::new();
        while let Some(l) = self.peek()? {
            if l.indent < indent {
                break;
            }
            if l.indent > indent {
                return Err(err(l.no, "bad indentation"));
            }
            if !is_dash_item(&l.content) {
                if key_separator(&l.content).is_some() {
                    return Err(err(l.no, "expected `- item`, found `key: value`"));
                }
                return Err(err(l.no, "expected `- item`"));
            }
            let rest = l.content[1..].trim_start();
            if rest.is_empty() {
                self.next_line();
                match self.peek()? {
                    Some(n) if n.indent > indent => items.push(self.node_here(indent as isize)?),
                    _ => items.push(Value::Null),
                }
            } else {
                self.col = Some(l.indent + (l.content.len() - rest.len()));
                items.push(self.node_here(indent as isize)?);
            }
        }
        Ok(Value::Array(items))
    }

    fn mapping(&mut self, indent: usize) -> Result<Value, ParseError> {
        let mut map = Map::new();
        while let Some(l) = self.peek()? {
            if l.indent < indent {
                break;
            }
            if l.indent > indent {
                return Err(err(l.no, "bad indentation"));
            }
            if is_dash_item(&l.content) {
                return Err(err(l.no, "expected `key: value`, found `- item`"));
            }
            let Some(sep) = key_separator(&l.content) else {
                return Err(err(l.no, "expected `key: value`"));
            };
            let key = self.key(&l.content[..sep], l.no)?;
            if map.contains_key(&key) {
                return Err(err(l.no, format!("duplicate key `{key}`")));
            }
            let rest = l.content[sep + 1..].trim_start();
            let value = if rest.is_empty() {
                self.next_line();
                match self.peek()? {
                    Some(n) if n.indent > indent => self.node_here(indent as isize)?,
                    Some(n) if n.indent == indent && is_dash_item(&n.content) => {
                        self.deeper(n.no)?;
                        let v = self.sequence(indent);
                        self.depth -= 1;
                        v?
                    }
                    _ => Value::Null,
                }
            } else {
                let value_line = Logical {
                    no: l.no,
                    indent: l.indent + (l.content.len() - rest.len()),
                    content: rest.to_string(),
                };
                let v = self.inline(&value_line, indent as isize)?;
                if let Some(next) = self.peek()?
                    && next.indent > indent
                {
                    return Err(err(
                        next.no,
                        "bad indentation (a string on several lines needs quotes or `|`)",
                    ));
                }
                v
            };
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }

    fn key(&self, text: &str, no: usize) -> Result<String, ParseError> {
        let text = text.trim_end();
        if text == "<<" {
            return Err(err(no, "merge keys (<<) are not supported"));
        }
        match scalar(text, no)? {
            Value::String(s) => Ok(s),
            Value::Null if text.is_empty() => Err(err(no, "empty key")),
            Value::Null => Ok(text.to_string()),
            other => Ok(match text.as_bytes().first() {
                Some(b'"' | b'\'') => other.to_string(),
                _ => text.to_string(),
            }),
        }
    }

    /// A value written on the current line after `key: ` or `- ` (or alone):
    /// a block scalar, a flow collection (maybe over several lines), a
    /// quoted string or a plain scalar. Consumes the line(s).
    fn inline(&mut self, l: &Logical, parent: isize) -> Result<Value, ParseError> {
        let text = l.content.as_str();
        let first = text.as_bytes().first().copied();
        match first {
            Some(b'|' | b'>') => return self.block_scalar(l, parent),
            Some(b'[' | b'{') => return self.flow(l),
            _ => {}
        }
        let v = scalar(text, l.no)?;
        self.next_line();
        Ok(v)
    }

    fn block_scalar(&mut self, l: &Logical, parent: isize) -> Result<Value, ParseError> {
        let header = &l.content;
        let folded = header.starts_with('>');
        let mut chomp = ' ';
        let mut explicit_indent = None;
        for c in header[1..].chars() {
            match c {
                '-' | '+' if chomp == ' ' => chomp = c,
                '1'..='9' if explicit_indent.is_none() => {
                    explicit_indent = c.to_digit(10).map(|d| d as usize)
                }
                _ => {
                    return Err(err(l.no, format!("bad block scalar header `{header}`")));
                }
            }
        }
        self.next_line();
        let base = parent.max(-1) + 1;
        let mut block_indent = explicit_indent.map(|d| base as usize + d - 1);
        let mut lines: Vec<String> = Vec::new();
        while self.idx < self.lines.len() {
            let raw = self.line(self.idx).trim_end();
            if raw.trim().is_empty() {
                lines.push(String::new());
                self.idx += 1;
                continue;
            }
            let indent = raw.len() - raw.trim_start_matches(' ').len();
            let want = match block_indent {
                Some(n) => n,
                None if indent as isize > parent => {
                    block_indent = Some(indent);
                    indent
                }
                None => break,
            };
            if indent < want {
                break;
            }
            lines.push(raw[want..].to_string());
            self.idx += 1;
        }
        let mut trailing = 0;
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
            trailing += 1;
        }
        let mut text = String::new();
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                let prev = lines.get(i - 1).map_or("", String::as_str);
                let fold = folded
                    && !prev.is_empty()
                    && !line.is_empty()
                    && !prev.starts_with(' ')
                    && !line.starts_with(' ');
                text.push(if fold { ' ' } else { '\n' });
            }
            text.push_str(line);
        }
        if folded {
            // In folded text one blank line stands for one newline.
            text = text.replace("\n\n", "\n");
        }
        match chomp {
            '-' => {}
            '+' => {
                if !lines.is_empty() {
                    text.push('\n');
                }
                text.push_str(&"\n".repeat(trailing));
            }
            _ => {
                if !lines.is_empty() {
                    text.push('\n');
                }
            }
        }
        Ok(Value::String(text))
    }

    /// A flow collection starting on the current line; later lines are
    /// joined until the brackets balance.
    fn flow(&mut self, l: &Logical) -> Result<Value, ParseError> {
        let mut text = l.content.clone();
        let mut line_starts = vec![(0usize, l.no)];
        self.next_line();
        loop {
            let mut f = Flow {
                s: text.as_bytes(),
                pos: 0,
                depth: self.depth,
                lines: &line_starts,
            };
            match f.value() {
                Ok(v) => {
                    f.skip_space();
                    if f.pos < f.s.len() {
                        return Err(err(f.line(), "unexpected text after a flow collection"));
                    }
                    return Ok(v);
                }
                Err(FlowError::Incomplete) if self.idx < self.lines.len() => {
                    let no = self.idx + 1;
                    let line = strip_comment(self.line(self.idx));
                    if line == "---" || line == "..." {
                        return Err(err(l.no, "unclosed flow collection"));
                    }
                    text.push('\n');
                    line_starts.push((text.len(), no));
                    text.push_str(line);
                    self.next_line();
                }
                Err(FlowError::Incomplete) => {
                    return Err(err(l.no, "unclosed flow collection"));
                }
                Err(FlowError::Bad(e)) => return Err(e),
            }
        }
    }
}

enum FlowError {
    /// The text ends before the collection closes: read another line.
    Incomplete,
    Bad(ParseError),
}

struct Flow<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
    /// (byte offset, line number) where each joined line starts.
    lines: &'a [(usize, usize)],
}

impl Flow<'_> {
    fn line(&self) -> usize {
        self.lines
            .iter()
            .rev()
            .find(|(at, _)| *at <= self.pos)
            .map_or(1, |&(_, no)| no)
    }

    fn bad(&self, message: impl Into<String>) -> FlowError {
        FlowError::Bad(err(self.line(), message))
    }

    fn skip_space(&mut self) {
        while matches!(self.s.get(self.pos), Some(b' ' | b'\t' | b'\n')) {
            self.pos += 1;
        }
    }

    fn value(&mut self) -> Result<Value, FlowError> {
        self.skip_space();
        match self.s.get(self.pos) {
            None => Err(FlowError::Incomplete),
            Some(b'[') => self.nested(true),
            Some(b'{') => self.nested(false),
            Some(_) => self.scalar(false),
        }
    }

    fn nested(&mut self, is_seq: bool) -> Result<Value, FlowError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.bad(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let v = if is_seq { self.seq() } else { self.map() };
        self.depth -= 1;
        v
    }

    /// After an item: `,` (then maybe the close) or the close.
    fn after_item(&mut self, close: u8) -> Result<bool, FlowError> {
        self.skip_space();
        match self.s.get(self.pos) {
            None => Err(FlowError::Incomplete),
            Some(&b) if b == close => {
                self.pos += 1;
                Ok(true)
            }
            Some(b',') => {
                self.pos += 1;
                self.skip_space();
                match self.s.get(self.pos) {
                    Some(&b) if b == close => {
                        self.pos += 1;
                        Ok(true)
                    }
                    Some(b',') => Err(self.bad("empty item in a flow collection")),
                    _ => Ok(false),
                }
            }
            Some(&b) => Err(self.bad(format!(
                "expected `,` or `{}` in a flow collection, found `{}`",
                close as char, b as char
            ))),
        }
    }

    fn seq(&mut self) -> Result<Value, FlowError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_space();
        if self.s.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            if self.after_item(b']')? {
                return Ok(Value::Array(items));
            }
        }
    }

    fn map(&mut self) -> Result<Value, FlowError> {
        self.pos += 1;
        let mut map = Map::new();
        self.skip_space();
        if self.s.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_space();
            let key = match self.scalar(true)? {
                Value::String(s) => s,
                Value::Null => return Err(self.bad("empty key in a flow mapping")),
                other => other.to_string(),
            };
            self.skip_space();
            let value = match self.s.get(self.pos) {
                Some(b':') => {
                    self.pos += 1;
                    self.value()?
                }
                Some(b',' | b'}') => Value::Null,
                None => return Err(FlowError::Incomplete),
                Some(_) => return Err(self.bad("expected `:` in a flow mapping")),
            };
            if map.contains_key(&key) {
                return Err(self.bad(format!("duplicate key `{key}`")));
            }
            map.insert(key, value);
            if self.after_item(b'}')? {
                return Ok(Value::Object(map));
            }
        }
    }

    /// A quoted or plain scalar inside a flow collection.
    fn scalar(&mut self, is_key: bool) -> Result<Value, FlowError> {
        let start = self.pos;
        let no = self.line();
        match self.s.get(self.pos) {
            Some(&q @ (b'"' | b'\'')) => {
                self.pos += 1;
                while let Some(&b) = self.s.get(self.pos) {
                    if q == b'"' && b == b'\\' {
                        self.pos += 2;
                        continue;
                    }
                    if b == q {
                        if q == b'\'' && self.s.get(self.pos + 1) == Some(&b'\'') {
                            self.pos += 2;
                            continue;
                        }
                        self.pos += 1;
                        let text = String::from_utf8_lossy(
                            self.s.get(start..self.pos).unwrap_or_default(),
                        );
                        return scalar(&text, no).map_err(FlowError::Bad);
                    }
                    if b == b'\n' {
                        return Err(self.bad("a quoted string on several lines is not supported"));
                    }
                    self.pos += 1;
                }
                Err(FlowError::Incomplete)
            }
            _ => {
                while let Some(&b) = self.s.get(self.pos) {
                    let ends = match b {
                        b',' | b']' | b'}' | b'[' | b'{' | b'\n' => true,
                        b':' => {
                            is_key
                                || matches!(
                                    self.s.get(self.pos + 1),
                                    Some(b' ' | b',' | b'}' | b']')
                                )
                        }
                        _ => false,
                    };
                    if ends {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == self.s.len() {
                    return Err(FlowError::Incomplete);
                }
                let text = String::from_utf8_lossy(self.s.get(start..self.pos).unwrap_or_default());
                let text = text.trim();
                if text.is_empty() && matches!(self.s.get(self.pos), Some(b'[' | b'{')) {
                    return Err(self.bad("a flow collection cannot be a key"));
                }
                scalar(text, no).map_err(FlowError::Bad)
            }
        }
    }
}

/// A scalar written on one line: quoted, or plain and resolved by the core
/// schema.
fn scalar(text: &str, no: usize) -> Result<Value, ParseError> {
    let text = text.trim();
    match text.as_bytes().first() {
        Some(b'"') => return double_quoted(text, no).map(Value::String),
        Some(b'\'') => return single_quoted(text, no).map(Value::String),
        Some(b'&') => return Err(err(no, "anchors (&) are not supported")),
        Some(b'*') => {
            return Err(err(
                no,
                "aliases (*) are not supported (quote a string that starts with `*`)",
            ));
        }
        Some(b'!') => return Err(err(no, "tags (!) are not supported")),
        Some(b'%' | b'@' | b'`') => {
            return Err(err(
                no,
                format!(
                    "a plain string cannot start with `{}`: quote it",
                    &text[..1]
                ),
            ));
        }
        Some(b'|' | b'>') => {
            return Err(err(no, "a block scalar (| or >) is not allowed here"));
        }
        _ => {}
    }
    if is_dash_item(text) {
        return Err(err(no, "a `- item` is not allowed here"));
    }
    if key_separator(text).is_some() {
        return Err(err(
            no,
            "a `key: value` is not allowed here: quote the string",
        ));
    }
    resolve_plain(text, no)
}

/// Core schema resolution of a plain scalar.
fn resolve_plain(text: &str, no: usize) -> Result<Value, ParseError> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let lower = text.to_ascii_lowercase();
    if matches!(lower.trim_start_matches(['-', '+']), ".inf" | ".nan") {
        return Err(err(no, format!("`{text}` cannot be written as JSON")));
    }
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let radix = if let Some(h) = text.strip_prefix("0x") {
        Some((h, 16))
    } else {
        text.strip_prefix("0o").map(|o| (o, 8))
    };
    if let Some((body, radix)) = radix {
        if !body.is_empty() && body.chars().all(|c| c.is_digit(radix)) {
            return u64::from_str_radix(body, radix)
                .map(Value::from)
                .map_err(|_| err(no, format!("number `{text}` out of range")));
        }
        return Ok(Value::String(text.to_string()));
    }
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = digits.parse::<u64>()
    {
        if !negative {
            return Ok(Value::from(n));
        }
        if let Ok(i) = i64::try_from(n) {
            return Ok(Value::from(-i));
        }
    }
    if is_float(digits)
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Ok(Value::Number(n));
    }
    Ok(Value::String(text.to_string()))
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => all_digits(int) && all_digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && all_digits(int),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

fn single_quoted(text: &str, no: usize) -> Result<String, ParseError> {
    let inner = &text[1..];
    let mut out = String::new();
    let mut chars = inner.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().map(|&(_, c)| c) == Some('\'') {
                chars.next();
                out.push('\'');
                continue;
            }
            return match inner[i + 1..].trim() {
                "" => Ok(out),
                _ => Err(err(no, "unexpected text after a quoted string")),
            };
        }
        out.push(c);
    }
    Err(err(
        no,
        "unterminated quoted string (a string on several lines is not supported)",
    ))
}

fn double_quoted(text: &str, no: usize) -> Result<String, ParseError> {
    let inner = &text[1..];
    let mut out = String::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                return match inner[i + 1..].trim() {
                    "" => Ok(out),
                    _ => Err(err(no, "unexpected text after a quoted string")),
                };
            }
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                let hex = |chars: &mut std::str::CharIndices<'_>, n: usize| {
                    let digits: String = chars.by_ref().take(n).map(|(_, c)| c).collect();
                    u32::from_str_radix(&digits, 16)
                        .ok()
                        .filter(|_| digits.len() == n)
                        .and_then(char::from_u32)
                        .ok_or_else(|| err(no, format!("bad escape `\\{e}{digits}`")))
                };
                out.push(match e {
                    '0' => '\0',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    't' | '\t' => '\t',
                    'n' => '\n',
                    'v' => '\u{b}',
                    'f' => '\u{c}',
                    'r' => '\r',
                    'e' => '\u{1b}',
                    ' ' => ' ',
                    '"' => '"',
                    '/' => '/',
                    '\\' => '\\',
                    'N' => '\u{85}',
                    '_' => '\u{a0}',
                    'L' => '\u{2028}',
                    'P' => '\u{2029}',
                    'x' => hex(&mut chars, 2)?,
                    'u' => hex(&mut chars, 4)?,
                    'U' => hex(&mut chars, 8)?,
                    other => return Err(err(no, format!("bad escape `\\{other}`"))),
                });
            }
            _ => out.push(c),
        }
    }
    Err(err(
        no,
        "unterminated quoted string (a string on several lines is not supported)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepted() {
        let cases: &[(&str, Value)] = &[
            ("", Value::Null),
            ("# nothing\n", Value::Null),
            (
                "apps:\n  - name: api\n    script: app.js\n    instances: 4\n",
                json!({"apps": [{"name": "api", "script": "app.js", "instances": 4}]}),
            ),
            (
                "---\napps:\n- script: a.js # comment\n  env:\n    PORT: 3000\n    X: 'it''s'\n",
                json!({"apps": [{"script": "a.js", "env": {"PORT": 3000, "X": "it's"}}]}),
            ),
            (
                "a: 1\nb: -2\nc: 1.5\nd: 1e3\ne: 0x1f\nf: 0o17\ng: .5\nh: 08\n",
                json!({"a": 1, "b": -2, "c": 1.5, "d": 1000.0, "e": 31, "f": 15, "g": 0.5, "h": 8}),
            ),
            (
                "a: true\nb: False\nc: null\nd: ~\ne:\nf: yes\ng: 1.2.3\nh: 12abc\n",
                json!({"a": true, "b": false, "c": null, "d": null, "e": null,
                       "f": "yes", "g": "1.2.3", "h": "12abc"}),
            ),
            (
                "url: http://x:80/a#b\nhash: a # real comment\n#full line\nq: \"a # b\"\n",
                json!({"url": "http://x:80/a#b", "hash": "a", "q": "a # b"}),
            ),
            (
                r#"s: "tab\t\"q\" \u00e9\x41""#,
                json!({"s": "tab\t\"q\" \u{e9}A"}),
            ),
            (
                "args: [--port, 3000, 'a b', \"c\", [1, 2], {k: v}]\n",
                json!({"args": ["--port", 3000, "a b", "c", [1, 2], {"k": "v"}]}),
            ),
            (
                "env: {NODE_ENV: production, PORT: 80, }\nw: []\nm: {}\n",
                json!({"env": {"NODE_ENV": "production", "PORT": 80}, "w": [], "m": {}}),
            ),
            (
                "args: [\n  a,   # first\n  b\n]\nnext: 1\n",
                json!({"args": ["a", "b"], "next": 1}),
            ),
            (
                "- a\n-\n  - b\n  - c\n- - d\n  - e\n-\n- k: v\n",
                json!(["a", ["b", "c"], ["d", "e"], null, {"k": "v"}]),
            ),
            (
                "script: |\n  line 1\n    indented\n\n  line 3\nnext: x\n",
                json!({"script": "line 1\n  indented\n\nline 3\n", "next": "x"}),
            ),
            (
                "a: |-\n  x\n  y\n\nb: >\n  folded\n  text\n\n  para\nc: |+\n  k\n\n",
                json!({"a": "x\ny", "b": "folded text\npara\n", "c": "k\n\n"}),
            ),
            (
                "\"quoted key\": 1\n'single': 2\n3: three\n",
                json!({"quoted key": 1, "single": 2, "3": "three"}),
            ),
            (
                "apps:\n  - name: a\n    args:\n      - x\n      - y\n  - name: b\n...\n",
                json!({"apps": [{"name": "a", "args": ["x", "y"]}, {"name": "b"}]}),
            ),
            (
                "apps:\n  - script   : ./api.js\n    name     : 'api-app'\n    exec_mode: cluster\n  \
                 - script : ./worker.js\n    env    :\n      NODE_ENV: development\n",
                json!({"apps": [
                    {"script": "./api.js", "name": "api-app", "exec_mode": "cluster"},
                    {"script": "./worker.js", "env": {"NODE_ENV": "development"}},
                ]}),
            ),
            (
                "cron_restart: '*/5 * * * *'\nc2: 0 3 * * *\nat: 12:30\npath: C:\\x\n",
                json!({"cron_restart": "*/5 * * * *", "c2": "0 3 * * *", "at": "12:30",
                       "path": "C:\\x"}),
            ),
            ("a:\r\n  - b\r\n", json!({"a": ["b"]})),
            ("just a string\n", json!("just a string")),
            ("key: it's fine\n", json!({"key": "it's fine"})),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).as_ref(), Ok(want), "text {text:?}");
        }
    }

    #[test]
    fn refused_with_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("a: &x 1\nb: *x\n", 1, "anchors (&) are not supported"),
            (
                "a: 1\nb: *x\n",
                2,
                "aliases (*) are not supported (quote a string that starts with `*`)",
            ),
            ("a: !!str 1\n", 1, "tags (!) are not supported"),
            ("a: 1\n<<: {b: 2}\n", 2, "merge keys (<<) are not supported"),
            (
                "a: 1\n---\nb: 2\n",
                2,
                "several documents are not supported",
            ),
            (
                "a: 1\n...\nb: 2\n",
                3,
                "several documents are not supported",
            ),
            (
                "%YAML 1.2\n---\na: 1\n",
                1,
                "directives (%) are not supported",
            ),
            ("? a\n: b\n", 1, "complex keys (?) are not supported"),
            (
                "a:\n\tb: 1\n",
                2,
                "tab in indentation (YAML indents with spaces)",
            ),
            ("a: 1\na: 2\n", 2, "duplicate key `a`"),
            (
                "a: 1\n  b: 2\n",
                2,
                "bad indentation (a string on several lines needs quotes or `|`)",
            ),
            ("a:\n  b: 1\n c: 2\n", 3, "bad indentation"),
            ("a: 1\n- b\n", 2, "expected `key: value`, found `- item`"),
            ("- a\nb: 1\n", 2, "expected `- item`, found `key: value`"),
            (
                "  a: 1\nb: 2\n",
                2,
                "bad indentation (or content after the top value)",
            ),
            (
                "a: b: c\n",
                1,
                "a `key: value` is not allowed here: quote the string",
            ),
            (
                "a: \"open\n  more\"\n",
                1,
                "unterminated quoted string (a string on several lines is not supported)",
            ),
            ("a: 'x' y\n", 1, "unexpected text after a quoted string"),
            (
                "a: [1, 2\nb: 3\n",
                2,
                "expected `,` or `]` in a flow collection, found `b`",
            ),
            ("a: [1, 2\n", 1, "unclosed flow collection"),
            (
                "a: [1, 2] x\n",
                1,
                "unexpected text after a flow collection",
            ),
            ("a: [1,,2]\n", 1, "empty item in a flow collection"),
            ("a: .inf\n", 1, "`.inf` cannot be written as JSON"),
            ("a: \"\\q\"\n", 1, "bad escape `\\q`"),
            (
                "a: @x\n",
                1,
                "a plain string cannot start with `@`: quote it",
            ),
            ("a: |x\n  b\n", 1, "bad block scalar header `|x`"),
            (
                "a\nb\n",
                2,
                "bad indentation (a string on several lines needs quotes or `|`)",
            ),
            ("a: 1\nplain\n", 2, "expected `key: value`"),
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
        let deep = "a: ".to_string() + &"[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(
            parse(&deep).map_err(|e| e.message),
            Err(format!("nested deeper than {MAX_DEPTH} levels"))
        );
    }
}
