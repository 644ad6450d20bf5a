//! Host ports as a resource, against a real PostgreSQL: a fixed host port
//! is held by one container at a time (the next waits, and gets it once the
//! first finishes); a new run on its old host gets ports there or queues;
//! what the view and the assignment stream show of a container's network.

mod common;

use skiff_api::http::containers::view;
use skiff_api::lifecycle::Action;
use skiff_api::model::{ContainerView, CreateContainer, UsageView};
use skiff_api::store::containers::{Acted, Created};
use skiff_api::store::hosts::NetworkOffer;
use skiff_api::store::placement::StartPacing;
use skiff_api::store::quotas::Amounts;
use skiff_api::store::{ContainerRow, Store};
use skiff_core::{ContainerState, PlacementPolicy, Reason};
use skiff_proto as pb;
use std::time::Duration;
use uuid::Uuid;

const LIVE: Duration = Duration::from_secs(30);

fn quota() -> Amounts {
    Amounts {
        vcpu_millis: 1_000_000,
        memory_mib: 1_000_000,
        containers: 1000,
        pending: 1000,
        jobs: 1000,
    }
}

async fn setup() -> Store {
    let store = common::store().await;
    store
        .ensure_default_rate(skiff_billing::Rate {
            nano_per_vcpu_second: 1000,
            nano_per_gib_second: 1000,
        })
        .await
        .unwrap();
    store
}

/// Registers `id` (4 vCPU, 4 GiB), publishing from `ports` when given.
async fn host(store: &Store, id: &str, ports: Option<(u16, u16)>) {
    let request = pb::RegisterRequest {
        agent_addr: "127.0.0.1:1".into(),
        cpu_millis: 4000,
        memory_mib: 4096,
        containerd_version: "test".into(),
        hostname: id.into(),
        ..Default::default()
    };
    let offer = ports.map(|(start, end)| NetworkOffer {
        port_range_start: start,
        port_range_end: end,
        host_ip: "127.0.0.1".parse().unwrap(),
        subnet: "10.213.0.0/24".into(),
    });
    store
        .register_host(id, &request, offer.as_ref())
        .await
        .unwrap();
}

/// Creates a container of `tenant` with the request's `fields` over a
/// small busybox.
async fn create(store: &Store, tenant: Uuid, name: &str, fields: serde_json::Value) -> Uuid {
    let mut body =
        serde_json::json!({"name": name, "image": "r/busybox:1", "cpu": 0.1, "memory_mib": 64});
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    let new = serde_json::from_value::<CreateContainer>(body)
        .unwrap()
        .validate(600)
        .unwrap();
    let render = |row: &ContainerRow| {
        skiff_api::http::idempotency::stored_json(axum::http::StatusCode::CREATED, &row.id)
    };
    match store
        .insert_container(tenant, &new, None, &quota(), render)
        .await
        .unwrap()
    {
        Created::New(row, _) => row.id,
        other => panic!("{other:?}"),
    }
}

async fn place(store: &Store) {
    store
        .place_pending(
            LIVE,
            PlacementPolicy::Binpack,
            StartPacing {
                default_per_s: 1000.0,
                burst_s: 10.0,
            },
        )
        .await
        .unwrap();
}

async fn row(store: &Store, tenant: Uuid, id: Uuid) -> ContainerRow {
    store.get_container(tenant, id).await.unwrap().unwrap()
}

async fn shown(store: &Store, tenant: Uuid, id: Uuid) -> ContainerView {
    view(row(store, tenant, id).await, UsageView::default())
}

/// The host ports a container is shown with.
async fn host_ports(store: &Store, tenant: Uuid, id: Uuid) -> Vec<Option<u16>> {
    shown(store, tenant, id)
        .await
        .ports
        .iter()
        .map(|p| p.host_port)
        .collect()
}

/// Its worker reports the current run of `id` in `state`.
async fn report(store: &Store, tenant: Uuid, id: Uuid, state: pb::ObservedState, ip: &str) {
    let row = row(store, tenant, id).await;
    let now = chrono::Utc::now().timestamp_millis();
    let exited = state == pb::ObservedState::Exited;
    let report = pb::StatusReport {
        container_id: id.to_string(),
        generation: row.generation as u64,
        state: state as i32,
        exit_code: exited.then_some(0),
        started_at_unix_ms: Some(now),
        finished_at_unix_ms: exited.then_some(now),
        ip: ip.into(),
        ..Default::default()
    };
    let host = row.host_id.expect("placed");
    store
        .apply_report(&host, &report, chrono::Duration::seconds(5))
        .await
        .unwrap()
        .expect("known container");
}

