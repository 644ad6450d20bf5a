//! Network namespaces of a partitioned pool: one for an API replica, one for
//! a host's worker, joined by a veth pair (faults.md's recipe; traffic stays
//! on that pair, both of whose ends are the test's own). The test cuts and
//! heals the link by setting the replica's end down and up.
//!
//! Layout:
//! - [`Partition`]: create the namespaces and the pair, cut or heal the link.

use anyhow::{bail, Result};

/// The /30 inside the namespaces: the replica's end and the worker's end.
pub const API_IP: &str = "10.231.7.1";
pub const HOST_IP: &str = "10.231.7.2";

/// The network namespaces of a partitioned pool.
pub struct Partition {
    /// Where the last API replica runs.
    pub api_netns: String,
    /// Where the last host's worker runs.
    pub host_netns: String,
    /// The veth end inside `api_netns` (set down to cut the link).
    pub api_veth: String,
    pub host_veth: String,
}

impl Partition {
    pub(crate) async fn create(&self) -> Result<()> {
        let (a, b, va, vb) = (
            &self.api_netns,
            &self.host_netns,
            &self.api_veth,
            &self.host_veth,
        );
        let script = format!(
            "set -e; ip netns add {a}; ip netns add {b}; \
             ip link add {va} type veth peer name {vb}; \
             ip link set {va} netns {a}; ip link set {vb} netns {b}; \
             ip -n {a} addr add {API_IP}/30 dev {va}; ip -n {a} link set {va} up; ip -n {a} link set lo up; \
             ip -n {b} addr add {HOST_IP}/30 dev {vb}; ip -n {b} link set {vb} up; ip -n {b} link set lo up"
        );
        let output = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .await?;
        if !output.status.success() {
            bail!(
                "creating the network namespaces: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Cuts (`false`) or heals (`true`) the link: the veth end on the API
    /// replica's side goes down or up.
    pub async fn set_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        let output = tokio::process::Command::new("ip")
            .args(["-n", &self.api_netns, "link", "set", &self.api_veth, state])
            .output()
            .await
            .expect("ip link set");
        assert!(
            output.status.success(),
            "ip link set {} {state}: {}",
            self.api_veth,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
