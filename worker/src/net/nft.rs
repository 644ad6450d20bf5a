//! The worker's firewall: two nftables tables of its own, named after its
//! bridge, written as `nft -f` scripts by pure functions and loaded
//! atomically (one script is one transaction).
//!
//! - `bridge skiff_<br>`: east-west traffic between containers, per bridge
//!   port: a port may only send from its own address (no spoofing), ARP
//!   passes, IPv4 goes to its group's chain (destination in the group:
//!   accept), everything else (another tenant, no group, IPv6 including
//!   link-local) is dropped. Works with or without br_netfilter.
//! - `inet skiff_<br>`: the routed side: containers reach the host (agent
//!   port, sshd, 127/8 through `route_localnet`) never; published ports
//!   (DNAT) and replies pass; traffic leaving the bridge is refused unless
//!   the operator turned outbound NAT on (then only to public addresses);
//!   a published port hairpinned through the gateway follows the group rule.
//!
//! A container without a group has no group chain: its source misses the
//! verdict map and falls to the drop. Per container only set elements
//! change. Verified rule by rule in worker/docs/networking-research.md §2.4.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Networks a container never reaches even with outbound NAT on: private,
/// shared, link-local (cloud metadata), loopback and multicast ranges.
const NON_PUBLIC: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, \
     172.16.0.0/12, 192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, 224.0.0.0/3";

/// One container's place in the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub ip: Ipv4Addr,
    /// Its bridge port (host-side veth).
    pub veth: String,
    /// Its group's key (from the control plane), None: reaches no one.
    pub group: Option<String>,
}

/// The tables' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    /// The bridge the containers are on.
    pub bridge: String,
    /// Outbound NAT is on: containers may reach public addresses.
    pub egress: bool,
}

impl Tables {
    /// `skiff_<bridge>` with anything but letters, digits and `_` made `_`.
    pub fn name(&self) -> String {
        let safe: String = self
            .bridge
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("skiff_{safe}")
    }

    /// Both tables from scratch, with `members` in them: replaces whatever
    /// tables of that name exist, in one transaction.
    pub fn full(&self, members: &[Member]) -> String {
        let t = self.name();
        let br = &self.bridge;
        let egress = if self.egress {
            format!("iifname \"{br}\" ip daddr != {{ {NON_PUBLIC} }} accept\n    ")
        } else {
            String::new()
        };
        let mut s = format!(
            "table bridge {t}\ndelete table bridge {t}\n\
table bridge {t} {{
  set ports {{ type ifname; }}
  set port_ip {{ type ifname . ipv4_addr; }}
  map src_group {{ type ipv4_addr : verdict; }}
  chain forward {{
    type filter hook forward priority 100; policy accept;
    iifname @ports jump from_container
  }}
  chain from_container {{
    ether type arp accept
    ether type ip iifname . ip saddr != @port_ip drop
    ether type ip ip saddr vmap @src_group
    drop
  }}
}}
table inet {t}\ndelete table inet {t}\n\
table inet {t} {{
  map src_group {{ type ipv4_addr : verdict; }}
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname \"{br}\" oifname \"{br}\" ip saddr vmap @src_group
    iifname \"{br}\" oifname \"{br}\" reject with icmpx admin-prohibited
    oifname \"{br}\" ct status dnat accept
    oifname \"{br}\" ct state established,related accept
    oifname \"{br}\" drop
    iifname \"{br}\" ct state established,related accept
    {egress}iifname \"{br}\" reject with icmpx admin-prohibited
  }}
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    iifname \"{br}\" ct state established,related accept
    iifname \"{br}\" reject with icmpx admin-prohibited
  }}
}}
"
        );
        let mut groups: BTreeMap<&str, ()> = BTreeMap::new();
        for m in members {
            if let Some(g) = &m.group {
                groups.insert(g, ());
            }
        }
        for g in groups.keys() {
            s.push_str(&self.group_add(g));
        }
        for m in members {
            s.push_str(&self.member_add(m));
        }
        s
    }

    /// Creates (or rewrites) a group's sets and chains; idempotent.
    pub fn group_add(&self, group: &str) -> String {
        let t = self.name();
        let g = chain_name(group);
        let mut s = String::new();
        for (family, refuse) in [
            ("bridge", "drop"),
            ("inet", "reject with icmpx admin-prohibited"),
        ] {
            s.push_str(&format!(
                "add set {family} {t} {g} {{ type ipv4_addr; }}\n\
                 add chain {family} {t} {g}\n\
                 flush chain {family} {t} {g}\n\
                 add rule {family} {t} {g} ip daddr @{g} accept\n\
                 add rule {family} {t} {g} {refuse}\n"
            ));
        }
        s
    }

    /// Removes a group nobody is in any more.
    pub fn group_delete(&self, group: &str) -> String {
        let t = self.name();
        let g = chain_name(group);
        ["bridge", "inet"]
            .iter()
            .map(|family| {
                format!(
                    "flush chain {family} {t} {g}\ndelete chain {family} {t} {g}\n\
                     delete set {family} {t} {g}\n"
                )
            })
            .collect()
    }

    /// A container's elements (its group must exist).
    pub fn member_add(&self, m: &Member) -> String {
        self.member_elements("add", m)
    }

    /// Removes a container's elements (they must exist: nft 1.0.6 has no
    /// `destroy`; a failed removal is repaired by a full reload).
    pub fn member_delete(&self, m: &Member) -> String {
        self.member_elements("delete", m)
    }

    fn member_elements(&self, verb: &str, m: &Member) -> String {
        let t = self.name();
        let (veth, ip) = (&m.veth, m.ip);
        let mut s = format!(
            "{verb} element bridge {t} ports {{ \"{veth}\" }}\n\
             {verb} element bridge {t} port_ip {{ \"{veth}\" . {ip} }}\n"
        );
        if let Some(group) = &m.group {
            let g = chain_name(group);
            for family in ["bridge", "inet"] {
                let target = if verb == "add" {
                    format!("{ip} : jump {g}")
                } else {
                    ip.to_string()
                };
                s.push_str(&format!(
                    "{verb} element {family} {t} {g} {{ {ip} }}\n\
                     {verb} element {family} {t} src_group {{ {target} }}\n"
                ));
            }
        }
        s
    }

    /// Removes both tables (the worker's network is switched off).
    pub fn delete_all(&self) -> String {
        let t = self.name();
        format!(
            "table bridge {t}\ndelete table bridge {t}\ntable inet {t}\ndelete table inet {t}\n"
        )
    }
}

