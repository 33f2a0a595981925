//! Deterministic random-input tests of every parser that reads what a
//! client, a config file or `/proc` says: the protocol (requests and bus
//! events), option coercion, the cron parser, the procfs parser, relaxed
//! JSON and the YAML subset. No input may panic, and every refusal is a
//! typed error with words in it. Seeded xorshift, so a failure is
//! reproduced by its seed and index; `cargo test` runs a few thousand
//! inputs per parser, `cargo test --lib fuzz -- --ignored` a million each.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::{Map, Value, json};

use crate::{cron, mini_yaml, options, procfs, protocol, relaxed_json};

/// xorshift64*: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Pieces that parsers give meaning to, spliced into inputs.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    ":",
    ",",
    "\\",
    "\n",
    "\r\n",
    "\t",
    " ",
    "-",
    "- ",
    "#",
    "//",
    "/*",
    "*/",
    "*",
    "/",
    "?",
    "L",
    "W",
    "0",
    "-1",
    "1e999",
    "18446744073709551616",
    "0x1F",
    "null",
    "true",
    "false",
    "NaN",
    "Infinity",
    "\u{feff}",
    "\u{0}",
    "é",
    "\u{202e}",
    "&a",
    "*a",
    "!!str",
    "|",
    ">",
    "...",
    "---",
    "~",
    "@daily",
    "60",
    "24",
    "32",
    "13",
    "7",
    "1-5",
    "5-1",
    "*/0",
    "*/5",
    "\"cmd\"",
    "\"start\"",
    "\"apps\"",
    "\"script\"",
    "\"instances\"",
    "\"max\"",
    "1s",
    "5m",
    "2h",
    "1G",
    "100M",
    "SIGKILL",
    "SIGFOO",
    "999999999999999999999",
];

/// Mutate `seed`: flips, insertions of bytes and tokens, cuts, copies.
fn mutate(rng: &mut Rng, seed: &[u8], others: &[&[u8]]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(v.len() + 1);
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.next() as u8),
            2 | 3 => {
                let t = rng.pick(TOKENS).as_bytes();
                v.splice(at..at, t.iter().copied());
            }
            4 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            5 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(32)).min(v.len());
                let piece = v[start..end].to_vec();
                v.splice(at..at, piece);
            }
            6 => {
                let other = *rng.pick(others);
                let start = rng.below(other.len() + 1);
                let end = (start + rng.below(64)).min(other.len());
                v.splice(at..at, other[start..end].iter().copied());
            }
            _ => v.truncate(at),
        }
    }
    v
}

/// Random bytes, mostly printable.
fn noise(rng: &mut Rng) -> Vec<u8> {
    (0..rng.below(200))
        .map(|_| match rng.below(4) {
            0 => rng.next() as u8,
            _ => b' ' + rng.below(95) as u8,
        })
        .collect()
}

/// A random JSON value, `depth` levels at most, with keys from `keys`.
fn value(rng: &mut Rng, depth: usize, keys: &[&str]) -> Value {
    match rng.below(if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64 >> rng.below(64)),
        3 => json!(f64::from_bits(rng.next()).clamp(-1e300, 1e300)),
        4 => json!(String::from_utf8_lossy(&noise(rng)).into_owned()),
        5 => json!(*rng.pick(TOKENS)),
        6 => Value::Array(
            (0..rng.below(5))
                .map(|_| value(rng, depth - 1, keys))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(8) {
                let k = match rng.below(4) {
                    0 => String::from_utf8_lossy(&noise(rng)).into_owned(),
                    _ => rng.pick(keys).to_string(),
                };
                m.insert(k, value(rng, depth - 1, keys));
            }
            Value::Object(m)
        }
    }
}

/// Run `f` on `input`; a panic fails the test naming the input.
fn no_panic<T: std::fmt::Debug>(what: &str, seed: u64, i: usize, input: &T, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        panic!("{what}: input {i} of seed {seed:#x} panicked: {input:?}");
    }
}

