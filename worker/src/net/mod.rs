//! Private networks for containers (`network: private`): a named network
//! namespace per run, an address on the worker's bridge from Debian's CNI
//! plugins (bridge + host-local, tuning, portmap), published ports held
//! against other processes, the worker's nftables tables keeping tenants
//! and groups apart, and generated /etc/hosts and /etc/hostname.
//!
//! Everything here is per key: a run's container id, or, for the members
//! of a sandbox (a container group: its members share one namespace, so
//! they reach each other on localhost and have one address, the group's
//! published ports and one hosts file), the sandbox's id. The namespace,
//! the state file, the port claims and the nft membership are the key's;
//! which runs use a key, and when it is set up and torn down, is the
//! runtime's business ([`crate::runtime::sandbox`]), not this module's.
//!
//! Set-up per run, CRI-style (the address is known before the process
//! starts and the namespace is named, so a restarted worker finds it):
//! claim ports -> `ip netns add` -> loopback ADD -> conflist ADD -> state
//! file -> nft elements -> hosts files. Tear-down reverses it: nft -> DEL
//! (with the saved result and mappings, which portmap and firewall need)
//! -> `ip netns del` -> state file -> ports. Everything lives in the kernel
//! or under /run, so it survives a worker restart and a reboot resets it
//! all together; [`Network::restore`] re-adopts what belongs to live tasks
//! and tears down the rest.
//!
//! Layout: [`cni`] (calling plugins), [`nft`] (the rules, as pure
//! functions), [`ports`] (holding host ports), `restore` (re-adopting at
//! start, tearing everything down).

pub mod cni;
pub mod nft;
pub mod ports;
mod restore;

use cni::{Invocation, NetworkList, Plugins, PortMapping};
use ipnet::Ipv4Net;
use ports::{PortError, Ports, Protocol};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{debug, warn};

/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// The worker's network settings.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The bridge containers attach to (at most 15 characters); it also
    /// names the CNI network, the nft tables and the namespaces, so two
    /// workers on one machine need two bridges.
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// Where the CNI plugins are (Debian: /usr/lib/cni).
    pub plugin_dir: PathBuf,
    /// State files, host-local's leases, hosts files: under /run, so a
    /// reboot resets them with the namespaces and rules.
    pub run_dir: PathBuf,
    /// Published ports answer on this host address.
    pub host_ip: IpAddr,
    /// The range the control plane assigns host ports from (inclusive).
    pub port_range: (u16, u16),
    /// Outbound NAT to the host's uplink (public addresses only).
    pub egress_nat: bool,
    /// How long a new run waits for a host port a finished run of ours is
    /// still releasing.
    pub port_wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Cni(#[from] cni::CniError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("the bridge plugin's result names no address: {0}")]
    NoAddress(String),
    #[error("network settings: {0}")]
    Config(String),
}

/// A published port of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Published {
    pub container_port: u16,
    pub protocol: Protocol,
    pub host_port: u16,
}

/// What a run's private network asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The group key (tenant and group, hashed by the control plane);
    /// None: the container reaches no other container.
    pub group: Option<String>,
    pub ports: Vec<Published>,
}

/// A run's network as set up, saved as `<run_dir>/state/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Attachment {
    ip: Ipv4Addr,
    veth: String,
    group: Option<String>,
    mappings: Vec<PortMapping>,
    /// The conflist's ADD result: DEL needs it as prevResult.
    result: Value,
}

impl Attachment {
    fn member(&self) -> nft::Member {
        nft::Member {
            ip: self.ip,
            veth: self.veth.clone(),
            group: self.group.clone(),
        }
    }

    fn claims(&self) -> Vec<(u16, Protocol)> {
        self.mappings
            .iter()
            .map(|m| {
                let proto = if m.protocol == "udp" {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                };
                (m.host_port, proto)
            })
            .collect()
    }
}

/// The worker's container network.
pub struct Network {
    cfg: NetworkConfig,
    plugins: Plugins,
    tables: nft::Tables,
    ports: Ports,
    /// Runs attached now (id -> attachment); the nft lock too: every rule
    /// change happens under it, so members and rules never disagree.
    attached: tokio::sync::Mutex<HashMap<String, Attachment>>,
}

