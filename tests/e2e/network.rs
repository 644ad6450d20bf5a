//! Containers that serve (`network: private`): an address on their host's
//! bridge, published ports on the host, tenants and groups kept apart on
//! the wire, the host's own services closed to containers, host ports
//! counted by placement and freed when a run ends.
//!
//! Runs on the spread pool, whose agents listen on every address: so a
//! container failing to reach the agent port through its gateway is the
//! firewall's doing (the test connects to the same address from the host
//! as the control). All traffic stays on the hosts' bridges and loopback.

use reqwest::StatusCode;
use serde_json::{json, Value};
use skiff_e2e::platform::HOST_LABEL;
use skiff_e2e::{limit, secs, Host, Platform, Tenant};

/// busybox httpd on port 8080 answering `body`, after printing the
/// container's /etc/hostname and whether /etc/hosts names it.
fn web(platform: &Platform, body: &str) -> Value {
    platform.sh(&format!(
        "echo hostname=$(cat /etc/hostname); cat /etc/hosts; \
         mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    ))
}

/// Prints `<label>=<body>` for each URL it fetched, `<label>=refused` when
/// the connection was refused (no route: the firewall's reject) and
/// `<label>=timeout` when nothing answered within 3 s. busybox 1.35's wget
/// crashes parsing `-T`: `timeout` bounds it instead.
fn prober(platform: &Platform, urls: &[(&str, String)]) -> Value {
    let mut script = String::new();
    for (label, url) in urls {
        script.push_str(&format!(
            "out=$(timeout 3 wget -q -O- {url} 2>&1); rc=$?; \
             case \"$rc:$out\" in \
               0:*) echo \"{label}=$out\" ;; \
               *\"can't connect\"*) echo {label}=refused ;; \
               124:*|143:*) echo {label}=timeout ;; \
               *) echo \"{label}=connected-but($rc) $out\" ;; \
             esac; "
        ));
    }
    platform.sh(&script)
}

/// `spec` on `host`, on a private network in `group` (None: none).
fn on(host: &Host, mut spec: Value, group: Option<&str>) -> Value {
    spec["network"] = json!("private");
    if let Some(g) = group {
        spec["network_group"] = json!(g);
    }
    spec["placement"] = json!({ "host_labels": { HOST_LABEL: host.name } });
    spec
}

/// The line `label=...` of a prober's log.
fn outcome<'a>(logs: &'a str, label: &str) -> &'a str {
    logs.lines()
        .find_map(|l| l.strip_prefix(&format!("{label}=")))
        .unwrap_or("<missing>")
}

async fn wait_running(t: &Tenant, id: &str) -> Value {
    t.wait(id, "running", 60).await;
    // The worker reports the address with the run.
    t.poll_until(id, 30, "ip reported", |o| o["ip"].is_string())
        .await
}

async fn http_get(url: &str) -> Option<String> {
    let reply = reqwest::Client::new()
        .get(url)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    reply.text().await.ok()
}