const REQUEST_SEEDS: &[&str] = &[
    r#"{"id":1,"cmd":"ping"}"#,
    r#"{"id":"a","cmd":"start","apps":[{"script":"a.js","instances":2}]}"#,
    r#"{"cmd":"start","target":"api","env_name":"production"}"#,
    r#"{"id":2,"cmd":"stop","target":"all"}"#,
    r#"{"cmd":"send_signal","signal":"SIGUSR2","target":3}"#,
    r#"{"cmd":"send_data","packet":{"id":1,"topic":"t","data":{}}}"#,
    r#"{"cmd":"subscribe","events":["log:*","process:event"]}"#,
    r#"{"cmd":"scale","name":"api","instances":"+2"}"#,
    r#"{"cmd":"flush","target":null}"#,
    "stop all",
    "restart api",
    "describe 0",
    "list",
    "kill_daemon",
];

const EVENT_SEEDS: &[&str] = &[
    r#"{"event":"process:event","data":{"event":"exit","code":1,"process":{"name":"a","pm_id":0,"pid":5,"namespace":"default"}},"at":1}"#,
    r#"{"event":"log:out","data":{"data":"hi\n","process":{"name":"a","pm_id":0}}}"#,
    r#"{"event":"bus:dropped","data":{"count":3}}"#,
];

const CRON_SEEDS: &[&str] = &[
    "*/5 * * * *",
    "0 0 1 1 *",
    "0 */2 * * * *",
    "30 4 1,15 * 1-5",
    "0 0 29 2 *",
    "0 12 * JAN-MAR MON,FRI",
    "@daily",
    "0 0 L * *",
];

const STAT_SEEDS: &[&str] = &[
    "1234 (node) S 1 1234 1234 0 -1 4194560 1000 0 0 0 50 20 0 0 20 0 11 0 500 1000000 2000 18446744073709551615 1 1 0 0 0 0 0 4096 17922 0 0 0 17 1 0 0 0 0 0",
    "99 (a) b) c) R 1 99 99 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 7 4096 10 0",
    "5 () Z 1 5 5",
];

const JSON_SEEDS: &[&str] = &[
    r#"{"apps":[{"name":"api","script":"server.js","instances":4,"env":{"PORT":3000}}]}"#,
    "{ apps: [ { name: 'web', script: 'app.js', /* note */ watch: true, }, ], }",
    "// config\n[{\"script\": \"a.js\", args: [\"--x\", 1e3, -0.5, .5, +1, 0x10]}]",
];

const YAML_SEEDS: &[&str] = &[
    "apps:\n  - name: api\n    script: server.js\n    instances: 4\n    env:\n      PORT: 3000\n",
    "apps:\n- name: 'web'\n  args: [\"--x\", 1]\n  watch: true # c\n  cron_restart: \"0 * * * *\"\n",
    "---\napps:\n  - script: a.js\n    args: |\n      one\n      two\n    note: >\n      folded\n...\n",
];

fn as_bytes(seeds: &[&'static str]) -> Vec<&'static [u8]> {
    seeds.iter().map(|s| s.as_bytes()).collect()
}

/// An input for a text parser: a mutated seed, mostly; pure noise now
/// and then.
fn text_input(rng: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
    match rng.below(8) {
        0 => noise(rng),
        _ => {
            let seed = rng_seed(rng, seeds);
            mutate(rng, seed, seeds)
        }
    }
}

fn rng_seed<'a>(rng: &mut Rng, seeds: &[&'a [u8]]) -> &'a [u8] {
    seeds[rng.below(seeds.len())]
}

