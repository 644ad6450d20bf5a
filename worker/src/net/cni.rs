//! Calling CNI plugins (Debian's `containernetworking-plugins`) the way
//! libcni does: one exec per plugin with the configuration on stdin and the
//! `CNI_*` environment, `prevResult` chained from plugin to plugin on ADD,
//! and DEL in reverse order with the saved ADD result (the firewall and
//! portmap plugins remove nothing without it).
//!
//! No crate does the calling side well (the Rust CNI crates are for writing
//! plugins, or are hard-wired to /opt/cni/bin); the protocol is small. See
//! worker/docs/networking-research.md for what was verified against these
//! plugins.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// CNI spec version the configurations speak (plugins 1.1.1 speak up to it).
pub const CNI_VERSION: &str = "1.0.0";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("running CNI plugin {plugin}: {source}")]
    Exec {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}{details}")]
    Plugin {
        plugin: String,
        command: &'static str,
        code: i64,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} answered something that is not a result: {message}")]
    Result { plugin: String, message: String },
}

/// One port published through the `portmap` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    #[serde(rename = "hostIP")]
    pub host_ip: String,
}

/// A network configuration list: plugins run in order.
#[derive(Debug, Clone)]
pub struct NetworkList {
    pub name: String,
    pub plugins: Vec<Value>,
}

/// What one invocation is about.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub container_id: &'a str,
    /// The network namespace's path (may be gone on DEL).
    pub netns: &'a Path,
    pub ifname: &'a str,
    /// Runtime capabilities offered to plugins that declare them.
    pub port_mappings: &'a [PortMapping],
}

/// Where the plugins are.
#[derive(Debug, Clone)]
pub struct Plugins {
    pub dir: PathBuf,
}

impl Plugins {
    /// Runs the list's plugins in order; the last plugin's result.
    pub async fn add(&self, list: &NetworkList, inv: &Invocation<'_>) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let conf = plugin_conf(list, plugin, prev.as_ref(), inv);
            let out = self.exec("ADD", &conf, inv).await?;
            let result: Value = serde_json::from_slice(&out).map_err(|e| CniError::Result {
                plugin: plugin_type(plugin),
                message: e.to_string(),
            })?;
            prev = Some(result);
        }
        Ok(prev.unwrap_or_else(|| json!({ "cniVersion": CNI_VERSION })))
    }

    /// Runs the list's plugins in reverse order with `result` (the saved
    /// ADD result) as every plugin's prevResult. Every plugin runs even when
    /// one fails; the first failure is returned.
    pub async fn del(
        &self,
        list: &NetworkList,
        inv: &Invocation<'_>,
        result: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first_err = None;
        for plugin in list.plugins.iter().rev() {
            let conf = plugin_conf(list, plugin, result, inv);
            if let Err(e) = self.exec("DEL", &conf, inv).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn exec(
        &self,
        command: &'static str,
        conf: &Value,
        inv: &Invocation<'_>,
    ) -> Result<Vec<u8>, CniError> {
        let plugin = plugin_type(conf);
        let exec_err = |source| CniError::Exec {
            plugin: plugin.clone(),
            source,
        };
        let mut child = tokio::process::Command::new(self.dir.join(&plugin))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", inv.container_id)
            .env("CNI_NETNS", inv.netns)
            .env("CNI_IFNAME", inv.ifname)
            .env("CNI_PATH", &self.dir)
            // The plugins exec iptables and friends.
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(exec_err)?;
        let input = serde_json::to_vec(conf).expect("JSON serializes");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(&input).await.map_err(exec_err)?;
        drop(stdin);
        let out = child.wait_with_output().await.map_err(exec_err)?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let (code, msg, details) = match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(e) => (
                e["code"].as_i64().unwrap_or(-1),
                e["msg"].as_str().unwrap_or("").to_owned(),
                e["details"]
                    .as_str()
                    .filter(|d| !d.is_empty())
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default(),
            ),
            Err(_) => (
                -1,
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                String::new(),
            ),
        };
        Err(CniError::Plugin {
            plugin,
            command,
            code,
            msg,
            details,
        })
    }
}

