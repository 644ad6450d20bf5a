//! Table tests of [`super::to_create_group`].

use super::*;
use serde_json::{json, Value};

fn body() -> Value {
    json!({
        "location": "westeurope",
        "tags": {"team": "web"},
        "properties": {
            "osType": "Linux",
            "restartPolicy": "OnFailure",
            "containers": [{
                "name": "app",
                "properties": {
                    "image": "127.0.0.1:5000/skiff/busybox:latest",
                    "command": ["sh", "-c", "sleep 1000"],
                    "ports": [{"port": 8080, "protocol": "TCP"}],
                    "environmentVariables": [
                        {"name": "PLAIN", "value": "1"},
                        {"name": "HUSH", "secureValue": "s3cret"}
                    ],
                    "resources": {
                        "requests": {"cpu": 0.5, "memoryInGB": 1.5},
                        "limits": {"cpu": 0.25, "memoryInGB": 1.0}
                    },
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                    "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
                    "readinessProbe": {"httpGet": {"port": 8080, "path": "/ready", "scheme": "http"}}
                }
            }],
            "ipAddress": {"type": "Public", "ports": [{"port": 8080, "protocol": "TCP"}]},
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "keys", "secret": {"key.pem": "aGk="}}
            ],
            "imageRegistryCredentials": [{"server": "127.0.0.1:5002", "username": "u", "password": "p"}]
        }
    })
}

fn translate(v: &Value) -> Result<CreateGroup, ArmError> {
    let b = parse_body(v.to_string().as_bytes())?;
    to_create_group("web", "Rg-1", b)
}

#[test]
fn a_full_group_maps_onto_skiff() {
    let g = translate(&body()).expect("control: valid");
    assert_eq!(g.name.as_deref(), Some("web"));
    assert_eq!(g.namespace.as_deref(), Some("Rg-1"));
    assert!(matches!(
        g.restart_policy,
        Some(RestartPolicyName::OnFailure)
    ));
    let m = &g.containers[0];
    assert_eq!((m.cpu, m.memory_mib), (0.5, 1536), "sized by the requests");
    assert_eq!(m.env.as_ref().unwrap()["PLAIN"], "1");
    assert_eq!(m.secure_env.as_ref().unwrap().0["HUSH"], "s3cret");
    assert_eq!(m.ports.as_ref().unwrap()[0].port, 8080);
    assert_eq!(m.mounts.as_ref().unwrap()[0].path, "/scratch");
    assert_eq!(m.liveness_probe.as_ref().unwrap().period_s, 5);
    assert_eq!(
        m.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path,
        "/ready"
    );
    assert_eq!(g.ports.as_ref().unwrap()[0].port, 8080);
    let volumes = g.volumes.as_ref().unwrap();
    assert!(volumes[0].empty_dir.is_some() && volumes[1].secret.is_some());
    assert_eq!(
        g.image_registry_credentials.as_ref().unwrap()[0].username,
        "u"
    );
    assert_eq!(g.labels.as_ref().unwrap()["team"], "web");
    let ann = g.annotations.as_ref().unwrap();
    assert_eq!(ann[LOCATION_KEY], "westeurope");
    let extras: Extras = serde_json::from_str(&ann[EXTRAS_KEY]).unwrap();
    assert_eq!(extras.ip_address_type.as_deref(), Some("Public"));
    assert_eq!(
        extras.resources["app"].limits.as_ref().unwrap().cpu,
        Some(0.25)
    );
    assert!(
        !ann[EXTRAS_KEY].contains("s3cret"),
        "no secure value in annotations"
    );
    // And skiff's own validation takes it.
    g.validate(60)
        .expect("skiff validates the translated group");
}

#[test]
fn tags_that_are_no_labels_are_kept_aside() {
    let mut b = body();
    b["tags"] = json!({"has space": "x"});
    let g = translate(&b).unwrap();
    assert!(g.labels.is_none());
    let extras: Extras =
        serde_json::from_str(&g.annotations.as_ref().unwrap()[EXTRAS_KEY]).unwrap();
    assert_eq!(extras.tags.unwrap()["has space"], "x");
}

/// Sets `pointer` in the valid body to `value` (Null removes it).
fn with(pointer: &str, value: Value) -> Value {
    let mut b = body();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = b.pointer_mut(parent).unwrap_or_else(|| panic!("{parent}"));
    match (target, value) {
        (Value::Object(m), Value::Null) => {
            m.remove(key);
        }
        (Value::Object(m), v) => {
            m.insert(key.to_owned(), v);
        }
        (Value::Array(a), v) => a[key.parse::<usize>().unwrap()] = v,
        _ => panic!("{pointer}"),
    }
    b
}

