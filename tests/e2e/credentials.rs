//! A host credential's life, from outside: joining takes a live join token
//! (and a refusal is clear on both sides), a revoked host is shut out and
//! its containers handled as a lost host's, and a certificate is renewed in
//! place before it expires. Refusals sit beside their positive controls.

use crate::trust::{agent_addr, check, every_control_plane_call, read_logs, Refused};
use reqwest::Method;
use serde_json::json;
use skiff_e2e::{eventually, limit, secs, Platform, HOST_LABEL};
use skiff_proto as pb;
use skiff_proto::tls::Role;
use std::time::{Duration, SystemTime};
use tonic::Code;

#[tokio::test]
async fn joining_takes_a_live_token_and_a_refusal_is_clear_on_both_sides() {
    limit(secs(150), async {
        let platform = Platform::trust().await;
        let _t = platform.new_tenant().await;
        let name = format!("joiner-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);

        // The control: a live token joins (the worker then fails on its
        // missing containerd, after keeping its certificate).
        let (token_id, token) = platform.join_token(2, 3600).await;
        let first = platform.run_joining_worker(&token, &name).await;
        assert!(first.output.contains("joined the pool"), "{}", first.output);
        let pem = std::fs::read_to_string(first.state_dir.join("identity/host.pem")).unwrap();
        let cred = skiff_proto::tls::Credential::from_pem(&pem, &pem).unwrap();
        assert_eq!(cred.cert.role, Role::Host(name.clone()));
        // The same name again is made unique.
        let second = platform.run_joining_worker(&token, &name).await;
        let pem = std::fs::read_to_string(second.state_dir.join("identity/host.pem")).unwrap();
        let cred = skiff_proto::tls::Credential::from_pem(&pem, &pem).unwrap();
        assert_eq!(
            cred.cert.role,
            Role::Host(format!("{name}-2")),
            "{}",
            second.output
        );

        // Used up.
        let third = platform.run_joining_worker(&token, &name).await;
        assert!(!third.status.success());
        assert!(
            third.output.contains("join refused") && third.output.contains("no uses left"),
            "{}",
            third.output
        );
        assert!(!third.state_dir.join("identity/host.pem").exists());
        // Expired.
        let (_, short) = platform.join_token(5, 1).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let late = platform.run_joining_worker(&short, &name).await;
        assert!(!late.status.success());
        assert!(
            late.output.contains("join token has expired"),
            "{}",
            late.output
        );
        // Revoked.
        let (revoked_id, revoked) = platform.join_token(5, 3600).await;
        let reply = platform
            .admin(
                Method::DELETE,
                &format!("/v1/admin/join-tokens/{revoked_id}"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        let refused = platform.run_joining_worker(&revoked, &name).await;
        assert!(
            refused.output.contains("join token was revoked"),
            "{}",
            refused.output
        );

        // The API's audit log says who was refused and why.
        let logs = platform.api_logs();
        for reason in ["used_up", "expired", "revoked"] {
            assert!(
                logs.lines().any(|l| l.contains("skiff::audit")
                    && l.contains("join refused")
                    && l.contains(&format!("reason=\"{reason}\""))
                    && l.contains(&name)),
                "no audit line for a join refused as {reason}:\n{}",
                platform.logs_dump_matching(Some("join refused"))
            );
        }
        // The list shows each token's state, never a secret.
        let list = platform
            .admin(Method::GET, "/v1/admin/join-tokens", None)
            .await
            .unwrap();
        let items = list.json()["items"].as_array().unwrap().clone();
        let state = |id: &str| {
            let item = items.iter().find(|i| i["id"] == id).unwrap();
            assert!(item.get("token").is_none(), "{item}");
            item["state"].as_str().unwrap().to_owned()
        };
        assert_eq!(state(&token_id), "used_up");
        assert_eq!(state(&revoked_id), "revoked");
    })
    .await
}

#[tokio::test]
async fn a_revoked_host_is_shut_out_its_stream_ended_and_its_containers_moved() {
    limit(secs(150), async {
        let platform = Platform::trust().await;
        let t = platform.new_exclusive_tenant().await;
        let (keep, revoke) = (&platform.hosts[0], &platform.hosts[1]);
        // A container on the host to revoke that should run again elsewhere.
        let id = {
            let (_, _undrain) = platform.drain(&keep.id).await;
            let mut spec = platform.sleeper(0.1);
            spec["restart_policy"] = json!("always");
            let id = t.create_id(&spec).await;
            let running = t.wait(&id, "running", 60).await;
            assert_eq!(
                running["host_id"],
                revoke.id.as_str(),
                "{}",
                t.diag(&id).await
            );
            id
        };
        // Positive control: the host's credential opens its stream.
        let own = revoke.credential();
        let mut client = platform.control_plane_client(Some(own.clone()));
        let mut stream = client
            .watch_assignments(pb::WatchRequest { from_revision: 0 })
            .await
            .expect("the host's own credential watches")
            .into_inner();
        let first = stream.message().await.expect("a step").expect("a message");
        assert!(first.assignments.iter().any(|a| a.container_id == id));

        let reply = platform
            .admin(Method::DELETE, &format!("/v1/hosts/{}", revoke.id), None)
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.json()["state"], "revoked");

        // The open stream ends, refused.
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("the stream ended without saying why"),
                    Err(status) => return status,
                }
            }
        })
        .await
        .expect("the revoked host's stream ends");
        assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
        // Every call is refused from now on.
        for (call, result) in every_control_plane_call(platform, Some(own)).await {
            check(
                &format!("{call} of a revoked host"),
                result,
                Refused::Status(Code::PermissionDenied),
            );
        }
        // On the agent endpoint too (of the host kept: a host's certificate
        // never reads logs there, revoked or not).
        let addr = agent_addr(platform, keep).await;
        let logs = read_logs(platform, keep, &addr, Some(revoke.credential()), &id)
            .await
            .map(|_| ());
        check(
            "ReadLogs of a revoked host",
            logs,
            Refused::Status(Code::PermissionDenied),
        );
        // Its container runs again on the other host, as after a loss.
        let moved = eventually(
            "the container running on the other host",
            Duration::from_secs(60),
            || async {
                let c = t.get(&id).await;
                (c["state"] == "running" && c["host_id"] == keep.id.as_str()).then_some(c)
            },
        )
        .await;
        assert_eq!(moved["restart_count"], 1, "{moved}");
        let events = t.events(&id).await;
        assert!(
            events.iter().any(|e| e["kind"] == "HostLost"
                && e["message"].as_str().unwrap_or("").contains("was revoked")),
            "{events:?}"
        );
        assert_eq!(platform.host_view(&revoke.id).await["state"], "revoked");
        // The real worker is refused too, and says so.
        eventually("the worker refused", Duration::from_secs(30), || async {
            platform
                .service_logs()
                .contains("host revoked")
                .then_some(())
        })
        .await;
        t.delete(&id).await;
    })
    .await
}

