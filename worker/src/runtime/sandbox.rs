//! Sandboxes: the container groups of a host (as Kubernetes pods or Azure
//! container groups). The members of one group carry its id as
//! [`RunSpec::sandbox`] and share, on this host, one network namespace
//! (one bridge address, the group's published ports, one hosts file: they
//! reach each other on localhost) and one set of volumes. Both are kept
//! under the sandbox's key instead of a container id
//! ([`RunSpec::sandbox_key`]); an ordinary container is its own key.
//!
//! The network and the volumes are set up by the first member to start;
//! a member starting while another one's task holds them joins them as
//! they are. The network is torn down when no member on this host has a
//! task any more; the volumes go with the last member's container record.
//! Which container is a member of which sandbox is a container label
//! ([`super::LABEL_SANDBOX`]), so a restarted worker rebuilds its
//! [`Sandboxes`] from containerd's list. The decisions are pure functions
//! with tests beside them; [`Sandboxes`] holds, per key, the members with a
//! task and the lock that serialises set-up, joining and tear-down.

use super::containerd::{containerd_err, net_err, ContainerdRuntime};
use super::{volumes, ContainerInfo, NetworkSpec, RunSpec, RuntimeError, LABEL_SANDBOX};
use containerd_client::services::v1::GetContainerRequest;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use tracing::warn;

/// The longest sandbox id taken (a uuid has 36 characters).
const MAX_KEY: usize = 64;

/// Whether `key` may name a sandbox: it names namespaces and directories,
/// so it is a plain token of hex digits and dashes (a uuid), never a path.
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY).contains(&key.len())
        && key.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && !key.starts_with('-')
}

/// Refuses a run whose sandbox is not a [`valid_key`].
pub fn check(run: &RunSpec) -> Result<(), RuntimeError> {
    match &run.sandbox {
        Some(key) if !valid_key(key) => Err(RuntimeError::Spec {
            id: run.id.clone(),
            message: format!(
                "sandbox {:?} is not a sandbox id (1 to {MAX_KEY} hex digits and dashes)",
                key.chars().take(MAX_KEY + 8).collect::<String>()
            ),
        }),
        _ => Ok(()),
    }
}

/// How a member's start treats its sandbox's network and volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No other member has a task: set them up (afresh: what an earlier
    /// set-up left is cleaned first).
    SetUp,
    /// Another member's task holds them: use them as they are.
    Join,
}

/// The plan of member `id` starting while `members` have a task (its own
/// earlier run among them or not).
pub fn plan(members: &HashSet<String>, id: &str) -> Plan {
    if members.iter().any(|m| m != id) {
        Plan::Join
    } else {
        Plan::SetUp
    }
}

/// Whether the sandbox's network goes once member `id` has no task: no
/// other member has one.
pub fn tear_down_after(members: &HashSet<String>, id: &str) -> bool {
    members.iter().all(|m| m == id)
}

fn is_live(c: &ContainerInfo) -> bool {
    c.task.as_ref().is_some_and(|t| t.status.is_live())
}

/// The networks to keep at start: the key of every run with a live task
/// (its sandbox, else its id), so a sandbox with any live member stays.
pub fn live_keys(containers: &[ContainerInfo]) -> HashSet<String> {
    containers
        .iter()
        .filter(|c| is_live(c))
        .map(|c| c.sandbox.clone().unwrap_or_else(|| c.id.clone()))
        .collect()
}

/// The members with a live task, per sandbox (ordinary containers left out).
pub fn live_members(containers: &[ContainerInfo]) -> HashMap<String, HashSet<String>> {
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for c in containers.iter().filter(|c| is_live(c)) {
        if let Some(sandbox) = &c.sandbox {
            out.entry(sandbox.clone()).or_default().insert(c.id.clone());
        }
    }
    out
}

/// The keys volumes may be kept under: every container's id and sandbox.
pub fn known_keys(containers: &[ContainerInfo]) -> HashSet<String> {
    containers
        .iter()
        .flat_map(|c| std::iter::once(c.id.clone()).chain(c.sandbox.clone()))
        .collect()
}

/// containerd's filter for the container records of `sandbox`'s members
/// (as nerdctl writes them: the label's name quoted; a key is hex digits
/// and dashes, a value that needs no quoting).
pub fn members_filter(sandbox: &str) -> String {
    format!("labels.\"{LABEL_SANDBOX}\"=={sandbox}")
}

