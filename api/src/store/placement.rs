//! The placement round's I/O: load pending containers and placeable hosts
//! under one advisory lock (so replicas never place on stale numbers), call
//! [`crate::scheduler::place`], commit the result; tenants' start rates
//! ([`crate::scheduler::pace`]) are kept here too. Also the queue's expiry
//! (`max_pending_s`), restarts whose back-off has passed, and the admission
//! check that refuses requests no host could ever take.

use super::{ContainerRow, Result, Store, ALLOCATION_BY_HOST, HOST_ALIVE, PORTS_BY_HOST};
use crate::scheduler::groups::{self, GroupHome, PendingMember};
use crate::scheduler::pace::{self, StartRate};
use crate::scheduler::place::{self, HostCapacity, PendingRequest, Wait};
use crate::scheduler::ports::{self, PortRange, UsedPorts};
use chrono::{DateTime, Utc};
use skiff_core::{NetworkMode, PlacementPolicy, PortRequest, PublishedPort};
use sqlx::types::Json;
use sqlx::PgConnection;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use uuid::Uuid;

/// Key of the transaction-scoped advisory lock every placer holds.
const PLACEMENT_LOCK: i64 = 7301;
/// Pending containers considered per round.
const ROUND_LIMIT: i64 = 1000;

/// Serializes everything that claims host capacity (placement rounds, new
/// runs on a container's old host) across all API replicas, until the
/// transaction ends.
pub(super) async fn lock_placement(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PLACEMENT_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// A host's liveness and room, for a new run on it.
#[derive(Debug, Clone)]
pub struct HostRoom {
    /// Heard from within the lost-after timeout and not judged lost.
    pub alive: bool,
    /// Alive and not draining: may take new work.
    pub placeable: bool,
    pub free_cpu_millis: i64,
    pub free_memory_mib: i64,
    /// Its port range (None: it offers no network).
    pub network: Option<PortRange>,
    pub used_ports: UsedPorts,
}

impl HostRoom {
    /// The host ports a new run of `row` gets here if it may claim
    /// capacity now (placeable, room for its cpu and memory, its network
    /// and ports); None: it does not fit.
    pub fn room_for(&self, row: &ContainerRow) -> Option<Vec<PublishedPort>> {
        let fits = self.placeable
            && self.free_cpu_millis >= i64::from(row.cpu_millis)
            && self.free_memory_mib >= i64::from(row.memory_mib);
        if !fits {
            return None;
        }
        ports::ports_on(self.network, &self.used_ports, row.network, &row.ports.0)
    }

    /// Whether a container group's members coming back (`newcomers`) fit
    /// here together, and the host ports they get: those `holder` (a
    /// member running here) holds, else new ones for the group's ports.
    pub fn room_for_group(
        &self,
        newcomers: &[&ContainerRow],
        holder: Option<&ContainerRow>,
    ) -> Option<Vec<PublishedPort>> {
        let cpu: i64 = newcomers.iter().map(|r| i64::from(r.cpu_millis)).sum();
        let memory: i64 = newcomers.iter().map(|r| i64::from(r.memory_mib)).sum();
        if !(self.placeable && self.free_cpu_millis >= cpu && self.free_memory_mib >= memory) {
            return None;
        }
        match (holder, newcomers.first()) {
            (Some(holder), _) => Some(holder.host_ports.0.clone()),
            (None, Some(first)) => ports::ports_on(
                self.network,
                &self.used_ports,
                first.network,
                &first.ports.0,
            ),
            (None, None) => Some(Vec::new()),
        }
    }
}

#[derive(sqlx::FromRow)]
struct HostLoad {
    id: String,
    cpu_millis: i64,
    memory_mib: i64,
    free_cpu_millis: i64,
    free_memory_mib: i64,
    labels: Json<BTreeMap<String, String>>,
    images: Vec<String>,
    alive: bool,
    placeable: bool,
    port_range_start: Option<i32>,
    port_range_end: Option<i32>,
}

impl HostLoad {
    /// Its port range, as registered (None: it offers no network).
    fn network(&self) -> Option<PortRange> {
        let start = u16::try_from(self.port_range_start?).ok()?;
        let end = u16::try_from(self.port_range_end?).ok()?;
        Some(PortRange { start, end })
    }

    fn capacity(self, used_ports: UsedPorts) -> HostCapacity {
        HostCapacity {
            network: self.network(),
            used_ports,
            id: self.id,
            cpu_millis: self.cpu_millis,
            memory_mib: self.memory_mib,
            free_cpu_millis: self.free_cpu_millis,
            free_memory_mib: self.free_memory_mib,
            images: self.images.into_iter().collect::<BTreeSet<_>>(),
            labels: self.labels.0,
        }
    }
}

/// Hosts with what their unfinished containers reserve subtracted.
fn host_load_sql(filter: &str) -> String {
    format!(
        "SELECT h.id, h.cpu_millis::bigint AS cpu_millis, h.memory_mib, \
           h.cpu_millis::bigint - COALESCE(a.cpu, 0) AS free_cpu_millis, \
           h.memory_mib - COALESCE(a.mem, 0) AS free_memory_mib, h.labels, \
           ARRAY(SELECT i->>'reference' FROM jsonb_array_elements(h.images) i) AS images, \
           {HOST_ALIVE} AS alive, ({HOST_ALIVE} AND NOT h.draining) AS placeable, \
           h.port_range_start, h.port_range_end \
         FROM hosts h LEFT JOIN ({ALLOCATION_BY_HOST}) a ON a.host_id = h.id \
         WHERE {filter} ORDER BY h.id"
    )
}

async fn load_hosts(
    conn: &mut PgConnection,
    live_within: Duration,
    filter: &str,
) -> Result<Vec<HostLoad>> {
    Ok(sqlx::query_as::<_, HostLoad>(&host_load_sql(filter))
        .bind(live_within.as_secs_f64())
        .fetch_all(conn)
        .await?)
}

/// The host ports in use on each host (only `host`'s, when given).
async fn used_ports(
    conn: &mut PgConnection,
    host: Option<&str>,
) -> Result<HashMap<String, UsedPorts>> {
    let rows: Vec<(String, Json<PublishedPort>)> = sqlx::query_as(&format!(
        "SELECT host_id, port FROM ({PORTS_BY_HOST}) u WHERE $1::text IS NULL OR host_id = $1"
    ))
    .bind(host)
    .fetch_all(conn)
    .await?;
    let mut used: HashMap<String, UsedPorts> = HashMap::new();
    for (host, Json(p)) in rows {
        used.entry(host)
            .or_default()
            .insert((p.host_port, p.protocol));
    }
    Ok(used)
}

/// Liveness and room of one host.
pub(super) async fn host_room(
    conn: &mut PgConnection,
    host: &str,
    live_within: Duration,
) -> Result<Option<HostRoom>> {
    let rows = sqlx::query_as::<_, HostLoad>(&host_load_sql("h.id = $2"))
        .bind(live_within.as_secs_f64())
        .bind(host)
        .fetch_all(&mut *conn)
        .await?;
    let Some(h) = rows.into_iter().next() else {
        return Ok(None);
    };
    let used_ports = used_ports(conn, Some(host))
        .await?
        .remove(host)
        .unwrap_or_default();
    Ok(Some(HostRoom {
        alive: h.alive,
        placeable: h.placeable,
        free_cpu_millis: h.free_cpu_millis,
        free_memory_mib: h.free_memory_mib,
        network: h.network(),
        used_ports,
    }))
}

/// How the operator paces tenants' starts by default (`SKIFF_QUOTA_*`).
#[derive(Debug, Clone, Copy)]
pub struct StartPacing {
    /// Starts a second of a tenant without its own `max_starts_per_s`.
    pub default_per_s: f64,
    /// A tenant may start this many seconds' worth at once.
    pub burst_s: f64,
}

/// A tenant's place in the rotation and its start bucket.
#[derive(sqlx::FromRow)]
struct TenantPace {
    id: Uuid,
    last_placed_at: Option<DateTime<Utc>>,
    start_tokens: Option<f64>,
    since_s: Option<f64>,
    max_starts_per_s: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct PendingLoad {
    id: Uuid,
    tenant_id: Uuid,
    cpu_millis: i32,
    memory_mib: i32,
    image: String,
    host_labels: Json<BTreeMap<String, String>>,
    prefer_host_id: Option<String>,
    network: NetworkMode,
    ports: Json<Vec<PortRequest>>,
    group_id: Option<Uuid>,
}

/// Where the running part of each of `groups` is (see
/// [`crate::scheduler::groups`]): a member holding capacity on a host.
async fn group_homes(conn: &mut PgConnection, groups: &[Uuid]) -> Result<HashMap<Uuid, GroupHome>> {
    if groups.is_empty() {
        return Ok(HashMap::new());
    }
    // Holding capacity (`holds_capacity!`), and placed.
    let rows: Vec<(Uuid, String, Json<Vec<PublishedPort>>)> = sqlx::query_as(
        "SELECT DISTINCT ON (group_id) group_id, host_id, host_ports FROM containers \
          WHERE group_id = ANY($1) AND state <> 'pending' AND host_id IS NOT NULL \
            AND removed_at IS NULL AND state NOT IN ('succeeded', 'failed', 'stopped') \
          ORDER BY group_id, id",
    )
    .bind(groups)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(group, host, ports)| {
            (
                group,
                GroupHome {
                    host,
                    ports: ports.0,
                },
            )
        })
        .collect())
}

