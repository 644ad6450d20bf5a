//! Table tests of the state rules and the read mapping of [`super`].

use super::*;
use serde_json::{json, Value};
use skiff_core::Reason;

fn container(state: &str, extra: Value) -> ContainerView {
    let mut v: Value = serde_json::from_str(
        r#"{
        "id": "00000000-0000-0000-0000-000000000000", "name": "app", "image": "img", "image_digest": null,
        "command": ["sh"], "env": {"PLAIN": "1"}, "secure_env_keys": ["HUSH"],
        "cpu": 0.5, "memory_mib": 1536, "restart_policy": "always",
        "max_restarts": null, "stop_timeout_s": 10, "timeout_s": null, "max_cost": null,
        "notify_url": null, "labels": {}, "max_pending_s": 60, "placement": {},
        "network": "private", "network_group": null, "read_only_rootfs": false,
        "volumes": [], "mounts": [{"volume": "v", "path": "/v", "read_only": false}],
        "liveness_probe": null, "readiness_probe": null, "ready": false, "pull": null,
        "ip": null, "ports": [], "state": "pending", "reason": null, "message": null,
        "exit_code": null, "restart_count": 0, "host_id": null,
        "created_at": "2026-11-27T10:00:00Z", "started_at": null, "finished_at": null,
        "timings": {"queued_ms": null, "pull_ms": null, "create_ms": null, "start_ms": null},
        "usage": {"billed_seconds": 0, "vcpu_seconds": 0.0, "gib_seconds": 0.0, "cost": 0}
    }"#,
    )
    .unwrap();
    v["state"] = json!(state);
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).expect("a container view")
}

fn group(state: GroupState, members: Vec<ContainerView>) -> GroupView {
    GroupView {
        id: Uuid::nil(),
        name: "web".into(),
        namespace: "Rg".into(),
        state,
        restart_policy: RestartPolicy::Always,
        labels: BTreeMap::from([("team".into(), "web".into())]),
        annotations: BTreeMap::from([(LOCATION_KEY.into(), "westeurope".into())]),
        ports: vec![],
        ip: None,
        volumes: vec![],
        host_id: None,
        containers: members
            .into_iter()
            .map(|c| MemberView {
                name: c.name.clone(),
                ports: vec![],
                container: c,
            })
            .collect(),
        created_at: Utc::now(),
    }
}

#[test]
fn container_states_as_aci_reports_them() {
    let started = json!({"started_at": "2026-11-27T10:00:05Z"});
    #[rustfmt::skip]
    let rows: Vec<(ContainerView, &str, Option<i32>, &str, bool)> = vec![
        // (container, currentState.state, exitCode, detailStatus, has previousState)
        (container("pending", json!({})), "Waiting", None, "pending", false),
        (container("pulling", json!({})), "Waiting", None, "pulling", false),
        (container("pending", json!({"reason": "WaitingForCapacity"})), "Waiting", None, "WaitingForCapacity", false),
        (container("running", started.clone()), "Running", None, "", false),
        (container("running", json!({"started_at": "2026-11-27T10:00:05Z", "restart_count": 2, "exit_code": 1, "reason": "Error"})), "Running", None, "", true),
        (container("succeeded", json!({"exit_code": 0, "reason": "Completed", "finished_at": "2026-11-27T10:01:00Z"})), "Terminated", Some(0), "Completed", false),
        (container("failed", json!({"exit_code": 3, "reason": "Error"})), "Terminated", Some(3), "Error", false),
        (container("stopped", json!({"exit_code": 137, "reason": "StopRequested"})), "Terminated", Some(137), "StopRequested", false),
    ];
    for (c, state, exit, detail, previous) in rows {
        let (cur, prev) = container_states(&c);
        assert_eq!(
            (cur.state, cur.exit_code, cur.detail_status.as_str()),
            (state, exit, detail),
            "{:?}",
            c.state
        );
        assert_eq!(prev.is_some(), previous, "{:?}", c.state);
    }
    let (cur, _) = container_states(&container("running", started));
    assert_eq!(
        cur.start_time.as_deref(),
        Some("2026-11-27T10:00:05.000Z"),
        "RFC 3339"
    );
}

