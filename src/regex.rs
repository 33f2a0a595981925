//! A small regular expression matcher for `/regex/` targets (PM2 tests
//! each app's name with `new RegExp(...)`): literals, `.`, classes `[a-z]`
//! and `[^...]`, escapes `\d \w \s` and `\` before a special character,
//! `*`, `+`, `?` (greedy), `^`, `$`, `|` and groups `( )`. Matching is a
//! search anywhere in the text, by backtracking; names are short, and the
//! pattern's size is capped.

/// The longest pattern accepted.
const MAX_PATTERN: usize = 256;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Char(char),
    Any,
    Class {
        ranges: Vec<(char, char)>,
        negated: bool,
    },
    Start,
    End,
    Group(Box<Alt>),
    Repeat {
        node: Box<Node>,
        min: usize,
        max: Option<usize>,
    },
}

/// Alternatives, each a sequence.
#[derive(Debug, Clone, PartialEq)]
struct Alt(Vec<Vec<Node>>);

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Regex {
    alt: Alt,
}

impl Regex {
    /// Compile `pattern`; the error says what is wrong and where.
    pub fn new(pattern: &str) -> Result<Regex, String> {
        if pattern.len() > MAX_PATTERN {
            return Err(format!("longer than {MAX_PATTERN} bytes"));
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut p = Parser { s: &chars, i: 0 };
        let alt = p.alt()?;
        if let Some(c) = p.peek() {
            return Err(format!("unexpected `{c}` at {}", p.i + 1));
        }
        Ok(Regex { alt })
    }

    /// Whether the pattern matches somewhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        let t: Vec<char> = text.chars().collect();
        (0..=t.len()).any(|start| match_alt(&self.alt, &t, start, &mut |_| true))
    }
}

struct Parser<'a> {
    s: &'a [char],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.i += 1;
        c
    }

    fn alt(&mut self) -> Result<Alt, String> {
        let mut alts = vec![self.seq()?];
        while self.peek() == Some('|') {
            self.i += 1;
            alts.push(self.seq()?);
        }
        Ok(Alt(alts))
    }

    fn seq(&mut self) -> Result<Vec<Node>, String> {
        let mut seq = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            let (min, max) = match self.peek() {
                Some('*') => (0, None),
                Some('+') => (1, None),
                Some('?') => (0, Some(1)),
                _ => {
                    seq.push(atom);
                    continue;
                }
            };
            self.i += 1;
            if matches!(atom, Node::Start | Node::End | Node::Repeat { .. }) {
                return Err(format!("nothing to repeat at {}", self.i));
            }
            seq.push(Node::Repeat {
                node: Box::new(atom),
                min,
                max,
            });
        }
        Ok(seq)
    }

    fn atom(&mut self) -> Result<Node, String> {
        let at = self.i + 1;
        match self.next() {
            None => Err("unexpected end".into()),
            Some('.') => Ok(Node::Any),
            Some('^') => Ok(Node::Start),
            Some('$') => Ok(Node::End),
            Some('(') => {
                // `(?:` is a group too.
                if self.peek() == Some('?') && self.s.get(self.i + 1) == Some(&':') {
                    self.i += 2;
                }
                let inner = self.alt()?;
                match self.next() {
                    Some(')') => Ok(Node::Group(Box::new(inner))),
                    _ => Err(format!("unclosed `(` at {at}")),
                }
            }
            Some('[') => self.class(at),
            Some('\\') => self.escape(),
            Some(c @ ('*' | '+' | '?')) => Err(format!("nothing to repeat before `{c}` at {at}")),
            Some(c) => Ok(Node::Char(c)),
        }
    }

    fn escape(&mut self) -> Result<Node, String> {
        let class = |ranges: &[(char, char)], negated| Node::Class {
            ranges: ranges.to_vec(),
            negated,
        };
        const DIGIT: &[(char, char)] = &[('0', '9')];
        const WORD: &[(char, char)] = &[('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')];
        const SPACE: &[(char, char)] = &[(' ', ' '), ('\t', '\r')];
        match self.next() {
            None => Err("`\\` at the end".into()),
            Some('d') => Ok(class(DIGIT, false)),
            Some('D') => Ok(class(DIGIT, true)),
            Some('w') => Ok(class(WORD, false)),
            Some('W') => Ok(class(WORD, true)),
            Some('s') => Ok(class(SPACE, false)),
            Some('S') => Ok(class(SPACE, true)),
            Some('t') => Ok(Node::Char('\t')),
            Some('n') => Ok(Node::Char('\n')),
            Some(c) if c.is_ascii_alphanumeric() => Err(format!("unknown escape `\\{c}`")),
            Some(c) => Ok(Node::Char(c)),
        }
    }

    fn class(&mut self, at: usize) -> Result<Node, String> {
        let negated = self.peek() == Some('^');
        if negated {
            self.i += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = match self.next() {
                None => return Err(format!("unclosed `[` at {at}")),
                Some(']') if !first => break,
                Some('\\') => match self.next() {
                    Some('d') => {
                        ranges.push(('0', '9'));
                        first = false;
                        continue;
                    }
                    Some(c) => c,
                    None => return Err(format!("unclosed `[` at {at}")),
                },
                Some(c) => c,
            };
            first = false;
            if self.peek() == Some('-') && self.s.get(self.i + 1).is_some_and(|n| *n != ']') {
                self.i += 1;
                let hi = match self.next() {
                    Some('\\') => self.next(),
                    other => other,
                }
                .ok_or_else(|| format!("unclosed `[` at {at}"))?;
                if hi < c {
                    return Err(format!("range `{c}-{hi}` out of order"));
                }
                ranges.push((c, hi));
            } else {
                ranges.push((c, c));
            }
        }
        Ok(Node::Class { ranges, negated })
    }
}