/// The host's sandboxes: per key, the members with a task (or a start
/// under way past its set-up) and a lock serialising what changes them.
#[derive(Default)]
pub struct Sandboxes {
    registry: std::sync::Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    /// A key's slot lives while it has members or someone holds it.
    slots: HashMap<String, Arc<tokio::sync::Mutex<Slot>>>,
    /// Member id -> its sandbox, for every member of a slot.
    sandbox_of: HashMap<String, String>,
}

#[derive(Default)]
struct Slot {
    members: HashSet<String>,
    /// Dropped from the registry (empty): whoever locks it next takes a
    /// fresh slot instead.
    retired: bool,
}

impl Sandboxes {
    /// The registry as a restart finds it ([`live_members`]).
    pub fn new(live: HashMap<String, HashSet<String>>) -> Self {
        let mut registry = Registry::default();
        for (key, members) in live {
            for id in &members {
                registry.sandbox_of.insert(id.clone(), key.clone());
            }
            let slot = Slot {
                members,
                retired: false,
            };
            registry
                .slots
                .insert(key, Arc::new(tokio::sync::Mutex::new(slot)));
        }
        Self {
            registry: std::sync::Mutex::new(registry),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().expect("sandbox registry lock")
    }

    /// The sandbox of `id` while it is a member with a task.
    pub fn sandbox_of(&self, id: &str) -> Option<String> {
        self.registry().sandbox_of.get(id).cloned()
    }

    /// Waits for sandbox `key`, then holds it: no other member sets it
    /// up, joins or leaves it until the [`Held`] is dropped.
    pub async fn lock(&self, key: &str) -> Held<'_> {
        loop {
            let slot = self
                .registry()
                .slots
                .entry(key.to_owned())
                .or_default()
                .clone();
            let guard = slot.clone().lock_owned().await;
            if !guard.retired {
                return Held {
                    sandboxes: self,
                    key: key.to_owned(),
                    slot,
                    guard,
                };
            }
        }
    }
}

/// A sandbox held (see [`Sandboxes::lock`]).
pub struct Held<'a> {
    sandboxes: &'a Sandboxes,
    key: String,
    slot: Arc<tokio::sync::Mutex<Slot>>,
    guard: tokio::sync::OwnedMutexGuard<Slot>,
}

impl Held<'_> {
    /// How member `id` starts ([`plan`]).
    pub fn plan(&self, id: &str) -> Plan {
        plan(&self.guard.members, id)
    }

    /// Member `id` has a task (or is about to).
    pub fn enter(&mut self, id: &str) {
        self.guard.members.insert(id.to_owned());
        self.sandboxes
            .registry()
            .sandbox_of
            .insert(id.to_owned(), self.key.clone());
    }

    /// Member `id` has no task any more (whether it was in or not):
    /// whether the sandbox's network goes now ([`tear_down_after`]).
    pub fn leave(&mut self, id: &str) -> bool {
        let last = tear_down_after(&self.guard.members, id);
        self.guard.members.remove(id);
        let mut registry = self.sandboxes.registry();
        if registry.sandbox_of.get(id) == Some(&self.key) {
            registry.sandbox_of.remove(id);
        }
        last
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.guard.members.is_empty() {
            // Anyone waiting on this slot finds it retired and takes the
            // registry's next one, so one key never has two.
            self.guard.retired = true;
            let mut registry = self.sandboxes.registry();
            if registry
                .slots
                .get(&self.key)
                .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
            {
                registry.slots.remove(&self.key);
            }
        }
    }
}

/// A start's part in its sandbox ([`ContainerdRuntime::enter_sandbox`]).
pub(super) struct Entry<'a> {
    /// Held while this start sets its sandbox up.
    held: Option<Held<'a>>,
    /// Another member's task holds the sandbox's network and volumes:
    /// this start uses them as they are.
    pub joined: bool,
    /// The sandbox's address, when joined.
    pub ip: Option<Ipv4Addr>,
}

impl Entry<'_> {
    /// The start set its sandbox up (its task is created): the member is
    /// in, the next ones join. Dropping the entry instead (a failed
    /// start) leaves the sandbox empty.
    pub fn set_up(mut self, id: &str) {
        if let Some(held) = self.held.as_mut() {
            held.enter(id);
        }
    }
}