fn plugin_type(conf: &Value) -> String {
    conf["type"].as_str().unwrap_or("?").to_owned()
}

/// One plugin's stdin: its own keys, the list's name and version, the
/// previous result and the runtime capabilities it declares.
pub fn plugin_conf(
    list: &NetworkList,
    plugin: &Value,
    prev: Option<&Value>,
    inv: &Invocation<'_>,
) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = json!(list.name);
    conf["cniVersion"] = json!(CNI_VERSION);
    if plugin["capabilities"]["portMappings"] == json!(true) {
        conf["runtimeConfig"] = json!({ "portMappings": inv.port_mappings });
    }
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}

/// The container's address and host-side interface from an ADD result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub ip: std::net::Ipv4Addr,
    /// The veth end on the host (the bridge port).
    pub host_veth: String,
}

/// Reads the container's IPv4 address and the host veth from a
/// bridge-plugin result: `ips[0]` and the interface without a sandbox
/// that is not the bridge.
pub fn attached(result: &Value, bridge: &str) -> Option<Attached> {
    let ip = result["ips"]
        .as_array()?
        .iter()
        .filter_map(|i| i["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .next()?;
    let host_veth = result["interfaces"]
        .as_array()?
        .iter()
        .filter(|i| i.get("sandbox").is_none_or(|s| s.as_str() == Some("")))
        .filter_map(|i| i["name"].as_str())
        .find(|name| *name != bridge)?
        .to_owned();
    Some(Attached { ip, host_veth })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv<'a>(ports: &'a [PortMapping]) -> Invocation<'a> {
        Invocation {
            container_id: "c1",
            netns: Path::new("/run/netns/x"),
            ifname: "eth0",
            port_mappings: ports,
        }
    }

    #[test]
    fn plugin_conf_injects_name_version_prev_and_capabilities() {
        let list = NetworkList {
            name: "skiff-br".into(),
            plugins: vec![],
        };
        let ports = [PortMapping {
            host_port: 20000,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: "127.0.0.1".into(),
        }];
        let prev = json!({"ips": []});
        let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let c = plugin_conf(&list, &portmap, Some(&prev), &inv(&ports));
        assert_eq!(c["name"], "skiff-br");
        assert_eq!(c["cniVersion"], CNI_VERSION);
        assert_eq!(c["prevResult"], prev);
        assert_eq!(
            c["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 20000, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}])
        );
        // A plugin that declares no capability gets none.
        let bridge = json!({"type": "bridge"});
        let c = plugin_conf(&list, &bridge, None, &inv(&ports));
        assert!(c.get("runtimeConfig").is_none());
        assert!(c.get("prevResult").is_none());
    }

    #[test]
    fn attached_reads_the_bridge_result() {
        // Verbatim from the bridge plugin 1.1.1 (research notes).
        let result = json!({"cniVersion":"1.0.0",
            "interfaces":[{"name":"skr0","mac":"2a:5b:5a:15:87:d4"},
                          {"name":"veth4eafc109","mac":"3a:df:d3:34:6d:4d"},
                          {"name":"eth0","mac":"b6:d0:00:e1:6b:b6","sandbox":"/run/netns/a"}],
            "ips":[{"interface":2,"address":"10.213.0.2/24","gateway":"10.213.0.1"}],
            "routes":[{"dst":"0.0.0.0/0"}],"dns":{}});
        assert_eq!(
            attached(&result, "skr0"),
            Some(Attached {
                ip: "10.213.0.2".parse().unwrap(),
                host_veth: "veth4eafc109".into()
            })
        );
        assert_eq!(attached(&json!({"ips": []}), "skr0"), None);
    }
}