#[tokio::test]
async fn a_private_container_serves_and_only_its_group_reaches_it() {
    limit(secs(180), async {
        let platform = Platform::spread().await;
        let t = platform.new_tenant().await;
        let other = t.another().await;
        let host = &platform.hosts[0];

        let mut spec = on(host, web(platform, "hello-from-web"), Some("shop"));
        spec["name"] = json!(unique_name("web"));
        spec["ports"] = json!([{ "port": 8080 }]);
        let web_id = t.create_id(&spec).await;
        let object = wait_running(&t, &web_id).await;

        // The object: its address on the host's bridge, its published port.
        let ip = object["ip"].as_str().expect("ip").to_owned();
        let prefix = host.net.subnet.trim_end_matches("0/24");
        assert!(
            ip.starts_with(prefix),
            "{ip} in {}: {object}",
            host.net.subnet
        );
        let port = &object["ports"][0];
        assert_eq!(port["port"], 8080, "{object}");
        assert_eq!(port["protocol"], "tcp", "{object}");
        assert_eq!(port["host_ip"], "127.0.0.1", "{object}");
        let host_port = port["host_port"].as_u64().expect("host_port") as u16;
        let (first, last) = host.net.port_range;
        assert!(
            (first..=last).contains(&host_port),
            "{host_port} in {first}-{last}"
        );

        // From the host: through the published port and the address.
        let published = format!("http://127.0.0.1:{host_port}/");
        let direct = format!("http://{ip}:8080/");
        assert_eq!(
            wait_answer(&published, "hello-from-web").await.as_deref(),
            Some("hello-from-web"),
            "{}",
            t.diag(&web_id).await
        );
        assert_eq!(
            http_get(&direct).await.as_deref().map(str::trim),
            Some("hello-from-web")
        );

        // Its hostname is its name, and /etc/hosts says so.
        let logs = t.logs(&web_id).await;
        let name = object["name"].as_str().unwrap();
        assert!(logs.contains(&format!("hostname={name}")), "{logs}");
        assert!(
            logs.contains(&format!("{ip}\t{name}")),
            "/etc/hosts names it: {logs}"
        );

        // Probes from containers on the same host: the same tenant and
        // group (the positive control), the same tenant without a group, the
        // other tenant naming the same group, and the agent through the
        // gateway (it listens on every address here).
        let agent_port = host
            .agent_listen
            .rsplit(':')
            .next()
            .expect("host:port")
            .to_owned();
        assert!(
            host.agent_listen.starts_with("0.0.0.0:"),
            "{}",
            host.agent_listen
        );
        let gateway = &host.net.gateway;
        let urls = [
            ("peer", direct.clone()),
            ("agent", format!("http://{gateway}:{agent_port}/")),
        ];
        let probes = [
            (&t, Some("shop"), "same tenant, same group"),
            (&t, None, "same tenant, no group"),
            (&other, Some("shop"), "other tenant, same group name"),
        ];
        let mut ids = Vec::new();
        for (tenant, group, _) in &probes {
            ids.push(
                tenant
                    .create_id(&on(host, prober(platform, &urls), *group))
                    .await,
            );
        }
        let mut results = Vec::new();
        for ((tenant, _, what), id) in probes.iter().zip(&ids) {
            tenant.wait_exited_in(id, "succeeded").await;
            let logs = tenant.logs(id).await;
            results.push((
                what,
                outcome(&logs, "peer").to_owned(),
                outcome(&logs, "agent").to_owned(),
                logs,
            ));
        }
        let (_, peer, _, logs) = &results[0];
        assert_eq!(peer, "hello-from-web", "{}: {logs}", results[0].0);
        for (what, peer, _, logs) in &results[1..] {
            assert!(
                peer == "refused" || peer == "timeout",
                "{what} reached the web: {peer}\n{logs}"
            );
        }
        // The agent: the host itself reaches it on the gateway address...
        tokio::net::TcpStream::connect(format!("{gateway}:{agent_port}"))
            .await
            .expect("the agent listens on the gateway address (control)");
        // ...no container does, not even the web's own group.
        for (what, _, agent, logs) in &results {
            assert_eq!(agent, "refused", "{what} reached the agent port\n{logs}");
        }
        t.stop(&web_id).await;
    })
    .await
}

fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

#[tokio::test]
async fn host_ports_are_a_placement_resource_freed_when_a_run_ends() {
    limit(secs(180), async {
        let platform = Platform::spread().await;
        let t = platform.new_tenant().await;
        let host = &platform.hosts[1];
        let fixed = host.net.port_range.0 + 40;

        // No host could ever offer a port outside every range: refused.
        let mut outside = on(host, web(platform, "x"), None);
        outside["ports"] = json!([{ "port": 8080, "host_port": 1 }]);
        let refused = t.create(&outside).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
        // The control: the same request with a port of the host's range.
        let mut first = on(host, web(platform, "first"), None);
        first["ports"] = json!([{ "port": 8080, "host_port": fixed }]);
        let first_id = t.create_id(&first).await;
        let object = wait_running(&t, &first_id).await;
        assert_eq!(object["ports"][0]["host_port"], fixed, "{object}");

        // A second asking the same host port waits: only that host's range
        // has it, and the first holds it.
        let mut second = on(host, web(platform, "second"), None);
        second["ports"] = json!([{ "port": 8080, "host_port": fixed }]);
        let second_id = t.create_id(&second).await;
        let waiting = t
            .poll_until(&second_id, 30, "waiting for the port", |o| {
                o["reason"] == "WaitingForCapacity"
            })
            .await;
        assert_eq!(waiting["state"], "pending", "{waiting}");
        assert!(
            waiting["ports"][0]["host_port"].is_null() || waiting["ports"][0]["host_port"] == fixed
        );

        // The first ends: its port is freed (the object says so) and the
        // second gets it and answers on it.
        t.stop(&first_id).await;
        let stopped = t.wait(&first_id, "exited", 60).await;
        assert!(
            stopped["ports"][0]["host_port"].is_null(),
            "freed: {stopped}"
        );
        assert!(stopped["ip"].is_null(), "no address once ended: {stopped}");
        let object = wait_running(&t, &second_id).await;
        assert_eq!(object["ports"][0]["host_port"], fixed, "{object}");
        let url = format!("http://127.0.0.1:{fixed}/");
        assert_eq!(
            wait_answer(&url, "second").await.as_deref(),
            Some("second"),
            "{}",
            t.diag(&second_id).await
        );
        t.stop(&second_id).await;
    })
    .await
}

