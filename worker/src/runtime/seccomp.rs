//! Resolves a Docker-format seccomp profile (the containers/common default,
//! `/usr/share/containers/seccomp.json`) into the OCI `linux.seccomp` object.
//!
//! The Docker format is a template: each rule may apply only to some
//! architectures, only when the container has (or lacks) some capabilities,
//! or only from some kernel version on. The OCI form has none of that; it is
//! the list of rules that apply to one container. Docker's daemon does this
//! resolution in `profiles/seccomp.setupSeccomp`; this is the same logic:
//! - `includes.arches` / `excludes.arches`: Go arch names (`amd64`, `x32`, ...).
//! - `includes.caps`: all of them must be in the container's bounding set;
//!   `excludes.caps`: none of them may be.
//! - `includes.minKernel`: the running kernel must be at least that version.
//!
//! On top of the template, skiff refuses new user namespaces
//! ([`deny_user_namespaces`]): `unshare` and `clone` with `CLONE_NEWUSER`
//! get EPERM, and `clone3` (whose flags a filter cannot see) ENOSYS, so libc
//! falls back to `clone`. containers/common's profile allows them (rootless
//! Podman needs them); Docker's default denies them, and unprivileged user
//! namespaces are the entry point of many kernel exploits.

use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;

/// Which syscall ABIs a filter admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchScope {
    /// Only the host's native ABI (x86_64): 32-bit x86 and x32 syscalls are
    /// refused. runc compiles one filter per architecture, so this makes a
    /// container start about 40 ms faster on this machine kind, and the
    /// compat ABIs are a classic kernel attack surface. skiff's default.
    #[default]
    Native,
    /// The native ABI plus the profile's sub-architectures (Docker's choice),
    /// for images that still run 32-bit binaries.
    WithCompat,
}