#[test]
fn refusals_name_their_code_and_field() {
    let c = "/properties/containers/0/properties";
    #[rustfmt::skip]
    let rows: Vec<(Value, &str, &str)> = vec![
        (with("/location", Value::Null), "LocationRequired", ""),
        (with("/properties", Value::Null), "InvalidRequestContent", "properties"),
        (with("/properties/osType", json!("Windows")), "UnsupportedOsType", "properties.osType"),
        (with("/properties/osType", Value::Null), "InvalidRequestContent", "properties.osType"),
        (with("/properties/restartPolicy", json!("Sometimes")), "InvalidRequestContent", "properties.restartPolicy"),
        (with("/properties/containers", json!([])), "InvalidRequestContent", "properties.containers"),
        (with(&format!("{c}/resources/requests"), Value::Null), "InvalidRequestContent", "properties.containers[0].properties.resources.requests"),
        (with(&format!("{c}/resources/requests/cpu"), Value::Null), "InvalidRequestContent", "properties.containers[0].properties.resources.requests.cpu"),
        (with(&format!("{c}/resources/limits/cpu"), json!(2)), "InvalidRequestContent", "properties.containers[0].properties.resources.limits"),
        (with(&format!("{c}/resources/requests/gpu"), json!({"count": 1, "sku": "K80"})), "InvalidRequestContent", "properties.containers[0].properties.resources.requests.gpu"),
        (with(&format!("{c}/environmentVariables/0/secureValue"), json!("x")), "InvalidRequestContent", "properties.containers[0].properties.environmentVariables[0]"),
        (with(&format!("{c}/ports/0/protocol"), json!("SCTP")), "InvalidRequestContent", "properties.containers[0].properties.ports[0].protocol"),
        (with(&format!("{c}/ports/0/port"), json!(70000)), "InvalidRequestContent", "properties.containers[0].properties.ports[0].port"),
        (with(&format!("{c}/livenessProbe/successThreshold"), json!(2)), "InvalidRequestContent", "properties.containers[0].properties.livenessProbe.successThreshold"),
        (with(&format!("{c}/readinessProbe/httpGet/scheme"), json!("https")), "InvalidRequestContent", "properties.containers[0].properties.readinessProbe.httpGet.scheme"),
        (with(&format!("{c}/image"), json!(7)), "InvalidRequestContent", "properties.containers[0].properties.image"),
        (with("/properties/ipAddress/ports/0/port", json!(9090)), "InvalidRequestContent", "properties.ipAddress.ports[0]"),
        (with("/properties/ipAddress/type", json!("Internal")), "InvalidRequestContent", "properties.ipAddress.type"),
        (with("/properties/volumes/0", json!({"name": "scratch", "azureFile": {"shareName": "s"}})), "InvalidRequestContent", "properties.volumes[0].azureFile"),
        (with("/properties/volumes/0", json!({"name": "scratch"})), "InvalidRequestContent", "properties.volumes[0]"),
        (with("/properties/imageRegistryCredentials/0", json!({"server": "r", "identity": "/x"})), "InvalidRequestContent", "properties.imageRegistryCredentials[0].identity"),
        (with("/properties/imageRegistryCredentials/0", json!({"server": "r", "username": "u"})), "InvalidRequestContent", "properties.imageRegistryCredentials[0]"),
        (with("/properties/initContainers", json!([{"name": "i"}])), "InvalidRequestContent", "properties.initContainers"),
        (with("/properties/subnetIds", json!([{"id": "x"}])), "InvalidRequestContent", "properties.subnetIds"),
        (with("/properties/sku", json!("Confidential")), "InvalidRequestContent", "properties.sku"),
        (with("/properties/priority", json!("Spot")), "InvalidRequestContent", "properties.priority"),
        (with("/identity", json!({"type": "SystemAssigned"})), "InvalidRequestContent", "identity"),
    ];
    for (b, code, target) in rows {
        let e = translate(&b).expect_err(&format!("{code} {target}"));
        assert_eq!(e.code, code, "{target}: {e:?}");
        assert_eq!(e.status.as_u16(), 400, "{target}");
        if !target.is_empty() {
            assert_eq!(e.target.as_deref(), Some(target), "{e:?}");
        }
    }
}

#[test]
fn skiff_validation_errors_after_translation() {
    // Translated fine, refused by skiff's own rules, as ARM errors.
    let c = "/properties/containers/0/properties";
    #[rustfmt::skip]
    let rows: Vec<(Value, &str)> = vec![
        (with(&format!("{c}/resources/requests/cpu"), json!(99)), "properties.containers[0].properties.resources.requests.cpu"),
        (with("/properties/containers/0/name", json!("Bad_Name")), "properties.containers[0].name"),
    ];
    for (b, target) in rows {
        let g = translate(&b).expect("translates");
        let e: ArmError = crate::error::ApiError::from(g.validate(60).unwrap_err()).into();
        assert_eq!(
            (e.code, e.target.as_deref()),
            ("InvalidRequestContent", Some(target))
        );
    }
}