/// A group's set and chain name: `g_` and the key's letters and digits
/// (the control plane sends a hex hash).
fn chain_name(group: &str) -> String {
    let safe: String = group
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect();
    format!("g_{safe}")
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft: {0}")]
    Exec(#[source] std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// Loads `script` with `nft -f -`: all of it or nothing.
pub async fn apply(script: &str) -> Result<(), NftError> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(NftError::Exec)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(script.as_bytes())
        .await
        .map_err(NftError::Exec)?;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(NftError::Exec)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(egress: bool) -> Tables {
        Tables {
            bridge: "sk-e2e0".into(),
            egress,
        }
    }

    fn member(ip: &str, veth: &str, group: Option<&str>) -> Member {
        Member {
            ip: ip.parse().unwrap(),
            veth: veth.into(),
            group: group.map(str::to_owned),
        }
    }

    #[test]
    fn table_name_is_an_nft_identifier() {
        assert_eq!(tables(false).name(), "skiff_sk_e2e0");
    }

    #[test]
    fn full_ruleset_carries_groups_once_and_every_member() {
        let s = tables(false).full(&[
            member("10.1.0.2", "veth1", Some("abc")),
            member("10.1.0.3", "veth2", Some("abc")),
            member("10.1.0.4", "veth3", None),
        ]);
        // Replaces the old tables in the same transaction.
        assert!(s.starts_with("table bridge skiff_sk_e2e0\ndelete table bridge skiff_sk_e2e0\n"));
        assert_eq!(
            s.matches("add chain bridge skiff_sk_e2e0 g_abc\n").count(),
            1
        );
        assert_eq!(s.matches("add chain inet skiff_sk_e2e0 g_abc\n").count(), 1);
        assert!(s.contains("add element bridge skiff_sk_e2e0 src_group { 10.1.0.3 : jump g_abc }"));
        // The ungrouped member: anti-spoofing only, no verdict (it falls to drop).
        assert!(s.contains("add element bridge skiff_sk_e2e0 port_ip { \"veth3\" . 10.1.0.4 }"));
        assert!(!s.contains("10.1.0.4 : jump"));
        // Egress off: nothing leaves the bridge but replies.
        assert!(!s.contains("ip daddr != {"));
        assert!(s.contains("iifname \"sk-e2e0\" reject with icmpx admin-prohibited"));
    }

    #[test]
    fn egress_on_reaches_public_addresses_only() {
        let s = tables(true).full(&[]);
        let accept = s
            .find("ip daddr != { 0.0.0.0/8, 10.0.0.0/8")
            .expect("egress rule");
        let drop = s
            .find("    iifname \"sk-e2e0\" reject")
            .expect("final reject");
        assert!(accept < drop);
        assert!(
            s.contains("169.254.0.0/16"),
            "metadata addresses stay closed"
        );
    }

    #[test]
    fn member_add_and_delete_are_symmetric() {
        let t = tables(false);
        let m = member("10.1.0.2", "veth1", Some("abc"));
        let add = t.member_add(&m);
        let del = t.member_delete(&m);
        assert_eq!(add.lines().count(), del.lines().count());
        assert!(del.contains("delete element inet skiff_sk_e2e0 src_group { 10.1.0.2 }"));
        assert!(add.contains("add element inet skiff_sk_e2e0 src_group { 10.1.0.2 : jump g_abc }"));
        let solo = member("10.1.0.9", "veth9", None);
        assert_eq!(t.member_add(&solo).lines().count(), 2);
    }

    #[test]
    fn group_names_keep_letters_and_digits_only() {
        assert_eq!(chain_name("ab-12;drop"), "g_ab12drop");
        assert!(tables(false)
            .group_delete("k1")
            .contains("delete set inet skiff_sk_e2e0 g_k1"));
    }
}
