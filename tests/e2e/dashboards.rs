//! The operator's dashboards: every metric `deploy/grafana/` charts or
//! alerts on is exported by a running API or worker (each worker found
//! through the `metrics_url` it registered, as `GET /v1/hosts` shows it),
//! with no event needed first; and the alert rules pass `promtool check
//! rules` (Debian's `prometheus` package).

use serde_json::Value;
use skiff_e2e::{limit, secs, Platform};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana")
}

/// The `skiff_*` metric names in a PromQL text.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("skiff_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// Every `expr` of a dashboard's panels (rows' panels included).
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => exprs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

/// Whether a Prometheus text exposition has a sample of `name`.
fn exported(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

async fn get(url: &str) -> String {
    try_get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

async fn try_get(url: &str) -> Result<String, reqwest::Error> {
    reqwest::get(url).await?.error_for_status()?.text().await
}

#[tokio::test]
async fn every_metric_the_dashboards_and_alerts_use_is_exported() {
    limit(secs(60), async {
        let platform = Platform::get().await;
        let dashboard: Value = serde_json::from_str(
            &std::fs::read_to_string(grafana_dir().join("dashboards/skiff.json")).unwrap(),
        )
        .expect("the dashboard is JSON");
        let mut all = Vec::new();
        exprs(&dashboard, &mut all);
        assert!(all.len() >= 10, "the dashboard has its queries: {all:?}");
        all.push(std::fs::read_to_string(grafana_dir().join("alerts.yml")).unwrap());
        let wanted: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();

        let mut texts = vec![get(&format!("{}/metrics", platform.api_url)).await];
        // Every host registered where it serves metrics; those up answer
        // (other tests restart workers of the shared pool now and then).
        let hosts = platform.hosts_view().await;
        for host in &hosts {
            let url = host["metrics_url"]
                .as_str()
                .unwrap_or_else(|| panic!("host without metrics_url: {host}"));
            if host["state"] == "ready" {
                if let Ok(text) = try_get(url).await {
                    texts.push(text);
                }
            }
        }
        assert!(texts.len() > 1, "no worker's metrics answered: {hosts:?}");
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|name| !texts.iter().any(|t| exported(t, name)))
            .collect();
        assert!(missing.is_empty(), "queried but not exported: {missing:?}");
        // The control: a name nobody exports is found missing.
        assert!(!texts.iter().any(|t| exported(t, "skiff_no_such_metric")));
    })
    .await
}

#[tokio::test]
async fn the_alert_rules_pass_promtool() {
    limit(secs(60), async {
        let check = |file: PathBuf| async move {
            tokio::process::Command::new("promtool")
                .args(["check", "rules"])
                .arg(&file)
                .output()
                .await
                .expect("promtool (Debian's prometheus package) must be installed")
        };
        let out = check(grafana_dir().join("alerts.yml")).await;
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The control: a broken rule file is refused.
        let dir = std::env::temp_dir().join(format!("skiff-alerts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let broken = dir.join("broken.yml");
        std::fs::write(
            &broken,
            "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(\n",
        )
        .unwrap();
        assert!(!check(broken).await.status.success());
        let _ = std::fs::remove_dir_all(dir);
    })
    .await
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(skiff_a_bucket{phase="x"}[5m]))) / skiff_b"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["skiff_a_bucket".into(), "skiff_b".into()])
    );
}