impl Network {
    /// Checks the settings and that the plugins and tools are there.
    pub fn new(cfg: NetworkConfig) -> Result<Self, NetError> {
        if cfg.bridge.is_empty() || cfg.bridge.len() > 15 {
            return Err(NetError::Config(format!(
                "bridge name {:?} must be 1 to 15 characters",
                cfg.bridge
            )));
        }
        if cfg.port_range.0 == 0 || cfg.port_range.0 > cfg.port_range.1 {
            return Err(NetError::Config(format!(
                "port range {}-{} is empty",
                cfg.port_range.0, cfg.port_range.1
            )));
        }
        if cfg.subnet.prefix_len() > 30 {
            return Err(NetError::Config(format!(
                "subnet {} has room for no container",
                cfg.subnet
            )));
        }
        for plugin in ["bridge", "host-local", "loopback", "tuning", "portmap"] {
            if !cfg.plugin_dir.join(plugin).is_file() {
                return Err(NetError::Config(format!(
                    "CNI plugin {plugin} not found in {} (apt-get install containernetworking-plugins)",
                    cfg.plugin_dir.display()
                )));
            }
        }
        Ok(Self {
            plugins: Plugins {
                dir: cfg.plugin_dir.clone(),
            },
            tables: nft::Tables {
                bridge: cfg.bridge.clone(),
                egress: cfg.egress_nat,
            },
            ports: Ports::new(cfg.host_ip),
            attached: tokio::sync::Mutex::new(HashMap::new()),
            cfg,
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// The network namespace of key `id` (a run's, or its sandbox's): its
    /// path goes into the OCI spec.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(self.netns_name(id))
    }

    fn netns_name(&self, id: &str) -> String {
        format!("{}-{id}", self.cfg.bridge)
    }

    /// The generated `hosts` and `hostname` files bound into the container.
    pub fn hosts_files(&self, id: &str) -> (PathBuf, PathBuf) {
        let dir = self.cfg.run_dir.join("files").join(id);
        (dir.join("hosts"), dir.join("hostname"))
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.cfg.run_dir.join("state").join(format!("{id}.json"))
    }

    /// The address of key `id` (a run's, or its sandbox's), while attached.
    pub async fn ip(&self, id: &str) -> Option<Ipv4Addr> {
        self.attached.lock().await.get(id).map(|a| a.ip)
    }

    fn conflist(&self, with_ports: bool) -> NetworkList {
        let mut plugins = vec![
            json!({
                "type": "bridge",
                "bridge": self.cfg.bridge,
                "isGateway": true,
                "ipMasq": self.cfg.egress_nat,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": self.cfg.subnet.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": self.cfg.run_dir.join("ipam"),
                },
            }),
            // IPv6 link-local would pass the IPv4 rules; the bridge table
            // drops it too, this keeps eth0 from having one at all.
            json!({ "type": "tuning", "sysctl": { "net.ipv6.conf.eth0.disable_ipv6": "1" } }),
        ];
        if with_ports {
            plugins.push(json!({
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true,
            }));
        }
        NetworkList {
            name: format!("skiff-{}", self.cfg.bridge),
            plugins,
        }
    }

    fn loopback() -> NetworkList {
        NetworkList {
            name: "skiff-lo".into(),
            plugins: vec![json!({ "type": "loopback" })],
        }
    }

    /// Sets up run `id`'s network: returns the container's address.
    /// [`Network::prepare`] then [`Network::connect`].
    pub async fn attach(
        &self,
        id: &str,
        hostname: &str,
        req: &Request,
    ) -> Result<Ipv4Addr, NetError> {
        self.prepare(id, hostname, req).await?;
        self.connect(id, hostname, req).await
    }

    /// The part a task can be created against: claims the host ports,
    /// creates the named namespace and the hosts files (without the
    /// address yet). The task's creation may then run beside
    /// [`Network::connect`], as `ctr run --cni` does: interfaces added
    /// to a namespace runc has joined show up in it before its process
    /// starts. On failure nothing is left.
    pub async fn prepare(&self, id: &str, hostname: &str, req: &Request) -> Result<(), NetError> {
        // A run that died without its tear-down (worker crash): clean first,
        // host-local refuses a second lease for the same id.
        self.detach(id).await?;
        let claims: Vec<(u16, Protocol)> = req
            .ports
            .iter()
            .map(|p| (p.host_port, p.protocol))
            .collect();
        self.ports.claim(id, &claims, self.cfg.port_wait).await?;
        let prepared = async {
            let (hosts, hostname_file) = self.hosts_files(id);
            create_dir(hosts.parent().expect("files have a dir")).await?;
            write_file(&hosts, hosts_file(None, hostname).as_bytes()).await?;
            write_file(&hostname_file, format!("{hostname}\n").as_bytes()).await?;
            run("ip", &["netns", "add", &self.netns_name(id)]).await
        };
        if let Err(e) = prepared.await {
            self.fail(id).await;
            return Err(e);
        }
        Ok(())
    }

    /// Attaches the prepared namespace to the bridge: the container's
    /// address. On failure everything of the run is torn down.
    pub async fn connect(
        &self,
        id: &str,
        hostname: &str,
        req: &Request,
    ) -> Result<Ipv4Addr, NetError> {
        match self.attach_claimed(id, hostname, req).await {
            Ok(ip) => Ok(ip),
            Err(e) => {
                self.fail(id).await;
                Err(e)
            }
        }
    }

    async fn fail(&self, id: &str) {
        if let Err(cleanup) = self.detach(id).await {
            warn!(container = %id, error = %cleanup, "cleaning up a failed network set-up");
        }
        self.ports.release(id);
    }

    async fn attach_claimed(
        &self,
        id: &str,
        hostname: &str,
        req: &Request,
    ) -> Result<Ipv4Addr, NetError> {
        let host_ip = match self.cfg.host_ip {
            ip if ip.is_unspecified() => String::new(),
            ip => ip.to_string(),
        };
        let mappings: Vec<PortMapping> = req
            .ports
            .iter()
            .map(|p| PortMapping {
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: p.protocol.as_str().to_owned(),
                host_ip: host_ip.clone(),
            })
            .collect();
        let netns = self.netns_path(id);
        let lo = Invocation {
            container_id: id,
            netns: &netns,
            ifname: "lo",
            port_mappings: &[],
        };
        let inv = Invocation {
            container_id: id,
            netns: &netns,
            ifname: "eth0",
            port_mappings: &mappings,
        };
        let list = self.conflist(!mappings.is_empty());
        // Two interfaces of one namespace: the plugins run side by side.
        let loopback = Self::loopback();
        let (lo_added, added) = tokio::join!(
            self.plugins.add(&loopback, &lo),
            self.plugins.add(&list, &inv)
        );
        let added = added.and_then(|r| lo_added.map(|_| r));
        let result = match added {
            Ok(r) => r,
            Err(e) => {
                // host-local may hold a lease, portmap rules: DEL what ADD did.
                let _ = self.plugins.del(&list, &inv, None).await;
                return Err(e.into());
            }
        };
        let Some(at) = cni::attached(&result, &self.cfg.bridge) else {
            let _ = self.plugins.del(&list, &inv, Some(&result)).await;
            return Err(NetError::NoAddress(result.to_string()));
        };
        let attachment = Attachment {
            ip: at.ip,
            veth: at.host_veth,
            group: req.group.clone(),
            mappings,
            result,
        };
        let state = self.state_path(id);
        create_dir(state.parent().expect("state has a dir")).await?;
        write_file(
            &state,
            &serde_json::to_vec(&attachment).expect("serializes"),
        )
        .await?;
        // In place (the same inode): the file may be bound into a
        // created task already.
        let (hosts, _) = self.hosts_files(id);
        write_file(&hosts, hosts_file(Some(at.ip), hostname).as_bytes()).await?;
        {
            let mut attached = self.attached.lock().await;
            let mut script = String::new();
            if let Some(g) = &attachment.group {
                if !attached.values().any(|a| a.group.as_ref() == Some(g)) {
                    script.push_str(&self.tables.group_add(g));
                }
            }
            script.push_str(&self.tables.member_add(&attachment.member()));
            nft::apply(&script).await?;
            attached.insert(id.to_owned(), attachment);
        }
        debug!(container = %id, ip = %at.ip, "network attached");
        Ok(at.ip)
    }

    /// Tears run `id`'s network down; nothing to do is not an error.
    pub async fn detach(&self, id: &str) -> Result<(), NetError> {
        let saved = {
            let mut attached = self.attached.lock().await;
            match attached.remove(id) {
                Some(a) => {
                    let mut script = self.tables.member_delete(&a.member());
                    if let Some(g) = &a.group {
                        if !attached.values().any(|o| o.group.as_ref() == Some(g)) {
                            script.push_str(&self.tables.group_delete(g));
                        }
                    }
                    if let Err(e) = nft::apply(&script).await {
                        // An element already gone fails the whole script
                        // (nft 1.0.6 has no `destroy`): reload everything.
                        warn!(container = %id, error = %e, "removing rules failed; reloading the tables");
                        let members: Vec<nft::Member> =
                            attached.values().map(Attachment::member).collect();
                        nft::apply(&self.tables.full(&members)).await?;
                    }
                    Some(a)
                }
                None => tokio::fs::read(self.state_path(id))
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok()),
            }
        };
        self.release(id, saved).await
    }

