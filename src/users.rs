//! User and group resolution for the `uid`/`gid` app options, without NSS (the binary is
//! static): parsing `/etc/passwd` and `/etc/group`, and turning a user and/or group given by
//! name or number into the credentials a child is started with.

/// One `/etc/passwd` entry (password and GECOS fields are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// One `/etc/group` entry (password field not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// What a `uid`/`gid` option pair resolves to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    /// The uid to switch to; `None` when only a group was given (keep the current uid).
    pub uid: Option<u32>,
    /// The primary gid to switch to: the given group, else the user's passwd group.
    pub gid: u32,
    /// Supplementary groups for `setgroups`: `gid` first, then every group in `/etc/group`
    /// listing the user name as a member (like `initgroups(user, gid)`), without duplicates.
    /// Just `[gid]` when no user was given or the user is a bare uid not in `/etc/passwd`.
    pub groups: Vec<u32>,
    /// The user's home directory from `/etc/passwd`, if the user is listed there.
    pub home: Option<String>,
    /// The user's name from `/etc/passwd`, if the user is listed there.
    pub user: Option<String>,
}

/// Parses `/etc/passwd` text (`name:pw:uid:gid:gecos:home:shell`). Blank lines, `#` comments,
/// NIS `+`/`-` entries and malformed lines (wrong field count, empty name, non-numeric ids)
/// are skipped.
pub fn parse_passwd(text: &str) -> Vec<User> {
    text.lines().filter_map(parse_passwd_line).collect()
}

fn parse_passwd_line(line: &str) -> Option<User> {
    let fields = data_fields(line)?;
    let [name, _pw, uid, gid, _gecos, home, shell] = fields.as_slice() else {
        return None;
    };
    Some(User {
        name: valid_name(name)?.to_owned(),
        uid: parse_id(uid)?,
        gid: parse_id(gid)?,
        home: (*home).to_owned(),
        shell: (*shell).to_owned(),
    })
}

/// Parses `/etc/group` text (`name:pw:gid:member,member`). Skips the same kinds of lines as
/// [`parse_passwd`]; empty member entries are dropped.
pub fn parse_group(text: &str) -> Vec<Group> {
    text.lines().filter_map(parse_group_line).collect()
}