/// Match one of `alt` at `i`, then `k` on what follows.
fn match_alt(alt: &Alt, t: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    alt.0.iter().any(|seq| match_seq(seq, t, i, k))
}

fn match_seq(seq: &[Node], t: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    let Some((first, rest)) = seq.split_first() else {
        return k(i);
    };
    match_node(first, t, i, &mut |j| match_seq(rest, t, j, k))
}

fn match_node(n: &Node, t: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match n {
        Node::Char(c) => t.get(i) == Some(c) && k(i + 1),
        Node::Any => t.get(i).is_some_and(|c| *c != '\n') && k(i + 1),
        Node::Class { ranges, negated } => {
            t.get(i)
                .is_some_and(|c| ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&c)) != *negated)
                && k(i + 1)
        }
        Node::Start => i == 0 && k(i),
        Node::End => i == t.len() && k(i),
        Node::Group(alt) => match_alt(alt, t, i, k),
        Node::Repeat { node, min, max } => repeat(node, *min, *max, 0, t, i, k),
    }
}

/// Greedy: as many more `node`s as fit, then `k`; backing off one at a time.
fn repeat(
    node: &Node,
    min: usize,
    max: Option<usize>,
    done: usize,
    t: &[char],
    i: usize,
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    if max.is_none_or(|m| done < m)
        && match_node(node, t, i, &mut |j| {
            // An empty match would loop forever.
            j > i && repeat(node, min, max, done + 1, t, j, k)
        })
    {
        return true;
    }
    done >= min && k(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_javascript_test() {
        let cases: &[(&str, &str, bool)] = &[
            ("api", "api", true),
            ("api", "my-api-2", true),
            ("^api$", "my-api", false),
            ("^api", "api-2", true),
            ("api$", "api-2", false),
            ("a.c", "abc", true),
            ("a.c", "ac", false),
            ("ab*c", "ac", true),
            ("ab*c", "abbbc", true),
            ("ab+c", "ac", false),
            ("ab?c", "abc", true),
            ("ab?c", "abbc", false),
            ("^(api|web)-\\d+$", "web-12", true),
            ("^(api|web)-\\d+$", "db-12", false),
            ("^worker-[0-9]$", "worker-7", true),
            ("^worker-[0-9]$", "worker-x", false),
            ("^[^-]+$", "plain", true),
            ("^[^-]+$", "has-dash", false),
            ("echo\\.js", "echo.js", true),
            ("echo\\.js", "echoXjs", false),
            ("^(a|ab)c$", "abc", true),
            ("^(a*)*b$", "aaaaaaaaaaaaaaaaaaaab", true),
            ("^.*$", "", true),
            ("x|", "anything", true),
            ("[a-c]+z", "xxbcaz", true),
            ("^\\w+$", "a_B9", true),
            ("^\\w+$", "a-b", false),
            ("(?:ab)+", "ababx", true),
        ];
        for (pattern, text, want) in cases {
            let re = Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(re.is_match(text), *want, "/{pattern}/ on {text:?}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in ["(ab", "a)", "[ab", "*a", "a**", "\\", "[z-a]", "\\q"] {
            assert!(Regex::new(bad).is_err(), "{bad} accepted");
        }
        assert!(Regex::new(&"a".repeat(MAX_PATTERN + 1)).is_err());
    }
}