async fn start(store: &Store, tenant: Uuid, id: Uuid) -> ContainerRow {
    match store
        .request(tenant, id, Action::Start, LIVE, None, &quota())
        .await
        .unwrap()
    {
        Acted::Done(Some(row)) => *row,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_fixed_host_port_is_held_by_one_container_at_a_time() {
    let store = setup().await;
    let a = store.create_tenant("a", b"a").await.unwrap();
    let b = store.create_tenant("b", b"b").await.unwrap();
    host(&store, "h1", Some((20000, 20009))).await;
    let fixed = serde_json::json!({"ports": [{"port": 80, "host_port": 20005}]});
    let first = create(&store, a, "first", fixed.clone()).await;
    let second = create(&store, b, "second", fixed).await;
    let grouped = create(
        &store,
        b,
        "grouped",
        serde_json::json!({"network_group": "web", "ports": [{"port": 53, "protocol": "udp"}]}),
    )
    .await;
    assert_eq!(
        host_ports(&store, a, first).await,
        [None],
        "pending: none yet"
    );
    place(&store).await;

    let placed = row(&store, a, first).await;
    assert_eq!(placed.state, ContainerState::Scheduled);
    assert_eq!(host_ports(&store, a, first).await, [Some(20005)]);
    let waiting = row(&store, b, second).await;
    assert_eq!(waiting.state, ContainerState::Pending);
    assert_eq!(waiting.reason, Some(Reason::WaitingForCapacity));
    let message = waiting.message.unwrap_or_default();
    assert!(message.contains("host port 20005/tcp"), "{message}");
    assert_eq!(host_ports(&store, b, second).await, [None]);
    // FIFO within tenant b: its later container waits behind it.
    assert_eq!(row(&store, b, grouped).await.state, ContainerState::Pending);

    // What the host is told: the mode, the assigned ports, the group's key.
    let step = store.assignment_snapshot("h1").await.unwrap();
    let messages = skiff_api::grpc::messages(&step, store.keyring());
    let spec = messages
        .iter()
        .flat_map(|m| &m.assignments)
        .find(|x| x.container_id == first.to_string())
        .and_then(|x| x.spec.clone())
        .unwrap();
    assert_eq!(spec.network, pb::NetworkMode::Private as i32);
    assert_eq!(spec.network_key, "", "no group: reaches no one");
    assert_eq!(
        spec.ports,
        [pb::PortMapping {
            container_port: 80,
            protocol: pb::Protocol::Tcp as i32,
            host_port: 20005
        }]
    );

    // Running: its address shows; once it ends, its address and port go.
    report(&store, a, first, pb::ObservedState::Running, "10.213.0.7").await;
    let running = shown(&store, a, first).await;
    assert_eq!(running.ip.as_deref(), Some("10.213.0.7"));
    assert_eq!(running.network_group, None);
    report(&store, a, first, pb::ObservedState::Exited, "").await;
    let ended = shown(&store, a, first).await;
    assert_eq!(ended.state, ContainerState::Succeeded);
    assert_eq!((ended.ip, ended.ports[0].host_port), (None, None));
    assert_eq!(row(&store, a, first).await.ip, None);

    // The port is free again: the second gets it, and tenant b's grouped
    // container the lowest free udp port, with its group's key.
    place(&store).await;
    assert_eq!(
        row(&store, b, second).await.state,
        ContainerState::Scheduled
    );
    assert_eq!(host_ports(&store, b, second).await, [Some(20005)]);
    assert_eq!(host_ports(&store, b, grouped).await, [Some(20000)]);
    assert_eq!(
        host_ports(&store, a, first).await,
        [None],
        "finished: shown free"
    );
    let step = store.assignment_snapshot("h1").await.unwrap();
    let key = skiff_api::grpc::messages(&step, store.keyring())
        .iter()
        .flat_map(|m| &m.assignments)
        .find(|x| x.container_id == grouped.to_string())
        .and_then(|x| x.spec.clone())
        .unwrap()
        .network_key;
    assert_eq!(key, skiff_api::grpc::network_key(b, "web"));
    assert_eq!(
        store.host_ips(&["h1".into()]).await.unwrap()["h1"],
        "127.0.0.1"
    );
}

#[tokio::test]
async fn a_new_run_on_its_old_host_gets_ports_there_or_queues() {
    let store = setup().await;
    let a = store.create_tenant("a", b"a").await.unwrap();
    let b = store.create_tenant("b", b"b").await.unwrap();
    // One port to publish from.
    host(&store, "h1", Some((20000, 20000))).await;
    let web = serde_json::json!({"ports": [{"port": 8080}]});
    let first = create(&store, a, "first", web.clone()).await;
    place(&store).await;
    assert_eq!(host_ports(&store, a, first).await, [Some(20000)]);
    report(&store, a, first, pb::ObservedState::Running, "10.213.0.2").await;
    report(&store, a, first, pb::ObservedState::Exited, "").await;

    // Its port is free on its host: a new run goes there, with it.
    let again = start(&store, a, first).await;
    assert_eq!(again.state, ContainerState::Scheduled);
    assert_eq!(again.host_id.as_deref(), Some("h1"));
    assert_eq!(host_ports(&store, a, first).await, [Some(20000)]);
    report(&store, a, first, pb::ObservedState::Running, "10.213.0.3").await;
    report(&store, a, first, pb::ObservedState::Exited, "").await;

    // Another container takes the port meanwhile: the new run queues.
    let second = create(&store, b, "second", web).await;
    place(&store).await;
    assert_eq!(host_ports(&store, b, second).await, [Some(20000)]);
    let queued = start(&store, a, first).await;
    assert_eq!(queued.state, ContainerState::Pending);
    assert_eq!(queued.host_id, None);
    assert_eq!(host_ports(&store, a, first).await, [None]);
    place(&store).await;
    assert_eq!(row(&store, a, first).await.state, ContainerState::Pending);
    // Once the other ends, it is placed again with the port.
    report(&store, b, second, pb::ObservedState::Running, "10.213.0.4").await;
    report(&store, b, second, pb::ObservedState::Exited, "").await;
    place(&store).await;
    assert_eq!(row(&store, a, first).await.state, ContainerState::Scheduled);
    assert_eq!(host_ports(&store, a, first).await, [Some(20000)]);
}

#[tokio::test]
async fn private_containers_wait_for_a_host_with_a_network_and_none_runs_anywhere() {
    let store = setup().await;
    let a = store.create_tenant("a", b"a").await.unwrap();
    host(&store, "plain", None).await;
    let private = create(&store, a, "private", serde_json::json!({})).await;
    let b = store.create_tenant("b", b"b").await.unwrap();
    let none = create(&store, b, "none", serde_json::json!({"network": "none"})).await;
    place(&store).await;
    let waiting = row(&store, a, private).await;
    assert_eq!(waiting.state, ContainerState::Pending);
    let message = waiting.message.unwrap_or_default();
    assert!(message.contains("private network"), "{message}");
    let placed = shown(&store, b, none).await;
    assert_eq!(placed.state, ContainerState::Scheduled);
    assert_eq!(placed.network, skiff_core::NetworkMode::None);
    let step = store.assignment_snapshot("plain").await.unwrap();
    let spec = skiff_api::grpc::messages(&step, store.keyring())[0].assignments[0]
        .spec
        .clone()
        .unwrap();
    assert_eq!(
        (spec.network, spec.ports.len()),
        (pb::NetworkMode::None as i32, 0)
    );
    // The host comes back offering a network: the private one is placed.
    host(&store, "plain", Some((21000, 21009))).await;
    place(&store).await;
    assert_eq!(
        row(&store, a, private).await.state,
        ContainerState::Scheduled
    );
    let hosts = store.host_statuses(LIVE, Some("plain")).await.unwrap();
    assert_eq!(
        (hosts[0].port_range_start, hosts[0].host_ip.as_deref()),
        (Some(21000), Some("127.0.0.1"))
    );
}

#[tokio::test]
async fn a_deleted_running_container_holds_its_port_until_its_host_removed_it() {
    let store = setup().await;
    let a = store.create_tenant("a", b"a").await.unwrap();
    host(&store, "h1", Some((20000, 20009))).await;
    let fixed = serde_json::json!({"ports": [{"port": 80, "host_port": 20003}]});
    let first = create(&store, a, "first", fixed.clone()).await;
    place(&store).await;
    report(&store, a, first, pb::ObservedState::Running, "10.213.0.2").await;
    let generation = row(&store, a, first).await.generation;

    // Deleted while running: `stopped` at once, but its task is still being
    // stopped on the host, which holds the port until then.
    match store
        .request(a, first, Action::Delete, LIVE, None, &quota())
        .await
        .unwrap()
    {
        Acted::Done(Some(_)) => {}
        other => panic!("{other:?}"),
    }
    let second = create(&store, a, "second", fixed).await;
    place(&store).await;
    let waiting = row(&store, a, second).await;
    assert_eq!(waiting.state, ContainerState::Pending, "{waiting:?}");
    assert_eq!(waiting.reason, Some(Reason::WaitingForCapacity));

    // The host reports it removed: the port passes to the second.
    let removed = pb::StatusReport {
        container_id: first.to_string(),
        generation: generation as u64,
        state: pb::ObservedState::Removed as i32,
        ..Default::default()
    };
    store
        .apply_report("h1", &removed, chrono::Duration::seconds(5))
        .await
        .unwrap();
    place(&store).await;
    assert_eq!(
        row(&store, a, second).await.state,
        ContainerState::Scheduled
    );
    assert_eq!(host_ports(&store, a, second).await, [Some(20003)]);
}