    /// DEL, namespace, files, ports: for a run whose rules are gone.
    async fn release(&self, id: &str, saved: Option<Attachment>) -> Result<(), NetError> {
        let netns = self.netns_path(id);
        let netns_exists = tokio::fs::try_exists(&netns).await.unwrap_or(false);
        let state = self.state_path(id);
        if saved.is_none() && !netns_exists && !tokio::fs::try_exists(&state).await.unwrap_or(false)
        {
            self.ports.release(id);
            return Ok(());
        }
        // portmap removes nothing without mappings; any will do (it goes
        // by chain name), so a lost state still gets a dummy one.
        let mappings = saved
            .as_ref()
            .map(|a| a.mappings.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                vec![PortMapping {
                    host_port: 1,
                    container_port: 1,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                }]
            });
        let inv = Invocation {
            container_id: id,
            netns: &netns,
            ifname: "eth0",
            port_mappings: &mappings,
        };
        // Without a state, portmap may have run: DEL it too.
        let with_ports = saved.as_ref().is_none_or(|a| !a.mappings.is_empty());
        self.plugins
            .del(
                &self.conflist(with_ports),
                &inv,
                saved.as_ref().map(|a| &a.result),
            )
            .await?;
        if netns_exists {
            run("ip", &["netns", "del", &self.netns_name(id)]).await?;
        }
        remove_file(&state).await?;
        let (hosts, _) = self.hosts_files(id);
        if let Some(dir) = hosts.parent() {
            match tokio::fs::remove_dir_all(dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(NetError::Io {
                        op: format!("removing {}", dir.display()),
                        source,
                    })
                }
            }
        }
        self.ports.release(id);
        debug!(container = %id, "network detached");
        Ok(())
    }

    /// Host ports held now: (port, protocol, container).
    pub fn held_ports(&self) -> Vec<(u16, Protocol, String)> {
        self.ports.held()
    }
}

/// `/etc/hosts` of a container named `hostname` at `ip` (None: not known
/// yet, the name is left out).
pub fn hosts_file(ip: Option<Ipv4Addr>, hostname: &str) -> String {
    let own = ip
        .map(|ip| format!("{ip}\t{hostname}\n"))
        .unwrap_or_default();
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}")
}

async fn run(program: &str, args: &[&str]) -> Result<(), NetError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| NetError::Io {
            op: format!("running {program}"),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn io(op: &str) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io {
        op: op.to_owned(),
        source,
    }
}

async fn create_dir(dir: &Path) -> Result<(), NetError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| NetError::Io {
            op: format!("creating {}", dir.display()),
            source,
        })
}

async fn write_file(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    tokio::fs::write(path, bytes)
        .await
        .map_err(|source| NetError::Io {
            op: format!("writing {}", path.display()),
            source,
        })
}

async fn remove_file(path: &Path) -> Result<(), NetError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetError::Io {
            op: format!("removing {}", path.display()),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_names_the_container() {
        assert_eq!(
            hosts_file(Some("10.1.0.2".parse().unwrap()), "web-1"),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.1.0.2\tweb-1\n"
        );
    }
}
