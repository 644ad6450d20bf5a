//! End-to-end tests of skiff: real PostgreSQL, containerds, registry, API
//! replicas and workers (see `skiff_e2e` for the harness and its pools). Run
//! them with `deploy/local/test.sh`; each test makes its own tenant and runs
//! within its own time limit (`skiff_e2e::limit`).
//!
//! Layout:
//! - `run`: a container's life from create to exit (exit codes, logs,
//!   events, timings, missing images, the image's user by name).
//! - `lifecycle`: stop, start, restart, restart policies, delete.
//! - `limits`: per-token rate limits (429 and its headers).
//! - `isolation`: cgroup limits, OOM kills, network namespace, tenants,
//!   secure environment.
//! - `network`: private networks: published ports and addresses answer,
//!   groups and tenants kept apart, the agent closed to containers, host
//!   ports placed as a resource and freed.
//! - `aci`: Azure Container Instances' ARM API driven by Microsoft's Python
//!   SDK (`aci_sdk.py`): a group's life, refusals with ARM codes, tenants
//!   apart, members on localhost, secure values, exec over the WebSocket.
//! - `api`: bad input, listing and pagination, service endpoints.
//! - `billing`: per-second metering, reports, ledger verification.
//! - `cli`: the `skiff` binary as a subprocess (run, ps, logs -f,
//!   refusals, login, the live phases on a pseudo-terminal).
//! - `console`: the web console in headless Chromium (Playwright).
//! - `deadlines`: `timeout_s` and `max_cost` stop a run with
//!   `DeadlineExceeded` and `BudgetExceeded`.
//! - `events`: the tenant's event log (JSON pages, SSE resumed from its
//!   last id, two replicas writing).
//! - `exec`: a process run in a running container (output, exit code,
//!   bounds, its cgroup, refusals).
//! - `groups`: container groups: one host, shared localhost, address and
//!   published ports; acted on as a whole; requests checked by field.
//! - `hosts`: the hosts route, drain and undrain.
//! - `jobs`: parallelism, per-task overrides, retries, cancel.
//! - `idempotency`: `Idempotency-Key` on creation (concurrent retries, a
//!   restart in between, a reused key).
//! - `images`: unused images removed past a host's disk budget, least
//!   recently used first.
//! - `placement`: binpack and spread, image locality, host labels, requests
//!   no host can ever take.
//! - `queueing`: waiting for capacity, fairness across tenants, expiry.
//! - `quotas`: admission refused past a tenant's quota; job tasks wait
//!   for room.
//! - `registries`: private registries: credentials in the request or
//!   stored per tenant, unauthorized pulls (cached images too), prewarm and
//!   the hosts' images.
//! - `replicas`: two API replicas placing one burst; a replica SIGKILLed
//!   during a burst of creates.
//! - `assignments`: one changed assignment sends one; a broken stream
//!   resumes from its revision.
//! - `webhooks`: signed completion webhooks, retried across a replica kill.
//! - `worker_restart`: a worker SIGKILLed again and again, a containerd
//!   SIGKILLed and restarted, while containers run on that host.
//! - `postgres_restart`: PostgreSQL stopped and started under a pool.
//! - `partition`: a host cut off by its network link, declared lost, its
//!   containers moved, and fenced when the link returns.
//! - `rest_tls`: TLS on the REST API when configured.
//! - `trust`: the worker channel's mutual TLS: refusals and their alerts,
//!   one host's credential for that host only.
//! - `credentials`: join tokens, revocation, renewal in place.
//! - `fuzz`: schemathesis against `/openapi.json` (tenant and admin
//!   operations, every check), on a pool of its own.

mod aci;
mod api;
mod assignments;
mod billing;
mod cli;
mod console;
mod credentials;
mod dashboards;
mod deadlines;
mod egress;
mod escape;
mod events;
mod exec;
mod fuzz;
mod groups;
mod hosts;
mod idempotency;
mod images;
mod isolation;
mod jobs;
mod lifecycle;
mod limits;
mod network;
mod partition;
mod placement;
mod postgres_restart;
mod probes;
mod pull_progress;
mod queueing;
mod quotas;
mod registries;
mod replicas;
mod rest_tls;
mod run;
mod secrets;
mod trust;
mod volumes;
mod webhooks;
mod worker_restart;

use skiff_e2e::{Platform, Tenant};

/// A fresh tenant on the main pool, holding it shared.
async fn tenant() -> Tenant {
    Platform::get().await.new_tenant().await
}