impl ContainerdRuntime {
    /// Where a start of `run` stands with its sandbox. An ordinary
    /// container's network and volumes are its own: nothing is held. A
    /// member joins when another member has a task, and is in at once;
    /// else it holds the sandbox while it sets it up, so a member
    /// starting beside it waits, then joins (see [`Entry::set_up`]).
    pub(super) async fn enter_sandbox(&self, run: &RunSpec) -> Entry<'_> {
        let Some(sandbox) = &run.sandbox else {
            return Entry {
                held: None,
                joined: false,
                ip: None,
            };
        };
        let mut held = self.sandboxes.lock(sandbox).await;
        if held.plan(&run.id) == Plan::SetUp {
            // In from before a restart (its created task deleted since):
            // out until its set-up succeeds.
            held.leave(&run.id);
            return Entry {
                held: Some(held),
                joined: false,
                ip: None,
            };
        }
        held.enter(&run.id);
        drop(held);
        let net = match (&run.network, &self.net) {
            (NetworkSpec::Private(_), Some(net)) => Some(net),
            _ => None,
        };
        let ip = match net {
            Some(net) => net.ip(sandbox).await,
            None => None,
        };
        if net.is_some() && ip.is_none() {
            warn!(container_id = %run.id, sandbox, "joining a sandbox whose network is not attached");
        }
        Entry {
            held: None,
            joined: true,
            ip,
        }
    }

    /// Run `id` has no task any more: its network goes, unless it is a
    /// member of `sandbox` and another member still has a task. Holds the
    /// sandbox through the tear-down, so no member sets it up meanwhile.
    pub(super) async fn end_network(
        &self,
        id: &str,
        sandbox: Option<&str>,
    ) -> Result<(), RuntimeError> {
        let Some(sandbox) = sandbox else {
            return match &self.net {
                Some(net) => net.detach(id).await.map_err(net_err(id)),
                None => Ok(()),
            };
        };
        let mut held = self.sandboxes.lock(sandbox).await;
        let last = held.leave(id);
        match &self.net {
            Some(net) if last => net.detach(sandbox).await.map_err(net_err(id)),
            _ => Ok(()),
        }
    }

    /// [`Self::end_network`] for a failed start (logged, not returned: the
    /// start's own error is the one to report).
    pub(super) async fn end_network_logged(&self, id: &str, sandbox: Option<&str>) {
        if let Err(e) = self.end_network(id, sandbox).await {
            warn!(container_id = %id, error = %e, "tearing down the network of a failed start");
        }
    }

    /// The sandbox container `id` was created in (its label); None for an
    /// ordinary container or one already gone.
    pub(super) async fn sandbox_label(&self, id: &str) -> Result<Option<String>, RuntimeError> {
        match self
            .containers()
            .get(self.conn_req(GetContainerRequest { id: id.to_owned() }))
            .await
        {
            Ok(r) => Ok(r
                .into_inner()
                .container
                .and_then(|c| c.labels.get(LABEL_SANDBOX).cloned())
                .filter(|s| valid_key(s))),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(containerd_err("Containers.Get", id)(s)),
        }
    }

    /// Removes the volumes of `sandbox` once no container here is its
    /// member (the last one's record is gone). Held: a member setting the
    /// sandbox up prepares its volumes after this, never during it.
    pub(super) async fn remove_sandbox_volumes(&self, sandbox: &str) -> Result<(), RuntimeError> {
        let _held = self.sandboxes.lock(sandbox).await;
        let members = members_filter(sandbox);
        if self.list_containers_where(vec![members]).await?.is_empty() {
            volumes::remove(&self.spec_options.volumes_root, sandbox).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{TaskInfo, TaskStatus};
    use std::time::Duration;

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keys_are_plain_tokens() {
        for good in ["0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "ab", "AB-12"] {
            assert!(valid_key(good), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "-ab",
            "../etc",
            "a/b",
            "a b",
            "a.b",
            "g00d",
            "ab\n",
            long.as_str(),
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_member_joins_only_when_another_has_a_task() {
        let cases: &[(&[&str], &str, Plan)] = &[
            (&[], "a", Plan::SetUp),
            // Its own earlier run (a task created before a restart).
            (&["a"], "a", Plan::SetUp),
            (&["b"], "a", Plan::Join),
            (&["a", "b"], "a", Plan::Join),
        ];
        for (members, id, want) in cases {
            assert_eq!(plan(&set(members), id), *want, "{members:?} {id}");
        }
    }

    #[test]
    fn the_network_goes_with_the_last_task() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["a"], "a", true),
            // A member never in (its start failed before): still the last.
            (&[], "a", true),
            (&["a", "b"], "a", false),
            (&["b"], "a", false),
        ];
        for (members, id, want) in cases {
            assert_eq!(
                tear_down_after(&set(members), id),
                *want,
                "{members:?} {id}"
            );
        }
    }

    fn info(id: &str, sandbox: Option<&str>, status: Option<TaskStatus>) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            generation: 1,
            last_exit: None,
            task: status.map(|status| TaskInfo {
                pid: 1,
                status,
                exit_code: None,
                exited_at_unix_ms: None,
            }),
            sandbox: sandbox.map(Into::into),
        }
    }

    #[test]
    fn a_restart_keeps_the_sandboxes_with_a_live_member() {
        let containers = [
            info("plain", None, Some(TaskStatus::Running)),
            info("plain-stopped", None, Some(TaskStatus::Stopped)),
            info("s1-a", Some("s1"), Some(TaskStatus::Stopped)),
            info("s1-b", Some("s1"), Some(TaskStatus::Created)),
            info("s2-a", Some("s2"), None),
            info("s3-a", Some("s3"), Some(TaskStatus::Paused)),
            info("s3-b", Some("s3"), Some(TaskStatus::Running)),
        ];
        assert_eq!(live_keys(&containers), set(&["plain", "s1", "s3"]));
        assert_eq!(
            live_members(&containers),
            HashMap::from([
                ("s1".to_string(), set(&["s1-b"])),
                ("s3".to_string(), set(&["s3-a", "s3-b"])),
            ])
        );
        assert_eq!(
            known_keys(&containers),
            set(&[
                "plain",
                "plain-stopped",
                "s1-a",
                "s1-b",
                "s2-a",
                "s3-a",
                "s3-b",
                "s1",
                "s2",
                "s3"
            ])
        );
    }

    #[test]
    fn members_are_found_by_their_label() {
        assert_eq!(
            members_filter("0f1e2d3c-4b5a"),
            r#"labels."skiff.sandbox"==0f1e2d3c-4b5a"#
        );
    }

    #[tokio::test]
    async fn members_are_tracked_and_an_empty_sandbox_is_forgotten() {
        let sandboxes = Sandboxes::new(HashMap::from([("s1".to_string(), set(&["a"]))]));
        assert_eq!(sandboxes.sandbox_of("a").as_deref(), Some("s1"));
        {
            let mut held = sandboxes.lock("s1").await;
            assert_eq!(held.plan("b"), Plan::Join);
            held.enter("b");
        }
        assert_eq!(sandboxes.sandbox_of("b").as_deref(), Some("s1"));
        assert!(!sandboxes.lock("s1").await.leave("a"));
        assert!(sandboxes.lock("s1").await.leave("b"));
        assert_eq!(sandboxes.sandbox_of("b"), None);
        assert!(sandboxes.registry().slots.is_empty());
        assert_eq!(sandboxes.lock("s1").await.plan("a"), Plan::SetUp);
        assert!(sandboxes.registry().slots.is_empty());
    }

    /// Two members starting at once: the second waits for the first's
    /// set-up and joins it, even when the sandbox was empty (its slot
    /// retired and made anew) while it waited.
    #[tokio::test]
    async fn one_member_sets_up_while_the_others_wait() {
        let sandboxes = Arc::new(Sandboxes::default());
        let first = sandboxes.lock("s1").await;
        assert_eq!(first.plan("a"), Plan::SetUp);
        let waiting = {
            let sandboxes = sandboxes.clone();
            tokio::spawn(async move { sandboxes.lock("s1").await.plan("b") })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the second member waits");
        // The first set-up failed: it leaves nobody in (the slot retires).
        drop(first);
        assert_eq!(waiting.await.unwrap(), Plan::SetUp);

        let mut first = sandboxes.lock("s1").await;
        let waiting = {
            let sandboxes = sandboxes.clone();
            tokio::spawn(async move { sandboxes.lock("s1").await.plan("b") })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.enter("a");
        drop(first);
        assert_eq!(waiting.await.unwrap(), Plan::Join);
    }
}
