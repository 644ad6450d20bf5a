//! The event log's cursor against a real PostgreSQL: a transaction that
//! commits late never lands behind a position a reader already has (what a
//! plain serial id would get wrong).

mod common;

use skiff_api::store::events::{Cursor, EventFilter};
use sqlx::Connection;
use uuid::Uuid;

#[tokio::test]
async fn a_late_commit_is_never_skipped_by_a_reader() {
    let store = common::store().await;
    let tenant = Uuid::now_v7();
    let insert = "INSERT INTO tenant_events (tenant_id, container_id, type) VALUES ($1, $2, $3)";
    let container = Uuid::now_v7();
    // T1 writes first (the lower id) and stays open...
    let mut early = store.pool().begin().await.unwrap();
    sqlx::query(insert)
        .bind(tenant)
        .bind(container)
        .bind("early")
        .execute(&mut *early)
        .await
        .unwrap();
    // ... while T2 writes and commits.
    let mut conn = store.pool().acquire().await.unwrap();
    let mut late = conn.begin().await.unwrap();
    sqlx::query(insert)
        .bind(tenant)
        .bind(container)
        .bind("late")
        .execute(&mut *late)
        .await
        .unwrap();
    late.commit().await.unwrap();
    let read = |after| {
        let store = &store;
        async move {
            store
                .events_after(tenant, after, &EventFilter::default(), 100)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.type_.clone(), e.cursor()))
                .collect::<Vec<_>>()
        }
    };
    // T2's row is held back while T1 may still commit below it.
    assert!(read(Cursor::default()).await.is_empty());
    early.commit().await.unwrap();
    // (The horizon is the whole cluster's: another test's transaction may
    // hold it back a moment longer.)
    let mut both = Vec::new();
    for _ in 0..200 {
        both = read(Cursor::default()).await;
        if both.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let types: Vec<&str> = both.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["early", "late"]);
    // After the last one, nothing; after the first, the second.
    assert!(read(both[1].1).await.is_empty());
    assert_eq!(read(both[0].1).await.len(), 1);
}