/// The Go architecture name of the host, as profiles spell it in `arches`.
pub const HOST_GOARCH: &str = "amd64";
/// The libseccomp name of the host architecture, as `archMap` spells it.
pub const HOST_SCMP_ARCH: &str = "SCMP_ARCH_X86_64";

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("reading seccomp profile {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing seccomp profile {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A Docker-format profile, as far as resolution needs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerProfile {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub arch_map: Option<Vec<ArchMap>>,
    /// The older flat form of `archMap`.
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    #[serde(default)]
    pub syscalls: Vec<DockerSyscall>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: String,
    #[serde(default)]
    pub sub_architectures: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerSyscall {
    #[serde(default)]
    pub names: Vec<String>,
    /// The older single-name form.
    #[serde(default)]
    pub name: Option<String>,
    pub action: String,
    #[serde(default)]
    pub args: Option<Vec<Value>>,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub includes: Filter,
    #[serde(default)]
    pub excludes: Filter,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub arches: Vec<String>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

impl DockerProfile {
    pub fn load(path: &Path) -> Result<Self, SeccompError> {
        let bytes = std::fs::read(path).map_err(|source| SeccompError::Read {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| SeccompError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// The OCI `linux.seccomp` object for a container with capability set
    /// `caps` (names with the `CAP_` prefix) on x86_64 running `kernel`
    /// (`(major, minor)`, `None` if unknown: minKernel rules are then kept),
    /// admitting the syscall ABIs of `scope`.
    pub fn resolve(&self, caps: &[&str], kernel: Option<(u32, u32)>, scope: ArchScope) -> Value {
        let has_cap = |c: &String| caps.iter().any(|have| have.eq_ignore_ascii_case(c));

        let architectures: Vec<String> = match (&self.arch_map, &self.architectures) {
            (Some(map), _) => map
                .iter()
                .filter(|m| m.architecture == HOST_SCMP_ARCH)
                .flat_map(|m| {
                    std::iter::once(m.architecture.clone()).chain(m.sub_architectures.clone())
                })
                .collect(),
            (None, Some(flat)) => flat.clone(),
            (None, None) => Vec::new(),
        };
        let architectures = match scope {
            ArchScope::WithCompat => architectures,
            ArchScope::Native => architectures
                .into_iter()
                .filter(|a| a == HOST_SCMP_ARCH)
                .collect(),
        };

        let mut syscalls = Vec::new();
        for rule in &self.syscalls {
            if rule.excludes.arches.iter().any(|a| a == HOST_GOARCH) {
                continue;
            }
            if !rule.includes.arches.is_empty()
                && !rule.includes.arches.iter().any(|a| a == HOST_GOARCH)
            {
                continue;
            }
            if rule.excludes.caps.iter().any(has_cap) {
                continue;
            }
            if !rule.includes.caps.iter().all(has_cap) {
                continue;
            }
            if let (Some(min), Some(running)) = (&rule.includes.min_kernel, kernel) {
                match parse_kernel_version(min) {
                    Some(min) if running < min => continue,
                    _ => {}
                }
            }
            let names: Vec<String> = if rule.names.is_empty() {
                rule.name.iter().cloned().collect()
            } else {
                rule.names.clone()
            };
            if names.is_empty() {
                continue;
            }
            let mut out = json!({ "names": names, "action": rule.action });
            if let Some(args) = rule.args.as_ref().filter(|a| !a.is_empty()) {
                out["args"] = Value::Array(args.clone());
            }
            if let Some(errno) = rule.errno_ret {
                out["errnoRet"] = json!(errno);
            }
            syscalls.push(out);
        }

        deny_user_namespaces(&mut syscalls);
        let mut seccomp = json!({
            "defaultAction": self.default_action,
            "architectures": architectures,
            "syscalls": syscalls,
        });
        if let Some(errno) = self.default_errno_ret {
            seccomp["defaultErrnoRet"] = json!(errno);
        }
        if let Some(flags) = self.flags.as_ref().filter(|f| !f.is_empty()) {
            seccomp["flags"] = json!(flags);
        }
        seccomp
    }
}

/// `CLONE_NEWUSER` (`<linux/sched.h>`).
pub const CLONE_NEWUSER: u64 = 0x1000_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Makes resolved `syscalls` refuse new user namespaces: `clone` and
/// `unshare` only without `CLONE_NEWUSER` (flags are the first argument on
/// x86_64), with it EPERM; `clone3` ENOSYS. The three are taken out of
/// every rule that names them first.
pub fn deny_user_namespaces(syscalls: &mut Vec<Value>) {
    const GUARDED: [&str; 3] = ["clone", "unshare", "clone3"];
    for rule in syscalls.iter_mut() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| !n.as_str().is_some_and(|n| GUARDED.contains(&n)));
        }
    }
    syscalls.retain(|rule| rule["names"].as_array().is_none_or(|n| !n.is_empty()));
    let newuser = |datum: u64| json!([{ "index": 0, "value": CLONE_NEWUSER, "valueTwo": datum, "op": "SCMP_CMP_MASKED_EQ" }]);
    syscalls.push(json!({
        "names": ["clone", "unshare"], "action": "SCMP_ACT_ALLOW", "args": newuser(0),
    }));
    syscalls.push(json!({
        "names": ["clone", "unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
        "args": newuser(CLONE_NEWUSER),
    }));
    syscalls.push(json!({
        "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS,
    }));
}

/// `"5.8"` or `"6.18.44-foo"` -> `(5, 8)` / `(6, 18)`.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's `(major, minor)`, if it can be read.
pub fn running_kernel() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_kernel_version(release.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}, "excludes": {}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_PTRACE"]}, "excludes": {}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "includes": {}, "excludes": {"caps": ["CAP_SYS_PTRACE"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["cacheflush"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm", "arm64"]}},
            {"names": ["newfeature"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.1"}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}
        ]
    }"#;

    #[test]
    fn new_user_namespaces_are_refused_whatever_the_template_allows() {
        let profile: DockerProfile = serde_json::from_str(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
                "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}],
                "syscalls": [
                  {"names": ["read", "clone", "clone3", "unshare"], "action": "SCMP_ACT_ALLOW"},
                  {"names": ["unshare"], "action": "SCMP_ACT_ALLOW"}
                ]}"#,
        )
        .unwrap();
        let s = profile.resolve(&[], None, ArchScope::Native);
        // (syscall, its rules: action, errno, the masked datum if any)
        let summary = |name: &str| -> Vec<(String, Option<u64>, Option<u64>)> {
            rules_for(&s, name)
                .iter()
                .map(|r| {
                    (
                        r["action"].as_str().unwrap().to_owned(),
                        r["errnoRet"].as_u64(),
                        r["args"][0]["valueTwo"].as_u64(),
                    )
                })
                .collect()
        };
        let guarded = vec![
            ("SCMP_ACT_ALLOW".to_owned(), None, Some(0)),
            ("SCMP_ACT_ERRNO".to_owned(), Some(1), Some(CLONE_NEWUSER)),
        ];
        assert_eq!(summary("clone"), guarded);
        assert_eq!(summary("unshare"), guarded);
        assert_eq!(
            summary("clone3"),
            vec![("SCMP_ACT_ERRNO".to_owned(), Some(38), None)]
        );
        // The rest of the rule stands (the control).
        assert_eq!(
            summary("read"),
            vec![("SCMP_ACT_ALLOW".to_owned(), None, None)]
        );
        for r in rules_for(&s, "clone") {
            assert_eq!(r["args"][0]["value"], CLONE_NEWUSER);
            assert_eq!(r["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        }
    }

    fn rules_for<'a>(seccomp: &'a Value, name: &str) -> Vec<&'a Value> {
        seccomp["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn capability_dependent_rules_follow_the_capability_set() {
        let profile: DockerProfile = serde_json::from_str(SMALL).unwrap();

        let without = profile.resolve(&["CAP_CHOWN"], Some((6, 1)), ArchScope::WithCompat);
        let ptrace = rules_for(&without, "ptrace");
        assert_eq!(ptrace.len(), 1);
        assert_eq!(ptrace[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(ptrace[0]["errnoRet"], 1);

        let with = profile.resolve(
            &["CAP_CHOWN", "CAP_SYS_PTRACE"],
            Some((6, 1)),
            ArchScope::WithCompat,
        );
        let ptrace = rules_for(&with, "ptrace");
        assert_eq!(ptrace.len(), 1);
        assert_eq!(ptrace[0]["action"], "SCMP_ACT_ALLOW");
    }

    #[test]
    fn native_scope_admits_only_x86_64() {
        let profile: DockerProfile = serde_json::from_str(SMALL).unwrap();
        let s = profile.resolve(&[], Some((6, 1)), ArchScope::Native);
        assert_eq!(s["architectures"], json!(["SCMP_ARCH_X86_64"]));
    }

    #[test]
    fn arches_kernel_and_args_are_resolved_for_x86_64() {
        let profile: DockerProfile = serde_json::from_str(SMALL).unwrap();
        let s = profile.resolve(&[], Some((6, 1)), ArchScope::WithCompat);
        assert_eq!(s["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(s["defaultErrnoRet"], 38);
        assert_eq!(
            s["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        assert_eq!(rules_for(&s, "arch_prctl").len(), 1);
        assert!(rules_for(&s, "cacheflush").is_empty());
        assert!(rules_for(&s, "newfeature").is_empty());
        // Empty args are dropped, real ones kept verbatim.
        assert!(rules_for(&s, "read")[0].get("args").is_none());
        assert_eq!(rules_for(&s, "personality")[0]["args"][0]["value"], 8);
        // Unknown kernel: keep minKernel rules rather than guess.
        assert_eq!(
            rules_for(
                &profile.resolve(&[], None, ArchScope::WithCompat),
                "newfeature"
            )
            .len(),
            1
        );
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.8"), Some((5, 8)));
        assert_eq!(parse_kernel_version("junk"), None);
    }

    #[test]
    fn real_containers_common_profile_resolves() {
        let path = Path::new("/usr/share/containers/seccomp.json");
        if !path.exists() {
            eprintln!("skipped: {} not installed", path.display());
            return;
        }
        let profile = DockerProfile::load(path).unwrap();
        let caps = crate::runtime::spec::DEFAULT_CAPABILITIES;
        let s = profile.resolve(caps, running_kernel(), ArchScope::WithCompat);
        assert_eq!(s["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(s["syscalls"].as_array().unwrap().len() > 10);
        // CAP_SYS_CHROOT is in the default set, CAP_SYS_ADMIN is not.
        let chroot = rules_for(&s, "chroot");
        assert!(chroot.iter().all(|r| r["action"] == "SCMP_ACT_ALLOW"));
        let bpf = rules_for(&s, "bpf");
        assert!(!bpf.is_empty());
        assert!(bpf.iter().all(|r| r["action"] == "SCMP_ACT_ERRNO"));
        assert!(!rules_for(&s, "read").is_empty());
        // The result must parse as the OCI type runc consumes.
        let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(s).unwrap();
    }
}
