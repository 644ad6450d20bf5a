//! Retention: containers deleted long ago and removed from their host are
//! purged with their events; recent or not yet removed ones are kept; the
//! tenant event log keeps its window (store test against PostgreSQL).

mod common;

use std::time::Duration;
use uuid::Uuid;

const DAY: f64 = 86_400.0;

#[tokio::test]
async fn old_deleted_containers_and_old_events_go_and_the_rest_stays() {
    let store = common::store().await;
    let pool = store.pool().clone();
    let tenant = store.create_tenant("t", b"hash").await.unwrap();
    let mut ids = Vec::new();
    // (name, deleted days ago, removed from its host)
    for (name, deleted_ago, removed) in [
        ("old-removed", Some(8.0), true),
        ("old-on-host", Some(8.0), false),
        ("recent", Some(1.0), true),
        ("live", None, false),
    ] {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO containers (id, tenant_id, name, image, cpu_millis, memory_mib, \
               restart_policy, stop_timeout_s, state, deleted_at, removed_at) \
             VALUES ($1, $2, $3, 'img', 100, 64, 'never', 1, 'succeeded', \
               now() - make_interval(secs => $4), CASE WHEN $5 THEN now() END)",
        )
        .bind(id)
        .bind(tenant)
        .bind(name)
        .bind(deleted_ago.map(|d: f64| d * DAY))
        .bind(removed)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO container_events (container_id, event_key, kind, message, at) \
             VALUES ($1, 'Exited-1', 'Exited', 'exited with code 0', now())",
        )
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
        ids.push((name, id));
    }
    let purged = store
        .purge_deleted(Duration::from_secs_f64(7.0 * DAY), 100)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT name FROM containers ORDER BY name")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, ["live", "old-on-host", "recent"]);
    let orphan_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM container_events WHERE container_id = $1")
            .bind(ids[0].1)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(orphan_events, 0, "its events went with it");

    // The event log: one entry older than the window goes, the rest stays.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(before > 0, "the inserts above were logged");
    sqlx::query(
        "INSERT INTO tenant_events (tenant_id, container_id, type, message, at) \
         VALUES ($1, $2, 'Exited', 'old', now() - interval '31 days')",
    )
    .bind(tenant)
    .bind(ids[3].1)
    .execute(&pool)
    .await
    .unwrap();
    let forgotten = store
        .forget_old_events(Duration::from_secs_f64(30.0 * DAY))
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after, before);
}