fn parse_group_line(line: &str) -> Option<Group> {
    let fields = data_fields(line)?;
    let [name, _pw, gid, members] = fields.as_slice() else {
        return None;
    };
    Some(Group {
        name: valid_name(name)?.to_owned(),
        gid: parse_id(gid)?,
        members: members
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// The `:`-separated fields of a line, or `None` for blank and comment lines.
fn data_fields(line: &str) -> Option<Vec<&str>> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    Some(line.split(':').collect())
}

fn valid_name(name: &str) -> Option<&str> {
    if name.is_empty() || name.starts_with(['+', '-']) {
        None
    } else {
        Some(name)
    }
}

/// A decimal id: ASCII digits only (no sign, no spaces), fitting in u32.
fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Resolves a user and/or group against parsed passwd/group entries. Pure.
///
/// `user` is a name or a decimal uid; `group` is a name or a decimal gid. Names are tried
/// first, so a user literally named `1000` wins over uid 1000. A numeric id need not be
/// listed, except that a bare uid with no passwd entry needs an explicit `group` (its primary
/// group is otherwise unknown). With only `group`, `uid` is `None` (keep the current one).
/// See [`Credentials`] for how each field is filled.
///
/// Errors name the culprit, e.g. "unknown user `bob` (not in /etc/passwd)" or
/// "unknown group `wheel2` (not in /etc/group)".
pub fn resolve(
    user: Option<&str>,
    group: Option<&str>,
    passwd: &[User],
    groups: &[Group],
) -> Result<Credentials, String> {
    let explicit_gid = group.map(|g| find_group(g, groups)).transpose()?;
    let Some(user) = user else {
        let Some(gid) = explicit_gid else {
            return Err("neither a user nor a group was given".to_owned());
        };
        return Ok(Credentials {
            uid: None,
            gid,
            groups: vec![gid],
            home: None,
            user: None,
        });
    };
    let (uid, entry) = find_user(user, passwd)?;
    let gid = match (explicit_gid, entry) {
        (Some(gid), _) => gid,
        (None, Some(e)) => e.gid,
        (None, None) => {
            return Err(format!(
                "uid {uid} (user `{user}`) is not in /etc/passwd, so its primary group is \
                 unknown: give a group as well"
            ));
        }
    };
    let mut supplementary = vec![gid];
    if let Some(e) = entry {
        for g in groups {
            if g.members.contains(&e.name) && !supplementary.contains(&g.gid) {
                supplementary.push(g.gid);
            }
        }
    }
    Ok(Credentials {
        uid: Some(uid),
        gid,
        groups: supplementary,
        home: entry.map(|e| e.home.clone()),
        user: entry.map(|e| e.name.clone()),
    })
}

/// The uid for `user` and its passwd entry, if any.
fn find_user<'a>(user: &str, passwd: &'a [User]) -> Result<(u32, Option<&'a User>), String> {
    if user.is_empty() {
        return Err("empty user name".to_owned());
    }
    if let Some(e) = passwd.iter().find(|e| e.name == user) {
        return Ok((e.uid, Some(e)));
    }
    match parse_id(user) {
        Some(uid) => Ok((uid, passwd.iter().find(|e| e.uid == uid))),
        None => Err(format!("unknown user `{user}` (not in /etc/passwd)")),
    }
}

fn find_group(group: &str, groups: &[Group]) -> Result<u32, String> {
    if group.is_empty() {
        return Err("empty group name".to_owned());
    }
    if let Some(g) = groups.iter().find(|g| g.name == group) {
        return Ok(g.gid);
    }
    parse_id(group).ok_or_else(|| format!("unknown group `{group}` (not in /etc/group)"))
}

/// Reads `/etc/passwd` and `/etc/group` (a missing file counts as empty) and calls
/// [`resolve`]. At least one of `user`/`group` should be `Some`.
impl Credentials {
    /// The identity files are opened with for a process that runs with
    /// these credentials; `None` when it keeps the daemon's uid.
    pub fn fs_user(&self) -> Option<crate::sys::FsUser> {
        Some(crate::sys::FsUser {
            uid: self.uid?,
            gid: self.gid,
            groups: self.groups.clone(),
        })
    }
}

/// Look `user` and `group` (names or numbers) up in /etc/passwd and
/// /etc/group.
pub fn lookup(user: Option<&str>, group: Option<&str>) -> Result<Credentials, String> {
    let passwd = parse_passwd(&read_optional("/etc/passwd")?);
    let groups = parse_group(&read_optional("/etc/group")?);
    resolve(user, group, &passwd, &groups)
}

fn read_optional(path: &str) -> Result<String, String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("cannot read {path}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
# comment line
root:x:0:0:root:/root:/bin/bash

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice A,,,:/home/alice:/bin/zsh\r
bob:x:1001:100::/home/bob:/bin/sh
1234:x:4321:4321::/home/num:/bin/sh
broken:x:12:12:too:few
badid:x:abc:1::/:/bin/sh
signed:x:+5:1::/:/bin/sh
:x:7:7::/:/bin/sh
+nisuser::::::
toolong:x:1:1::/:/bin/sh:extra
";

    const GROUP: &str = "\
root:x:0:
daemon:x:1:
users:x:100:
alice:x:1000:
wheel:x:10:alice, bob,
docker:x:998:bob
audio:x:29:alice,,carol
dupe:x:1000:alice
# comment
bad:x:xx:alice
";

    fn user(name: &str, uid: u32, gid: u32, home: &str, shell: &str) -> User {
        User {
            name: name.into(),
            uid,
            gid,
            home: home.into(),
            shell: shell.into(),
        }
    }

    fn group(name: &str, gid: u32, members: &[&str]) -> Group {
        Group {
            name: name.into(),
            gid,
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn parses_passwd() {
        let cases: &[(&str, Vec<User>)] = &[
            (
                PASSWD,
                vec![
                    user("root", 0, 0, "/root", "/bin/bash"),
                    user("daemon", 1, 1, "/usr/sbin", "/usr/sbin/nologin"),
                    user("alice", 1000, 1000, "/home/alice", "/bin/zsh"),
                    user("bob", 1001, 100, "/home/bob", "/bin/sh"),
                    user("1234", 4321, 4321, "/home/num", "/bin/sh"),
                ],
            ),
            ("", vec![]),
            ("x:x:4294967296:1::/:/bin/sh\n", vec![]),
            (
                "x:x:4294967295:1::/:",
                vec![user("x", u32::MAX, 1, "/", "")],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_passwd(text), *want, "text {text:?}");
        }
    }

    #[test]
    fn parses_group() {
        let cases: &[(&str, Vec<Group>)] = &[
            (
                GROUP,
                vec![
                    group("root", 0, &[]),
                    group("daemon", 1, &[]),
                    group("users", 100, &[]),
                    group("alice", 1000, &[]),
                    group("wheel", 10, &["alice", "bob"]),
                    group("docker", 998, &["bob"]),
                    group("audio", 29, &["alice", "carol"]),
                    group("dupe", 1000, &["alice"]),
                ],
            ),
            ("g:x:5", vec![]),
            ("  \n#x:x:1:\n", vec![]),
        ];
        for (text, want) in cases {
            assert_eq!(parse_group(text), *want, "text {text:?}");
        }
    }

    fn creds(
        uid: Option<u32>,
        gid: u32,
        groups: &[u32],
        name_home: Option<(&str, &str)>,
    ) -> Credentials {
        Credentials {
            uid,
            gid,
            groups: groups.to_vec(),
            home: name_home.map(|(_, h)| h.to_owned()),
            user: name_home.map(|(n, _)| n.to_owned()),
        }
    }

    #[test]
    fn resolves() {
        let passwd = parse_passwd(PASSWD);
        let groups = parse_group(GROUP);
        let alice = Some(("alice", "/home/alice"));
        let bob = Some(("bob", "/home/bob"));
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Result<Credentials, String>,
        );
        let cases: &[Case] = &[
            (Some("alice"), None, Ok(creds(Some(1000), 1000, &[1000, 10, 29], alice))),
            (Some("1000"), None, Ok(creds(Some(1000), 1000, &[1000, 10, 29], alice))),
            (Some("alice"), Some("docker"), Ok(creds(Some(1000), 998, &[998, 10, 29, 1000], alice))),
            (Some("alice"), Some("10"), Ok(creds(Some(1000), 10, &[10, 29, 1000], alice))),
            (Some("bob"), None, Ok(creds(Some(1001), 100, &[100, 10, 998], bob))),
            (Some("bob"), Some("5000"), Ok(creds(Some(1001), 5000, &[5000, 10, 998], bob))),
            (Some("root"), None, Ok(creds(Some(0), 0, &[0], Some(("root", "/root"))))),
            // A user named "1234" wins over uid 1234.
            (Some("1234"), None, Ok(creds(Some(4321), 4321, &[4321], Some(("1234", "/home/num"))))),
            (Some("777"), Some("users"), Ok(creds(Some(777), 100, &[100], None))),
            (Some("777"), Some("778"), Ok(creds(Some(777), 778, &[778], None))),
            (None, Some("wheel"), Ok(creds(None, 10, &[10], None))),
            (None, Some("42"), Ok(creds(None, 42, &[42], None))),
            (Some("carol"), None, Err("unknown user `carol` (not in /etc/passwd)".into())),
            (Some("alice"), Some("wheel2"), Err("unknown group `wheel2` (not in /etc/group)".into())),
            (Some("carol"), Some("wheel2"), Err("unknown group `wheel2` (not in /etc/group)".into())),
            (Some("-1"), None, Err("unknown user `-1` (not in /etc/passwd)".into())),
            (
                Some("777"),
                None,
                Err("uid 777 (user `777`) is not in /etc/passwd, so its primary group is unknown: give a group as well".into()),
            ),
            (Some(""), None, Err("empty user name".into())),
            (None, Some(""), Err("empty group name".into())),
            (None, None, Err("neither a user nor a group was given".into())),
        ];
        for (u, g, want) in cases {
            assert_eq!(
                resolve(*u, *g, &passwd, &groups),
                *want,
                "user {u:?} group {g:?}"
            );
        }
    }

    #[test]
    fn lookup_reads_system_files() {
        // uid 0 / gid 0 resolve even on systems without these files (numeric ids).
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<u32>, u32);
        let cases: &[Case] = &[
            (Some("0"), Some("0"), Some(0), 0),
            (None, Some("0"), None, 0),
        ];
        for (u, g, uid, gid) in cases {
            let c = lookup(*u, *g).unwrap();
            assert_eq!((c.uid, c.gid), (*uid, *gid), "user {u:?} group {g:?}");
            assert_eq!(c.groups.first(), Some(gid));
        }
    }
}
