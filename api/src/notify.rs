//! Wake-ups, shared by every API replica through PostgreSQL: triggers
//! `NOTIFY` on `skiff_host` (a host's assignments changed), `skiff_container`
//! (a container changed: `wait` and `delete` watchers) and `skiff_scheduler`
//! (something to place, or capacity freed); [`listen`] turns them into
//! in-process signals on the [`Hub`].
//!
//! PostgreSQL stays the source of truth; a signal only says "look again",
//! so a lost one costs latency, never correctness: every listener also
//! re-reads on a timer, and after the listening connection is lost and
//! re-established (notifications sent meanwhile are gone) everyone is woken.

use sqlx::postgres::{PgListener, PgPool};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CHANNELS: [&str; 3] = ["skiff_host", "skiff_container", "skiff_scheduler"];

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
    /// Tells the host's assignment stream(s) on this replica to look again.
    pub fn host_changed(&self, host_id: &str) {
        let hosts = self.hosts.lock().expect("hub lock");
        if let Some(tx) = hosts.get(host_id) {
            tx.send_modify(|version| *version += 1);
        }
    }

    pub fn watch_host(&self, host_id: &str) -> watch::Receiver<u64> {
        let mut hosts = self.hosts.lock().expect("hub lock");
        hosts.retain(|_, tx| tx.receiver_count() > 0);
        hosts
            .entry(host_id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// `Uuid::nil()` means "any container may have changed".
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

    /// After notifications may have been missed.
    fn wake_everyone(&self) {
        for tx in self.hosts.lock().expect("hub lock").values() {
            tx.send_modify(|version| *version += 1);
        }
        self.container_changed(Uuid::nil());
        self.wake_scheduler();
    }

    fn dispatch(&self, channel: &str, payload: &str) {
        match channel {
            "skiff_host" => self.host_changed(payload),
            "skiff_container" => match Uuid::parse_str(payload) {
                Ok(id) => self.container_changed(id),
                Err(_) => tracing::warn!(payload, "malformed container notification"),
            },
            "skiff_scheduler" => self.wake_scheduler(),
            other => tracing::debug!(channel = other, "notification on an unknown channel"),
        }
    }
}

/// Listens for the triggers' notifications until `shutdown`, reconnecting
/// (with a pause) whenever PostgreSQL goes away.
pub async fn listen(pool: PgPool, hub: std::sync::Arc<Hub>, shutdown: CancellationToken) {
    let mut pause = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match listen_once(&pool, &hub, &shutdown).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(error = %err, "notification listener lost its connection; reconnecting");
                hub.wake_everyone();
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn listen_once(
    pool: &PgPool,
    hub: &Hub,
    shutdown: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all(CHANNELS).await?;
    // Whatever happened before we listened was not heard.
    hub.wake_everyone();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = listener.try_recv() => next?,
        };
        match next {
            Some(n) => hub.dispatch(n.channel(), n.payload()),
            // The connection dropped and sqlx re-established it: anything
            // sent meanwhile is lost.
            None => hub.wake_everyone(),
        }
    }
}