/// GETs `url` until it answers `body` (a fresh httpd takes a moment).
async fn wait_answer(url: &str, body: &str) -> Option<String> {
    let mut answered = None;
    for _ in 0..50 {
        answered = http_get(url).await;
        if answered.as_deref().map(str::trim) == Some(body) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    answered.map(|a| a.trim().to_owned())
}

#[tokio::test]
async fn a_sigkilled_worker_keeps_the_networks_of_its_containers() {
    limit(secs(180), async {
        let platform = Platform::spread().await;
        // Exclusive: no other test runs while a worker is down.
        let t = platform.new_exclusive_tenant().await;
        let host = &platform.hosts[0];
        let mut spec = on(host, web(platform, "before-kill"), Some("kept"));
        spec["ports"] = json!([{ "port": 8080 }]);
        let web_id = t.create_id(&spec).await;
        let object = wait_running(&t, &web_id).await;
        let ip = object["ip"].as_str().expect("ip").to_owned();
        let host_port = object["ports"][0]["host_port"].as_u64().expect("port") as u16;
        let url = format!("http://127.0.0.1:{host_port}/");
        assert_eq!(
            wait_answer(&url, "before-kill").await.as_deref(),
            Some("before-kill")
        );

        platform.restart_worker_with_sigkill(host).await;

        // The re-adopted container keeps its address and its port (and the
        // new worker holds the port again: no host process can take it).
        assert_eq!(
            http_get(&url).await.as_deref().map(str::trim),
            Some("before-kill")
        );
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", host_port)).is_err(),
            "the restarted worker holds {host_port}"
        );
        let again = t.get(&web_id).await;
        assert_eq!(again["ip"], ip.as_str(), "{again}");
        // A new container on the host gets another address and port (the
        // leases and port table survived) and its group peer reaches both.
        let mut second = on(host, web(platform, "after-kill"), Some("kept"));
        second["ports"] = json!([{ "port": 8080 }]);
        let second_id = t.create_id(&second).await;
        let object = wait_running(&t, &second_id).await;
        assert_ne!(object["ip"], ip.as_str(), "{object}");
        let second_port = object["ports"][0]["host_port"].as_u64().expect("port") as u16;
        assert_ne!(second_port, host_port);
        let second_url = format!("http://127.0.0.1:{second_port}/");
        assert_eq!(
            wait_answer(&second_url, "after-kill").await.as_deref(),
            Some("after-kill")
        );
        let probe = prober(
            platform,
            &[
                ("first", format!("http://{ip}:8080/")),
                (
                    "second",
                    format!("http://{}:8080/", object["ip"].as_str().unwrap()),
                ),
            ],
        );
        let probe_id = t.create_id(&on(host, probe, Some("kept"))).await;
        t.wait_exited_in(&probe_id, "succeeded").await;
        let logs = t.logs(&probe_id).await;
        assert_eq!(outcome(&logs, "first"), "before-kill", "{logs}");
        assert_eq!(outcome(&logs, "second"), "after-kill", "{logs}");

        // Stopped, the adopted one gives its port back.
        t.stop(&web_id).await;
        t.wait(&web_id, "exited", 60).await;
        let mut freed = false;
        for _ in 0..50 {
            if std::net::TcpListener::bind(("127.0.0.1", host_port)).is_ok() {
                freed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(freed, "{host_port} is free once the run ended");
        t.stop(&second_id).await;
    })
    .await
}