#[tokio::test]
async fn a_certificate_near_expiry_is_renewed_without_restarting_the_worker_or_its_containers() {
    limit(secs(150), async {
        let platform = Platform::trust().await;
        let t = platform.new_tenant().await;
        let host = &platform.hosts[0];
        let id = t
            .create_id(&{
                let mut spec = platform.sleeper(0.1);
                spec["placement"] = json!({ "host_labels": { HOST_LABEL: host.name } });
                spec
            })
            .await;
        t.wait(&id, "running", 60).await;
        let worker_pid = host.worker_pid();
        let task_pid = host.task_pid(&id).await;
        let before = host.credential().current().cert;
        assert_eq!(platform.timers.cert_lifetime_s, 20);

        // Renewed at half-life, in place.
        let renewed = eventually(
            "a renewed certificate",
            Duration::from_secs(platform.timers.cert_lifetime_s * 2),
            || async {
                let now = host.credential().current().cert;
                (now.serial != before.serial).then_some(now)
            },
        )
        .await;
        assert!(renewed.not_after > before.not_after);
        // The worker shows when its certificate expires, for alerting.
        let expiry = renewed
            .not_after
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as f64;
        let shown = host
            .wait_metric_at_least(
                "skiff_worker_certificate_expiry_timestamp_seconds",
                expiry,
                Duration::from_secs(10),
            )
            .await;
        assert!(shown >= expiry, "{shown} < {expiry}");
        assert!(
            SystemTime::now() < before.not_after,
            "renewed before the old certificate expired"
        );
        // Past the old certificate's expiry the host still talks (with the
        // new one: the old one is refused now).
        let wait = before
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(wait + Duration::from_secs(1)).await;
        let past = chrono::DateTime::<chrono::Utc>::from(before.not_after);
        eventually(
            "a heartbeat after the old certificate expired",
            Duration::from_secs(30),
            || async { (platform.last_heartbeat(&host.id).await > past).then_some(()) },
        )
        .await;
        assert_eq!(platform.host_view(&host.id).await["state"], "ready");
        assert_eq!(
            host.worker_pid(),
            worker_pid,
            "the worker was not restarted"
        );
        assert_eq!(
            host.task_pid(&id).await,
            task_pid,
            "the container was not restarted"
        );
        let c = t.get(&id).await;
        assert_eq!(
            (c["state"].as_str(), c["restart_count"].as_i64()),
            (Some("running"), Some(0)),
            "{c}"
        );
        let api_logs = platform.api_logs();
        assert!(
            api_logs.contains("host certificate renewed"),
            "the renewal is audit-logged"
        );
        // The worker moved to the new certificate by itself: the control
        // plane never had to refuse the old one once it expired.
        let refused_expired = api_logs
            .lines()
            .filter(|l| l.contains("worker call refused") && l.contains("reason=\"expired\""))
            .filter(|l| l.contains(&format!("Host(\"{}\")", host.id)))
            .count();
        assert_eq!(
            refused_expired,
            0,
            "{}",
            platform.logs_dump_matching(Some("expired"))
        );
        t.delete(&id).await;
    })
    .await
}
