//! A worker's networks across its restarts: at start, the runs whose task
//! still lives keep their network (rules reloaded in one transaction, ports
//! held again) and every other run's leftovers (state files, namespaces,
//! leases) are torn down; and the whole tear-down when a host is
//! decommissioned.

use super::{create_dir, io, nft, run, Attachment, NetError, Network, NETNS_DIR};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use tracing::{info, warn};

impl Network {
    /// Loads the worker's tables with the networks of `live` (the keys of
    /// runs with a live task: a sandbox member's is its sandbox's, so a
    /// sandbox with any live member stays) in them, in one transaction,
    /// and tears down every other network's leftovers (state files,
    /// namespaces, leases). Called once at start, before any run is
    /// attached.
    pub async fn restore(&self, live: &HashSet<String>) -> Result<(), NetError> {
        let mut attached = self.attached.lock().await;
        let state_dir = self.cfg.run_dir.join("state");
        create_dir(&state_dir).await?;
        let mut kept: HashMap<String, Attachment> = HashMap::new();
        let mut stale: Vec<(String, Option<Attachment>)> = Vec::new();
        let mut entries = tokio::fs::read_dir(&state_dir)
            .await
            .map_err(io("reading the network state"))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io("reading the network state"))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            let saved = tokio::fs::read(entry.path())
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Attachment>(&b).ok());
            match saved {
                Some(a) if live.contains(id) => {
                    kept.insert(id.to_owned(), a);
                }
                saved => stale.push((id.to_owned(), saved)),
            }
        }
        // Namespaces of ours without a state file: a crash between
        // creating one and saving its state.
        let prefix = format!("{}-", self.cfg.bridge);
        if let Ok(mut dir) = tokio::fs::read_dir(NETNS_DIR).await {
            while let Ok(Some(entry)) = dir.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_prefix(&prefix) {
                    if !kept.contains_key(id) && !stale.iter().any(|(s, _)| s == id) {
                        stale.push((id.to_owned(), None));
                    }
                }
            }
        }
        // Leases of host-local without either (it keeps `<ip>` files
        // holding "<container id>\r\n<ifname>").
        let leases = self
            .cfg
            .run_dir
            .join("ipam")
            .join(format!("skiff-{}", self.cfg.bridge));
        if let Ok(mut dir) = tokio::fs::read_dir(&leases).await {
            while let Ok(Some(entry)) = dir.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == "lock" || name.starts_with("last_reserved_ip") {
                    continue;
                }
                let Ok(text) = tokio::fs::read_to_string(entry.path()).await else {
                    continue;
                };
                let id = text.lines().next().unwrap_or("").trim().to_owned();
                if !id.is_empty() && !kept.contains_key(&id) && !stale.iter().any(|(s, _)| *s == id)
                {
                    stale.push((id, None));
                }
            }
        }
        let members: Vec<nft::Member> = kept.values().map(Attachment::member).collect();
        nft::apply(&self.tables.full(&members)).await?;
        for (id, a) in &kept {
            if let Err(e) = self.ports.claim(id, &a.claims(), Duration::ZERO).await {
                warn!(container = %id, error = %e, "could not hold a published port again");
            }
        }
        info!(
            kept = kept.len(),
            stale = stale.len(),
            bridge = %self.cfg.bridge,
            "container network restored"
        );
        *attached = kept;
        drop(attached);
        for (id, saved) in stale {
            if let Err(e) = self.release(&id, saved).await {
                warn!(container = %id, error = %e, "tearing down a leftover network");
            }
        }
        Ok(())
    }

    /// Tears down every container network of this bridge, the worker's
    /// tables and the bridge itself: for decommissioning a host (and for
    /// tests cleaning up after themselves). Containers still running lose
    /// their network.
    pub async fn teardown_all(&self) -> Result<(), NetError> {
        self.restore(&HashSet::new()).await?;
        nft::apply(&self.tables.delete_all()).await?;
        if tokio::fs::try_exists(Path::new("/sys/class/net").join(&self.cfg.bridge))
            .await
            .unwrap_or(false)
        {
            run("ip", &["link", "del", &self.cfg.bridge]).await?;
        }
        Ok(())
    }
}
