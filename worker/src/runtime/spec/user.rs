//! Who a container's process runs as: the image config's `User`, resolved
//! against the image's own /etc/passwd and /etc/group.
//!
//! The forms are Docker's and containerd's (`oci.WithUser`): `user` or
//! `user:group`, each a name or a number. The rules follow moby/sys/user's
//! `GetExecUser`, which Docker uses:
//! - a user name must be in /etc/passwd; a uid need not be (its gid is
//!   then 0), but when it is, its entry's gid is the primary group;
//! - an explicit group (name or gid) replaces that gid; a group name must
//!   be in /etc/group;
//! - without an explicit group, the groups of /etc/group that list the
//!   user's name become supplementary groups;
//! - the primary gid is always among the supplementary ones (Docker's fix
//!   for CVE-2023-25173), so a process cannot shed it with setgroups.
//!
//! Only `uid:gid` (and no user: root) needs no files; [`ImageUser::parse`]
//! says so, and the caller reads the files only otherwise. Parsing is pure;
//! reading the files out of the image's layers is `super::rootfs`.

/// Why an image's user cannot be resolved; the caller adds the image.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {user:?} is not of the form user[:group] (each a name or a number)")]
    Malformed { user: String },
    #[error("no user {name:?} in its /etc/passwd")]
    UnknownUser { name: String },
    #[error("no group {name:?} in its /etc/group")]
    UnknownGroup { name: String },
    #[error("user {name:?} cannot be looked up: it has no /etc/passwd")]
    NoPasswd { name: String },
    #[error("group {name:?} cannot be looked up: it has no /etc/group")]
    NoGroupFile { name: String },
}

/// `process.user` of the runtime spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary gid first.
    pub additional_gids: Vec<u32>,
}

impl ProcessUser {
    /// `uid:gid` with the primary gid as its only supplementary group.
    pub fn new(uid: u32, gid: u32) -> Self {
        Self {
            uid,
            gid,
            additional_gids: vec![gid],
        }
    }

    /// root, what an image without a user runs as.
    pub fn root() -> Self {
        Self::new(0, 0)
    }
}

/// One side of `user[:group]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Id {
    Number(u32),
    Name(String),
}

impl Id {
    fn parse(s: &str) -> Option<Self> {
        if s.is_empty() {
            return None;
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().ok().map(Self::Number);
        }
        Some(Self::Name(s.to_owned()))
    }
}

/// An image config's `User`, parsed: known at once, or to be looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// No user (root) or `uid:gid`: no file is needed.
    Known(ProcessUser),
    /// A name on either side, or a uid whose primary group is in
    /// /etc/passwd: [`ImageUser::resolve`] it with the image's files.
    Lookup(ImageUser),
}

/// An image config's `User` that needs the image's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    user: Id,
    group: Option<Id>,
}