#[test]
fn group_states_and_operations() {
    let never_ran = container(
        "failed",
        json!({"reason": "ImagePullFailed", "message": "not found"}),
    );
    let ran = container(
        "failed",
        json!({"reason": "Error", "started_at": "2026-11-27T10:00:05Z", "exit_code": 1}),
    );
    #[rustfmt::skip]
    let rows: Vec<(GroupView, &str, &str, &str)> = vec![
        // (group, provisioningState, instanceView.state, operation status)
        (group(GroupState::Pending, vec![container("pulling", json!({}))]), "Creating", "Pending", "InProgress"),
        (group(GroupState::Running, vec![container("running", json!({}))]), "Succeeded", "Running", "Succeeded"),
        (group(GroupState::Succeeded, vec![container("succeeded", json!({}))]), "Succeeded", "Succeeded", "Succeeded"),
        (group(GroupState::Stopped, vec![container("stopped", json!({}))]), "Succeeded", "Stopped", "Succeeded"),
        (group(GroupState::Failed, vec![never_ran]), "Failed", "Failed", "Failed"),
        (group(GroupState::Failed, vec![ran]), "Succeeded", "Failed", "Succeeded"),
    ];
    for (g, provisioning, instance, op) in rows {
        assert_eq!(provisioning_state(&g), provisioning, "{:?}", g.state);
        assert_eq!(instance_state(g.state), instance, "{:?}", g.state);
        assert_eq!(operation_status(Some(&g)).as_str(), op, "{:?}", g.state);
    }
    let failed = group(
        GroupState::Failed,
        vec![container(
            "failed",
            json!({"reason": "ImagePullFailed", "message": "manifest unknown"}),
        )],
    );
    match operation_status(Some(&failed)) {
        OpStatus::Failed { code, message } => {
            assert_eq!(code, "InaccessibleImage");
            assert!(message.contains("manifest unknown"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(operation_status(None), OpStatus::Canceled);
    let _ = Reason::Error;
}

#[test]
fn reads_never_return_secure_values_and_echo_the_request() {
    let mut g = group(
        GroupState::Running,
        vec![container(
            "running",
            json!({"started_at": "2026-11-27T10:00:05Z"}),
        )],
    );
    let extras = Extras {
        resources: BTreeMap::from([(
            "app".into(),
            Resources {
                requests: Some(Amounts {
                    memory_in_gb: Some(1.5),
                    cpu: Some(0.5),
                    gpu: None,
                }),
                limits: Some(Amounts {
                    memory_in_gb: Some(1.0),
                    cpu: Some(0.25),
                    gpu: None,
                }),
            },
        )]),
        ..Extras::default()
    };
    g.annotations
        .insert(EXTRAS_KEY.into(), serde_json::to_string(&extras).unwrap());
    let events = HashMap::from([(
        Uuid::nil(),
        vec![EventRow {
            kind: "Started".into(),
            message: "started".into(),
            at: Utc::now(),
        }],
    )]);
    let r = serde_json::to_value(resource("sub", &g, &events)).unwrap();
    assert_eq!(
        r["id"],
        "/subscriptions/sub/resourceGroups/Rg/providers/Microsoft.ContainerInstance/containerGroups/web"
    );
    assert_eq!(r["location"], "westeurope");
    assert_eq!(r["tags"], json!({"team": "web"}));
    let c = &r["properties"]["containers"][0]["properties"];
    assert_eq!(
        c["environmentVariables"],
        json!([{"name": "PLAIN", "value": "1"}, {"name": "HUSH"}])
    );
    assert_eq!(c["resources"]["limits"]["cpu"], 0.25);
    assert_eq!(c["resources"]["requests"]["memoryInGB"], 1.5);
    assert_eq!(c["instanceView"]["currentState"]["state"], "Running");
    assert_eq!(c["instanceView"]["events"][0]["name"], "Started");
    assert_eq!(r["properties"]["instanceView"]["state"], "Running");
    assert_eq!(r["properties"]["provisioningState"], "Succeeded");
    assert_eq!(r["properties"]["osType"], "Linux");
    assert!(!r.to_string().contains("secureValue"));
}
