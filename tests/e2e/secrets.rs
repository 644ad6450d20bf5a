//! Secrets at rest: `secure_env` of containers and job templates (and
//! registry passwords) is stored sealed (AES-256-GCM, the key id beside
//! it), never in plain text in any row, and still reaches the container;
//! a keyring rotation re-seals every
//! row under the new key (`skiff-api secrets reencrypt`), rows an earlier
//! version left in plain text are sealed at start, and an API whose keyring
//! lacks a key that rows were sealed under (or holds another key under a
//! known id) refuses to start, beside one with the right keyring that starts.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skiff_e2e::{eventually, id_of, limit, secs, unique, Platform, Tenant};
use sqlx::PgPool;
use std::time::Duration;

/// Every row of `table` whose text (all columns) mentions `needle`, as
/// text or in a bytea column (shown as hex in a row's text).
async fn rows_mentioning(pool: &PgPool, table: &str, needle: &str) -> Vec<String> {
    sqlx::query_scalar(&format!(
        "SELECT t::text FROM {table} t WHERE strpos(t::text, $1) > 0 \
            OR strpos(t::text, encode(convert_to($1, 'UTF8'), 'hex')) > 0"
    ))
    .bind(needle)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The key id and sealed length of a container's or job's secrets.
async fn sealed_of(pool: &PgPool, table: &str, id: &str) -> (Option<String>, Option<usize>) {
    let (kid, sealed): (Option<String>, Option<Vec<u8>>) = sqlx::query_as(&format!(
        "SELECT secure_env_kid, secure_env_sealed FROM {table} WHERE id = $1::uuid"
    ))
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    (kid, sealed.map(|s| s.len()))
}

/// A container that prints whether it got the secret, without printing it
/// (nor holding it in its command: it compares digests).
fn secret_checker(platform: &Platform, secret: &str) -> Value {
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    let mut spec = platform.sh(&format!(
        "if [ \"$(printf %s \"$SKIFF_SECRET\" | sha256sum | cut -d' ' -f1)\" = {digest} ]; \
         then echo secret-ok; else echo secret-missing; fi"
    ));
    spec["secure_env"] = json!({ "SKIFF_SECRET": secret });
    spec
}

async fn wait_job_done(t: &Tenant, id: &str) -> Value {
    eventually(
        &format!("job {id} finished"),
        Duration::from_secs(60),
        || async {
            let j = t
                .call(Method::GET, &format!("/v1/jobs/{id}"), None)
                .await
                .json();
            matches!(j["state"].as_str(), Some("succeeded" | "failed")).then_some(j)
        },
    )
    .await
}

#[tokio::test]
async fn secure_env_is_sealed_at_rest_and_still_reaches_containers_and_job_tasks() {
    limit(secs(120), async {
        let t = crate::tenant().await;
        let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
        let mut spec = secret_checker(t.platform, &secret);
        spec["name"] = json!(unique("sealed"));
        let key = format!("sealed-{}", uuid::Uuid::new_v4().simple());
        let created = t
            .call_with_key(Method::POST, "/v1/containers", Some(&spec), Some(&key))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
        let id = id_of(&created.json());
        let job = t
            .call(
                Method::POST,
                "/v1/jobs",
                Some(&json!({ "template": secret_checker(t.platform, &secret), "count": 2 })),
            )
            .await;
        assert_eq!(job.status, StatusCode::CREATED, "{job:?}");
        let job_id = id_of(&job.json());

        // Delivered: the container and every task saw the value.
        t.wait_exited_in(&id, "succeeded").await;
        assert_eq!(t.logs(&id).await.trim(), "secret-ok");
        let done = wait_job_done(&t, &job_id).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let tasks = t
            .call(Method::GET, &format!("/v1/jobs/{job_id}/tasks"), None)
            .await
            .json();
        let tasks = tasks["items"].as_array().unwrap();
        assert_eq!(tasks.len(), 2, "{tasks:?}");
        for task in tasks {
            let task_id = id_of(task);
            assert_eq!(t.logs(&task_id).await.trim(), "secret-ok", "task {task_id}");
            assert_eq!(task["secure_env_keys"], json!(["SKIFF_SECRET"]), "{task}");
        }

        // At rest: sealed under the pool's key, and in no row in plain text
        // (nor in the idempotency key's stored response or fingerprint).
        let pool = PgPool::connect(&t.platform.database_url).await.unwrap();
        let kid = format!("{}-1", t.platform.pool);
        let (got_kid, len) = sealed_of(&pool, "containers", &id).await;
        assert_eq!(got_kid.as_deref(), Some(kid.as_str()));
        assert!(len.unwrap() > secret.len(), "sealed bytes: {len:?}");
        let (got_kid, _) = sealed_of(&pool, "jobs", &job_id).await;
        assert_eq!(got_kid.as_deref(), Some(kid.as_str()));
        for table in [
            "containers",
            "jobs",
            "idempotency_keys",
            "container_events",
            "job_tasks",
        ] {
            let rows = rows_mentioning(&pool, table, &secret).await;
            assert!(
                rows.is_empty(),
                "the secret in plain text in {table}: {rows:?}"
            );
        }
        // (The check itself finds what is there: the name is in plain text,
        // and the stored response, a bytea, holds the id.)
        assert_eq!(
            rows_mentioning(&pool, "containers", spec["name"].as_str().unwrap())
                .await
                .len(),
            1
        );
        assert_eq!(
            rows_mentioning(&pool, "idempotency_keys", &id).await.len(),
            1
        );
        assert!(
            !t.platform.service_logs().contains(&secret),
            "secret value in the api or worker log"
        );
    })
    .await
}

/// Runs `skiff-api secrets reencrypt` against the pool's database with the
/// pool's keyring file; its stdout.
async fn reencrypt(platform: &Platform) -> String {
    let out = reencrypt_run(platform).await;
    assert!(
        out.status.success(),
        "reencrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn reencrypt_run(platform: &Platform) -> std::process::Output {
    tokio::process::Command::new(&platform.api_bin)
        .args(["secrets", "reencrypt"])
        .env("SKIFF_DATABASE_URL", &platform.database_url)
        .env("SKIFF_SECRETS_KEYRING_FILE", &platform.secrets_keyring)
        .env_remove("SKIFF_SECRETS_KEYRING")
        .output()
        .await
        .unwrap()
}

async fn new_key(platform: &Platform, id: &str) -> String {
    let out = tokio::process::Command::new(&platform.api_bin)
        .args(["secrets", "new-key", "--id", id])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Starts one more replica with `keyring` as its keyring file, expects it
/// to exit with an error within 30 s, and returns its log.
async fn refused_to_start(platform: &Platform, name: &str, keyring: &str) -> String {
    let path = platform.run_dir.join(format!("{name}.keyring"));
    std::fs::write(&path, keyring).unwrap();
    let mut refused = platform.extra_api(
        &format!("api-{name}-keyring"),
        &[("SKIFF_SECRETS_KEYRING_FILE", path.display().to_string())],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = refused.exited() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an API with the {name} keyring kept running: {}",
            refused.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "{status:?}");
    refused.log()
}

/// Restarts the pool's replica with its (rewritten) keyring file.
async fn restart_api(platform: &Platform) {
    platform.kill_api(1);
    platform.respawn_api(1).await;
}

#[tokio::test]
async fn a_rotated_keyring_reseals_every_secret_and_an_api_missing_a_key_refuses_to_start() {
    limit(secs(180), async {
        let platform = Platform::secrets().await;
        let t = platform.new_exclusive_tenant().await;
        let pool = PgPool::connect(&platform.database_url).await.unwrap();
        let old = std::fs::read_to_string(&platform.secrets_keyring).unwrap();
        let old_kid = format!("{}-1", platform.pool);
        // The only host drained: what is created now waits, and is created
        // on the host (its secrets opened for it) only after the rotation.
        let (_, undrain) = platform.drain(&platform.hosts[0].id).await;

        // Sealed under the first key: a container, a job and its task.
        let secret = format!("rot-{}", uuid::Uuid::new_v4().simple());
        let id = t.create_id(&secret_checker(platform, &secret)).await;
        let job = t
            .call(
                Method::POST,
                "/v1/jobs",
                Some(&json!({ "template": secret_checker(platform, &secret), "count": 1 })),
            )
            .await;
        assert_eq!(job.status, StatusCode::CREATED, "{job:?}");
        let job_id = id_of(&job.json());
        for (table, row) in [("containers", &id), ("jobs", &job_id)] {
            assert_eq!(
                sealed_of(&pool, table, row).await.0.as_deref(),
                Some(old_kid.as_str()),
                "{table}"
            );
        }
        // Registry passwords, sealed under the first key too: a stored one,
        // and a container's own (for the test registry, which takes any).
        let registry_password = format!("regpw-{}", uuid::Uuid::new_v4().simple());
        let stored = t
            .call(
                Method::PUT,
                "/v1/registry-credentials/registry.example",
                Some(&json!({ "username": "u", "password": registry_password })),
            )
            .await;
        assert_eq!(stored.status, StatusCode::CREATED, "{stored:?}");
        let mut spec = platform.spec(&["echo", "credential-ok"]);
        spec["image_registry_credentials"] = json!([{
            "server": platform.registry(), "username": "u", "password": registry_password,
        }]);
        let with_credential = t.create_id(&spec).await;
        // A row as an earlier version wrote it: secrets in plain text.
        let legacy_secret = format!("legacy-{}", uuid::Uuid::new_v4().simple());
        let mut spec = secret_checker(platform, &legacy_secret);
        spec["secure_env"] = json!({ "SKIFF_SECRET": "placeholder" });
        let legacy = t.create_id(&spec).await;
        sqlx::query(
            "UPDATE containers SET secure_env = jsonb_build_object('SKIFF_SECRET', $2::text), \
             secure_env_kid = NULL, secure_env_sealed = NULL WHERE id = $1::uuid",
        )
        .bind(&legacy)
        .bind(&legacy_secret)
        .execute(&pool)
        .await
        .unwrap();

        // Rotation: the new key first, the old one kept to open; restart.
        let new_line = new_key(platform, "rotated-2").await;
        std::fs::write(&platform.secrets_keyring, format!("{new_line}{old}")).unwrap();
        restart_api(platform).await;
        // The plain-text row was sealed at start (under the new key).
        assert_eq!(
            sealed_of(&pool, "containers", &legacy).await.0.as_deref(),
            Some("rotated-2")
        );
        assert!(rows_mentioning(&pool, "containers", &legacy_secret)
            .await
            .is_empty());
        // A tampered row does not stop the others: it is named, left under
        // its key, and the command fails (the old key must stay).
        let (saved,): (Vec<u8>,) =
            sqlx::query_as("SELECT secure_env_sealed FROM containers WHERE id = $1::uuid")
                .bind(&id)
                .fetch_one(&pool)
                .await
                .unwrap();
        let mut tampered = saved.clone();
        *tampered.last_mut().unwrap() ^= 1;
        let set_sealed = |bytes: Vec<u8>| {
            sqlx::query("UPDATE containers SET secure_env_sealed = $2 WHERE id = $1::uuid")
                .bind(id.clone())
                .bind(bytes)
        };
        set_sealed(tampered).execute(&pool).await.unwrap();
        let failed = reencrypt_run(platform).await;
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(!failed.status.success() && stderr.contains(&id), "{stderr}");
        let (kid, job_kid): (String, String) = sqlx::query_as(
            "SELECT (SELECT secure_env_kid FROM containers WHERE id = $1::uuid), \
                    (SELECT secure_env_kid FROM jobs WHERE id = $2::uuid)",
        )
        .bind(&id)
        .bind(&job_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            (kid.as_str(), job_kid.as_str()),
            (old_kid.as_str(), "rotated-2")
        );
        // Repaired, the next run takes it too.
        set_sealed(saved).execute(&pool).await.unwrap();
        let out = reencrypt(platform).await;
        assert!(out.contains("re-sealed under key rotated-2"), "{out}");
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM containers WHERE secure_env_kid <> 'rotated-2') \
                  + (SELECT count(*) FROM jobs WHERE secure_env_kid <> 'rotated-2')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            left, 0,
            "rows still under another key after reencrypt: {out}"
        );
        for (table, row) in [("containers", &id), ("jobs", &job_id)] {
            assert_eq!(
                sealed_of(&pool, table, row).await.0.as_deref(),
                Some("rotated-2"),
                "{table}"
            );
        }
        for (table, owner, row) in [
            ("registry_credentials", "tenant_id", &t.id),
            ("container_registry_credentials", "id", &with_credential),
        ] {
            let kids: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT password_kid FROM {table} WHERE {owner} = $1::uuid"
            ))
            .bind(row)
            .fetch_all(&pool)
            .await
            .unwrap();
            assert_eq!(kids, ["rotated-2"], "{table}");
            assert!(rows_mentioning(&pool, table, &registry_password)
                .await
                .is_empty());
        }

        // An API whose keyring lacks rotated-2 refuses to start and says
        // why; so does one holding another key under the id rotated-2.
        let log = refused_to_start(platform, "stale", &old).await;
        assert!(
            log.contains("rotated-2") && log.contains("keyring lacks"),
            "{log}"
        );
        let impostor = new_key(platform, "rotated-2").await;
        let log = refused_to_start(platform, "regenerated", &format!("{impostor}{old}")).await;
        assert!(
            log.contains("rotated-2") && log.contains("is not the key that id sealed with"),
            "{log}"
        );

        // The old key leaves; the API with the new key alone (the positive
        // control) starts, and once the host takes work again every
        // container is created with its secret, opened under the new key.
        // One more, whose sealed secret is then tampered with: it must not
        // start without it, nor hold up the others on its host.
        let held = t.create_id(&secret_checker(platform, &secret)).await;
        let (sealed,): (Vec<u8>,) =
            sqlx::query_as("SELECT secure_env_sealed FROM containers WHERE id = $1::uuid")
                .bind(&held)
                .fetch_one(&pool)
                .await
                .unwrap();
        let mut tampered = sealed;
        *tampered.last_mut().unwrap() ^= 1;
        sqlx::query("UPDATE containers SET secure_env_sealed = $2 WHERE id = $1::uuid")
            .bind(&held)
            .bind(tampered)
            .execute(&pool)
            .await
            .unwrap();
        std::fs::write(&platform.secrets_keyring, &new_line).unwrap();
        restart_api(platform).await;
        drop(undrain);
        for container in [&id, &legacy] {
            t.wait_exited_in(container, "succeeded").await;
            assert_eq!(t.logs(container).await.trim(), "secret-ok", "{container}");
        }
        // Its re-sealed registry password opens and reaches the host.
        t.wait_exited_in(&with_credential, "succeeded").await;
        eventually(
            "the replica to hold the tampered container back",
            Duration::from_secs(30),
            || async {
                platform
                    .service_logs()
                    .lines()
                    .any(|l| l.contains(&held) && l.contains("its secrets do not open"))
                    .then_some(())
            },
        )
        .await;
        let held_view = t.get(&held).await;
        assert!(held_view["started_at"].is_null(), "{held_view}");
        assert_eq!(t.logs(&held).await.trim(), "", "{held_view}");
        assert_eq!(wait_job_done(&t, &job_id).await["state"], "succeeded");
        let tasks = t
            .call(Method::GET, &format!("/v1/jobs/{job_id}/tasks"), None)
            .await
            .json();
        let task = id_of(&tasks["items"][0]);
        assert_eq!(t.logs(&task).await.trim(), "secret-ok");
    })
    .await
}
