//! In-process wake-ups: which hosts must get a fresh assignment set, which
//! containers changed (for `wait`), and when the scheduler should run.
//!
//! PostgreSQL stays the source of truth; these signals only say "look
//! again", so a lost signal costs latency, never correctness (every
//! listener also re-reads on a timer).

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{broadcast, watch, Notify};
use uuid::Uuid;

pub struct Hub {
    hosts: Mutex<HashMap<String, watch::Sender<u64>>>,
    containers: broadcast::Sender<Uuid>,
    scheduler: Notify,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            hosts: Mutex::new(HashMap::new()),
            containers: broadcast::channel(4096).0,
            scheduler: Notify::new(),
        }
    }
}

impl Hub {
    /// Tells the host's assignment stream to send a fresh set.
    pub fn host_changed(&self, host_id: &str) {
        let hosts = self.hosts.lock().expect("hub lock");
        if let Some(tx) = hosts.get(host_id) {
            tx.send_modify(|version| *version += 1);
        }
    }

    pub fn watch_host(&self, host_id: &str) -> watch::Receiver<u64> {
        let mut hosts = self.hosts.lock().expect("hub lock");
        hosts
            .entry(host_id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub fn container_changed(&self, id: Uuid) {
        // No receivers is fine: nobody is waiting.
        let _ = self.containers.send(id);
    }

    pub fn watch_containers(&self) -> broadcast::Receiver<Uuid> {
        self.containers.subscribe()
    }

    pub fn wake_scheduler(&self) {
        self.scheduler.notify_one();
    }

    pub async fn scheduler_woken(&self) {
        self.scheduler.notified().await;
    }
}
