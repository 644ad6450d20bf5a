//! Lost hosts are forgotten after their retention, unless revoked or still
//! holding something live (store test against PostgreSQL).

mod common;

use std::time::Duration;
use uuid::Uuid;

async fn host(pool: &sqlx::PgPool, id: &str, lost_ago_s: Option<f64>, revoked: bool) {
    sqlx::query(
        "INSERT INTO hosts (id, agent_addr, cpu_millis, memory_mib, containerd_version, hostname, \
           lost_at, revoked_at) \
         VALUES ($1, '127.0.0.1:1', 1000, 1024, 'test', $1, \
           now() - make_interval(secs => $2), CASE WHEN $3 THEN now() END)",
    )
    .bind(id)
    .bind(lost_ago_s)
    .bind(revoked)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn lost_hosts_are_forgotten_after_their_retention_but_not_revoked_or_busy_ones() {
    let store = common::store().await;
    let pool = store.pool().clone();
    let keep = 3600.0;
    host(&pool, "old", Some(keep + 10.0), false).await;
    host(&pool, "recent", Some(keep - 10.0), false).await;
    host(&pool, "alive", None, false).await;
    host(&pool, "revoked", Some(keep + 10.0), true).await;
    host(&pool, "busy", Some(keep + 10.0), false).await;
    host(&pool, "history", Some(keep + 10.0), false).await;
    let tenant = store.create_tenant("t", b"hash").await.unwrap();
    for (host, state) in [("busy", "running"), ("history", "succeeded")] {
        sqlx::query(
            "INSERT INTO containers (id, tenant_id, name, image, cpu_millis, memory_mib, \
               restart_policy, stop_timeout_s, host_id, state) \
             VALUES ($1, $2, $3, 'img', 100, 64, 'never', 1, $3, $4::container_state)",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(host)
        .bind(state)
        .execute(&pool)
        .await
        .unwrap();
    }
    let mut gone = store
        .forget_lost_hosts(Duration::from_secs_f64(keep))
        .await
        .unwrap();
    gone.sort();
    assert_eq!(gone, ["history", "old"]);
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM hosts ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, ["alive", "busy", "recent", "revoked"]);
    // The finished container keeps its history, without the host.
    let host_of_history: Option<String> =
        sqlx::query_scalar("SELECT host_id FROM containers WHERE name = 'history'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(host_of_history, None);
}