/// What a placement round did.
#[derive(Debug, Default)]
pub struct RoundOutcome {
    pub placed: usize,
    pub waiting: usize,
}

impl Store {
    /// One placement round: places what fits, tells the rest why it waits.
    pub async fn place_pending(
        &self,
        live_within: Duration,
        policy: PlacementPolicy,
        pacing: StartPacing,
    ) -> Result<RoundOutcome> {
        let mut tx = self.pool.begin().await?;
        lock_placement(&mut tx).await?;
        // The oldest of every tenant first (see place::fair_order); the
        // window runs in a subquery because FOR UPDATE refuses window functions.
        let pending: Vec<PendingLoad> = sqlx::query_as(
            "SELECT id, tenant_id, cpu_millis, memory_mib, image, host_labels, prefer_host_id, \
                    network, ports, group_id \
               FROM containers WHERE id IN ( \
                 SELECT id FROM ( \
                   SELECT id, created_at, \
                          row_number() OVER (PARTITION BY tenant_id ORDER BY created_at, id) AS rank \
                     FROM containers \
                    WHERE state = 'pending' AND desired = 'running' AND deleted_at IS NULL) q \
                  ORDER BY rank, created_at LIMIT $1) \
                AND state = 'pending' AND desired = 'running' AND deleted_at IS NULL \
              ORDER BY created_at, id FOR UPDATE SKIP LOCKED",
        )
        // The conditions again outside the subquery: FOR UPDATE re-checks
        // only these on a row another transaction changed meanwhile (a stop,
        // a delete, an expiry must not be placed).
        .bind(ROUND_LIMIT)
        .fetch_all(&mut *tx)
        .await?;
        if pending.is_empty() {
            return Ok(RoundOutcome::default());
        }
        let tenants: Vec<Uuid> = {
            let mut t: Vec<Uuid> = pending.iter().map(|p| p.tenant_id).collect();
            t.sort();
            t.dedup();
            t
        };
        let paced: Vec<TenantPace> = sqlx::query_as(
            "SELECT t.id, t.last_placed_at, t.start_tokens, \
               EXTRACT(EPOCH FROM clock_timestamp() - t.start_tokens_at)::float8 AS since_s, \
               q.max_starts_per_s \
             FROM tenants t LEFT JOIN tenant_quotas q ON q.tenant_id = t.id WHERE t.id = ANY($1)",
        )
        .bind(&tenants)
        .fetch_all(&mut *tx)
        .await?;
        let last_placed: HashMap<Uuid, DateTime<Utc>> = paced
            .iter()
            .filter_map(|p| Some((p.id, p.last_placed_at?)))
            .collect();
        let tokens: HashMap<Uuid, (f64, StartRate)> = paced
            .iter()
            .map(|p| {
                let rate = StartRate::new(
                    p.max_starts_per_s.unwrap_or(pacing.default_per_s),
                    pacing.burst_s,
                );
                let now = rate.refill(p.start_tokens, p.since_s.unwrap_or(0.0));
                (p.id, (now, rate))
            })
            .collect();
        let groups: Vec<Uuid> = {
            let mut g: Vec<Uuid> = pending.iter().filter_map(|p| p.group_id).collect();
            g.sort();
            g.dedup();
            g
        };
        let homes = group_homes(&mut tx, &groups).await?;
        let gathered = groups::gather(
            pending
                .into_iter()
                .map(|p| PendingMember {
                    group: p.group_id,
                    request: PendingRequest {
                        id: p.id,
                        tenant: p.tenant_id,
                        cpu_millis: i64::from(p.cpu_millis),
                        memory_mib: i64::from(p.memory_mib),
                        image: p.image,
                        host_labels: p.host_labels.0,
                        prefer_host: p.prefer_host_id,
                        network: p.network,
                        ports: p.ports.0,
                        require_host: None,
                    },
                })
                .collect(),
            &homes,
        );
        let requests = place::fair_order(gathered.requests.clone(), &last_placed);
        let mut used = used_ports(&mut tx, None).await?;
        let hosts: Vec<HostCapacity> = load_hosts(&mut tx, live_within, "true")
            .await?
            .into_iter()
            .filter(|h| h.placeable)
            .map(|h| {
                let used = used.remove(&h.id).unwrap_or_default();
                h.capacity(used)
            })
            .collect();
        let any_host = !hosts.is_empty();
        let (requests, paced_out) = pace::within_start_rate(requests, &tokens);
        let mut decision = place::place(&requests, hosts, policy);
        decision
            .waiting
            .extend(paced_out.iter().map(|(r, wait)| (r.id, wait.clone())));

        let by_id: HashMap<Uuid, &PendingRequest> = requests
            .iter()
            .chain(paced_out.iter().map(|(r, _)| r))
            .map(|r| (r.id, r))
            .collect();
        // Each placement spends one of its tenant's start tokens (a group's
        // members are one placement).
        let served: Vec<Uuid> = decision
            .placements
            .iter()
            .filter_map(|p| by_id.get(&p.container).map(|r| r.tenant))
            .collect();
        let waiting: Vec<(Uuid, String)> = decision
            .waiting
            .iter()
            .flat_map(|(id, wait)| {
                let message = wait_message(by_id[id], wait, any_host);
                gathered
                    .members_of(*id)
                    .into_iter()
                    .map(move |member| (member, message.clone()))
            })
            .collect();
        let placements = gathered
            .spread(place::Decision {
                placements: decision.placements,
                waiting: Vec::new(),
            })
            .placements;
        let ids: Vec<Uuid> = placements.iter().map(|p| p.container).collect();
        let hosts: Vec<&str> = placements.iter().map(|p| p.host.as_str()).collect();
        let host_ports: Vec<Json<&Vec<PublishedPort>>> =
            placements.iter().map(|p| Json(&p.ports)).collect();
        if !ids.is_empty() {
            sqlx::query(
                "WITH placed AS ( \
                   UPDATE containers c SET state = 'scheduled', host_id = p.host, \
                     scheduled_at = clock_timestamp(), reason = NULL, message = NULL, \
                     queued_ms = GREATEST(0, (EXTRACT(EPOCH FROM \
                       (clock_timestamp() - COALESCE(c.pending_since, c.created_at))) * 1000)::bigint), \
                     pending_since = NULL, host_ports = p.ports, ip = NULL \
                   FROM unnest($1::uuid[], $2::text[], $3::jsonb[]) AS p(id, host, ports) \
                   WHERE c.id = p.id \
                   RETURNING c.id, c.generation, p.host) \
                 INSERT INTO container_events (container_id, event_key, kind, message, at) \
                 SELECT id, 'scheduled-' || generation, 'Scheduled', 'placed on host ' || host, clock_timestamp() \
                   FROM placed \
                 ON CONFLICT (container_id, event_key) DO NOTHING",
            )
            .bind(&ids)
            .bind(&hosts)
            .bind(&host_ports)
            .execute(&mut *tx)
            .await?;
            let mut spent: HashMap<Uuid, f64> = HashMap::new();
            for tenant in &served {
                *spent.entry(*tenant).or_default() += 1.0;
            }
            let (spenders, left): (Vec<Uuid>, Vec<f64>) = spent
                .into_iter()
                .map(|(t, n)| (t, tokens.get(&t).map_or(0.0, |(have, _)| have - n)))
                .unzip();
            sqlx::query(
                "UPDATE tenants t SET last_placed_at = clock_timestamp(), \
                   start_tokens = s.tokens, start_tokens_at = clock_timestamp() \
                 FROM unnest($1::uuid[], $2::float8[]) AS s(id, tokens) WHERE t.id = s.id",
            )
            .bind(&spenders)
            .bind(&left)
            .execute(&mut *tx)
            .await?;
        }

        let (wait_ids, messages): (Vec<Uuid>, Vec<String>) = waiting.into_iter().unzip();
        if !wait_ids.is_empty() {
            // Only rows whose reason or message changes are written: a long
            // queue is not rewritten every round.
            sqlx::query(
                "UPDATE containers c SET reason = 'WaitingForCapacity', message = w.message \
                   FROM unnest($1::uuid[], $2::text[]) AS w(id, message) \
                  WHERE c.id = w.id AND (c.reason IS DISTINCT FROM 'WaitingForCapacity' \
                        OR c.message IS DISTINCT FROM w.message)",
            )
            .bind(&wait_ids)
            .bind(&messages)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(RoundOutcome {
            placed: ids.len(),
            waiting: wait_ids.len(),
        })
    }

    /// Fails containers that waited longer than their `max_pending_s`.
    pub async fn expire_pending(&self) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "UPDATE containers SET state = 'failed', reason = 'NoCapacity', finished_at = now(), \
               message = format('no host had room for %s vCPU and %s MiB within max_pending_s (%s s)', \
                                (cpu_millis / 1000.0)::float8, memory_mib, max_pending_s), \
               pending_since = NULL \
             WHERE state = 'pending' AND desired = 'running' AND deleted_at IS NULL \
               AND pending_since + make_interval(secs => max_pending_s) < now() \
             RETURNING id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Starts the next run of containers whose restart back-off has passed,
    /// on the host that still holds their resources (and host ports).
    pub async fn start_due_restarts(&self) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // With placement and host loss, one at a time: a restart reclaims
        // capacity, and loss must not miss a container it revives.
        lock_placement(&mut tx).await?;
        let done = sqlx::query(
            "WITH due AS ( \
               UPDATE containers SET generation = generation + 1, restart_count = restart_count + 1, \
                 restart_at = NULL, state = 'scheduled', reason = NULL, message = NULL, \
                 started_at = NULL, finished_at = NULL, scheduled_at = clock_timestamp(), ip = NULL \
               WHERE restart_at <= now() AND desired = 'running' AND deleted_at IS NULL \
                 AND state = 'starting' \
               RETURNING id, generation) \
             INSERT INTO container_events (container_id, event_key, kind, message, at) \
             SELECT id, 'restart-' || generation, 'Restarting', 'restart policy', now() FROM due \
             ON CONFLICT (container_id, event_key) DO NOTHING",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Every live host (ready or draining), for the admission check that
    /// refuses what none could ever take ([`place::largest_fit`],
    /// [`place::network_misfit`]). Their used ports are not loaded: it
    /// judges them empty.
    pub async fn live_hosts(&self, live_within: Duration) -> Result<Vec<HostCapacity>> {
        let mut conn = self.pool.acquire().await?;
        Ok(load_hosts(&mut conn, live_within, "true")
            .await?
            .into_iter()
            .filter(|h| h.alive)
            .map(|h| h.capacity(UsedPorts::new()))
            .collect())
    }
}

fn wait_message(r: &PendingRequest, wait: &Wait, any_host: bool) -> String {
    let size = format!(
        "{} vCPU and {} MiB",
        r.cpu_millis as f64 / 1000.0,
        r.memory_mib
    );
    match wait {
        _ if !any_host => format!("waiting for a ready host to take {size} (none is ready)"),
        Wait::NoRoom => format!("waiting for a ready host with {size} free"),
        Wait::NoMatchingHost => format!(
            "waiting for a ready host with labels {} and {size} free",
            serde_json::to_string(&r.host_labels).unwrap_or_default()
        ),
        Wait::BehindOlder => format!(
            "waiting behind this tenant's older pending containers (first in, first out); needs {size}"
        ),
        Wait::StartRate { per_s } => format!(
            "waiting for this tenant's start rate ({per_s} starts a second, max_starts_per_s in GET /v1/quota); needs {size}"
        ),
        Wait::NoNetwork => format!(
            "waiting for a ready host that offers a private network (network: private) with {size} free"
        ),
        Wait::NoHostPort {
            taken: Some((port, protocol)),
        } => format!(
            "waiting for a ready host with host port {port}/{protocol} free and {size} free"
        ),
        Wait::NoHostPort { taken: None } => format!(
            "waiting for a ready host with {} free host ports and {size} free",
            r.ports.len()
        ),
    }
}