impl ImageUser {
    pub fn parse(user: Option<&str>) -> Result<Parsed, UserError> {
        let Some(spec) = user.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Parsed::Known(ProcessUser::root()));
        };
        let malformed = || UserError::Malformed {
            user: spec.to_owned(),
        };
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let user = Id::parse(user).ok_or_else(malformed)?;
        let group = match group {
            Some(g) if g.contains(':') => return Err(malformed()),
            Some(g) => Some(Id::parse(g).ok_or_else(malformed)?),
            None => None,
        };
        Ok(match (user, group) {
            (Id::Number(uid), Some(Id::Number(gid))) => Parsed::Known(ProcessUser::new(uid, gid)),
            (user, group) => Parsed::Lookup(Self { user, group }),
        })
    }

    /// Resolves names against the image's files (`None`: the file is
    /// absent), as moby/sys/user's `GetExecUser` does.
    pub fn resolve(
        &self,
        passwd: Option<&str>,
        group: Option<&str>,
    ) -> Result<ProcessUser, UserError> {
        let entry = match &self.user {
            Id::Name(name) => {
                let passwd = passwd.ok_or_else(|| UserError::NoPasswd { name: name.clone() })?;
                let entry = passwd_entries(passwd).find(|e| e.name == name.as_str());
                Some(entry.ok_or_else(|| UserError::UnknownUser { name: name.clone() })?)
            }
            Id::Number(uid) => passwd.and_then(|p| passwd_entries(p).find(|e| e.uid == *uid)),
        };
        let (uid, mut gid) = match (&self.user, &entry) {
            (_, Some(e)) => (e.uid, e.gid),
            (Id::Number(uid), None) => (*uid, 0),
            (Id::Name(_), None) => unreachable!("a name without an entry was refused"),
        };
        let mut supplementary = Vec::new();
        match &self.group {
            Some(Id::Number(g)) => gid = *g,
            Some(Id::Name(name)) => {
                let group = group.ok_or_else(|| UserError::NoGroupFile { name: name.clone() })?;
                gid = group_entries(group)
                    .find(|g| g.name == name.as_str())
                    .ok_or_else(|| UserError::UnknownGroup { name: name.clone() })?
                    .gid;
            }
            // Only the implicit form gets the user's groups, and only for
            // a user with a name to be listed under.
            None => {
                if let (Some(entry), Some(group)) = (&entry, group) {
                    supplementary = group_entries(group)
                        .filter(|g| g.members.clone().any(|m| m == entry.name))
                        .map(|g| g.gid)
                        .collect();
                }
            }
        }
        let mut user = ProcessUser::new(uid, gid);
        for g in supplementary {
            if !user.additional_gids.contains(&g) {
                user.additional_gids.push(g);
            }
        }
        Ok(user)
    }
}

/// One line of /etc/passwd (the fields used).
#[derive(Debug, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

/// One line of /etc/group (the fields used).
#[derive(Debug)]
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: std::str::Split<'a, char>,
}

/// A passwd or group line's name and the fields after its password; None
/// for comments and lines without a name.
fn entry_fields(line: &str) -> Option<(&str, std::str::Split<'_, char>)> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let mut fields = line.split(':');
    let name = fields.next().filter(|n| !n.is_empty())?;
    let _password = fields.next()?;
    Some((name, fields))
}

/// `name:password:uid:gid:gecos:home:shell` lines, in order. Blank lines,
/// comments and lines without numeric ids (NIS `+`/`-` entries, damage)
/// are skipped: they match nothing.
fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let (name, mut fields) = entry_fields(line)?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(PasswdEntry { name, uid, gid })
    })
}