/// Every parser, `n` inputs each, from `seed`.
fn run(seed: u64, n: usize) {
    let mut rng = Rng(seed | 1);
    let requests = as_bytes(REQUEST_SEEDS);
    let events = as_bytes(EVENT_SEEDS);
    let crons = as_bytes(CRON_SEEDS);
    let stats = as_bytes(STAT_SEEDS);
    let jsons = as_bytes(JSON_SEEDS);
    let yamls = as_bytes(YAML_SEEDS);
    let keys: Vec<&str> = options::known_keys().collect();
    let from = cron::Civil {
        year: 2026,
        month: 12,
        day: 3,
        hour: 8,
        min: 0,
        sec: 0,
    };
    for i in 0..n {
        let line = text_input(&mut rng, &requests);
        no_panic(
            "Request::parse",
            seed,
            i,
            &String::from_utf8_lossy(&line),
            || {
                if let Err((_, e)) = protocol::Request::parse(&line) {
                    assert!(!e.message.is_empty());
                }
            },
        );
        let line = String::from_utf8_lossy(&text_input(&mut rng, &events)).into_owned();
        no_panic("Event::parse", seed, i, &line, || {
            if let Err(e) = protocol::Event::parse(&line) {
                assert!(!e.is_empty());
            }
        });
        let app = match rng.below(3) {
            0 => value(&mut rng, 3, &keys),
            _ => {
                let mut m = Map::new();
                m.insert("script".into(), json!("a.js"));
                for _ in 0..1 + rng.below(6) {
                    let k = *rng.pick(&keys);
                    m.insert(k.into(), value(&mut rng, 2, &keys));
                }
                Value::Object(m)
            }
        };
        no_panic("options::parse_app", seed, i, &app, || {
            if let Err(e) = options::parse_app(&app) {
                assert!(!e.message.is_empty(), "{e:?}");
            }
        });
        no_panic("options::apps_of_config", seed, i, &app, || {
            if let Err(e) = options::apps_of_config(app.clone()) {
                assert!(!e.is_empty());
            }
        });
        let v = value(&mut rng, 1, &keys);
        no_panic("options scalars", seed, i, &v, || {
            let _ = options::parse_duration(&v);
            let _ = options::parse_size(&v);
            let _ = options::parse_signal(&v);
            if let Some(s) = v.as_str() {
                let _ = options::split_args(s);
            }
        });
        let expr = String::from_utf8_lossy(&text_input(&mut rng, &crons)).into_owned();
        let search = rng.below(16) == 0;
        no_panic("Cron::parse", seed, i, &expr, || {
            match cron::Cron::parse(&expr) {
                Ok(c) if search => {
                    let _ = c.next_after(from);
                }
                Ok(_) => {}
                Err(e) => assert!(!e.is_empty()),
            }
        });
        let stat = String::from_utf8_lossy(&text_input(&mut rng, &stats)).into_owned();
        no_panic("procfs::parse_stat", seed, i, &stat, || {
            let _ = procfs::parse_stat(&stat);
        });
        let text = String::from_utf8_lossy(&text_input(&mut rng, &jsons)).into_owned();
        no_panic("relaxed_json::parse", seed, i, &text, || {
            if let Err(e) = relaxed_json::parse(&text) {
                assert!(!e.message.is_empty() && e.line >= 1, "{e:?}");
            }
        });
        let text = String::from_utf8_lossy(&text_input(&mut rng, &yamls)).into_owned();
        no_panic("mini_yaml::parse", seed, i, &text, || {
            if let Err(e) = mini_yaml::parse(&text) {
                assert!(!e.message.is_empty() && e.line >= 1, "{e:?}");
            }
        });
    }
}

#[test]
fn parsers_survive_random_input() {
    run(0x00C0_FFEE, 3_000);
}

/// The long run: `cargo test --release --lib fuzz -- --ignored`.
#[test]
#[ignore]
fn parsers_survive_a_million_random_inputs() {
    run(0xDEAD_BEEF, 1_000_000);
}

#[test]
fn the_generator_is_deterministic() {
    let (mut a, mut b) = (Rng(7), Rng(7));
    for _ in 0..100 {
        assert_eq!(a.next(), b.next());
    }
    let seeds = as_bytes(REQUEST_SEEDS);
    let one = mutate(&mut Rng(9), seeds[1], &seeds);
    let two = mutate(&mut Rng(9), seeds[1], &seeds);
    assert_eq!(one, two);
}