/// `name:password:gid:member,member` lines, in order; skipped as in
/// [`passwd_entries`].
fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter_map(|line| {
        let (name, mut fields) = entry_fields(line)?;
        let gid = fields.next()?.parse().ok()?;
        let members = fields.next().unwrap_or("").split(',');
        Some(GroupEntry { name, gid, members })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
+nis::::::

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
app:x:1000:1000::/home/app:/bin/sh
app:x:1001:1001:a second entry loses:/:/bin/sh
broken:x:notanumber:5::/:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:
www-data:x:33:app
app:x:1000:
staff:x:50:app,www-data
docker:x:999:daemon, app
video:x:44:
nogroup:x:65534:
";

    /// (/etc/passwd, /etc/group), `None`: absent.
    type Files = (Option<&'static str>, Option<&'static str>);

    fn lookup(spec: &str) -> ImageUser {
        match ImageUser::parse(Some(spec)).unwrap() {
            Parsed::Lookup(user) => user,
            Parsed::Known(user) => panic!("{spec:?} needs no lookup: {user:?}"),
        }
    }

    fn user(uid: u32, gid: u32, additional: &[u32]) -> ProcessUser {
        ProcessUser {
            uid,
            gid,
            additional_gids: additional.to_vec(),
        }
    }

    #[test]
    fn users_resolve_like_docker() {
        let both = (Some(PASSWD), Some(GROUP));
        #[rustfmt::skip]
        let cases: &[(&str, Files, ProcessUser)] = &[
            // a name: its passwd entry; its groups from /etc/group
            ("nobody", both, user(65534, 65534, &[65534])),
            ("root", both, user(0, 0, &[0])),
            ("app", both, user(1000, 1000, &[1000, 33, 50])),
            ("www-data", both, user(33, 33, &[33, 50])),
            // first entry wins
            ("app", (Some(PASSWD), None), user(1000, 1000, &[1000])),
            // a uid with an entry: that gid and groups; without: gid 0
            ("33", both, user(33, 33, &[33, 50])),
            ("1000", both, user(1000, 1000, &[1000, 33, 50])),
            ("4242", both, user(4242, 0, &[0])),
            ("4242", (None, None), user(4242, 0, &[0])),
            // an explicit group replaces the gid, and no groups are added
            ("app:video", both, user(1000, 44, &[44])),
            ("app:44", both, user(1000, 44, &[44])),
            ("app:4321", both, user(1000, 4321, &[4321])),
            ("33:staff", both, user(33, 50, &[50])),
            ("4242:nogroup", both, user(4242, 65534, &[65534])),
            // surrounding blanks are the config's, not the name's
            (" nobody ", both, user(65534, 65534, &[65534])),
        ];
        for (spec, (passwd, group), want) in cases {
            let got = lookup(spec).resolve(*passwd, *group);
            assert_eq!(got.as_ref().ok(), Some(want), "{spec:?}: {got:?}");
        }
    }

    #[test]
    fn unknown_names_and_missing_files_are_refused() {
        let both = (Some(PASSWD), Some(GROUP));
        #[rustfmt::skip]
        let cases: &[(&str, Files, &str)] = &[
            ("ghost", both, "no user \"ghost\" in its /etc/passwd"),
            ("ghost:0", both, "no user \"ghost\" in its /etc/passwd"),
            ("broken", both, "no user \"broken\" in its /etc/passwd"),
            ("+nis", both, "no user \"+nis\" in its /etc/passwd"),
            ("nobody", (None, Some(GROUP)), "user \"nobody\" cannot be looked up: it has no /etc/passwd"),
            ("app:ghosts", both, "no group \"ghosts\" in its /etc/group"),
            ("1000:ghosts", both, "no group \"ghosts\" in its /etc/group"),
            ("app:video", (Some(PASSWD), None), "group \"video\" cannot be looked up: it has no /etc/group"),
        ];
        for (spec, (passwd, group), want) in cases {
            match lookup(spec).resolve(*passwd, *group) {
                Err(e) => assert_eq!(e.to_string(), *want, "{spec:?}"),
                Ok(u) => panic!("{spec:?} resolved to {u:?}"),
            }
        }
    }

    #[test]
    fn only_uid_and_gid_together_need_no_files() {
        #[rustfmt::skip]
        let cases: &[(Option<&str>, Option<ProcessUser>)] = &[
            // (config User, Some(known at once) or None: looked up)
            (None, Some(user(0, 0, &[0]))),
            (Some(""), Some(user(0, 0, &[0]))),
            (Some("  "), Some(user(0, 0, &[0]))),
            (Some("1000:1001"), Some(user(1000, 1001, &[1001]))),
            (Some("0:0"), Some(user(0, 0, &[0]))),
            (Some("1000"), None),
            (Some("app"), None),
            (Some("app:1001"), None),
            (Some("1000:app"), None),
        ];
        for (spec, want) in cases {
            let known = match ImageUser::parse(*spec).unwrap() {
                Parsed::Known(user) => Some(user),
                Parsed::Lookup(_) => None,
            };
            assert_eq!(known, *want, "{spec:?}");
        }
    }

    #[test]
    fn malformed_users_are_refused() {
        for spec in [
            ":",
            "app:",
            ":app",
            "1000:",
            "a:b:c",
            "99999999999",
            "1:99999999999",
        ] {
            match ImageUser::parse(Some(spec)) {
                Err(UserError::Malformed { user }) => assert_eq!(user, spec),
                other => panic!("{spec:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn passwd_and_group_lines_parse() {
        let names: Vec<_> = passwd_entries(PASSWD).map(|e| e.name).collect();
        assert_eq!(
            names,
            ["root", "daemon", "www-data", "app", "app", "nobody"]
        );
        let daemon = group_entries(GROUP).find(|g| g.name == "docker").unwrap();
        assert_eq!(daemon.gid, 999);
        assert_eq!(daemon.members.collect::<Vec<_>>(), ["daemon", " app"]);
    }
}
