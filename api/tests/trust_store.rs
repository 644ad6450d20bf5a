//! The trust records against a real PostgreSQL (deploy/local/test.sh sets
//! SKIFF_TEST_DATABASE_URL, a superuser URL; each test makes a database of
//! its own). Without it the tests fail: they never pass unrun.

mod common;

use chrono::{Duration, Utc};
use common::store;
use skiff_api::store::trust::{Standing, TokenRefusal};
use skiff_api::store::Store;

fn hash(token: &str) -> Vec<u8> {
    skiff_api::http::hash_token(token)
}

/// Joins `label` with `token`, recording a certificate `serial` valid for
/// `valid_s`; the host id granted.
async fn join(store: &Store, token: &str, label: &str, serial: &str, valid_s: i64) -> String {
    let joining = store
        .begin_join(&hash(token), label, label)
        .await
        .unwrap()
        .expect("the token is accepted");
    let host = joining.host_id.clone();
    store
        .finish_join(joining, serial, Utc::now() + Duration::seconds(valid_s))
        .await
        .unwrap();
    host
}

#[tokio::test]
async fn tokens_are_spent_once_per_join_and_refused_for_why() {
    let store = store().await;
    store
        .create_join_token(&hash("two"), "", 2, 3600)
        .await
        .unwrap();
    let expiring = store
        .create_join_token(&hash("short"), "", 5, 1)
        .await
        .unwrap();
    let revoked = store
        .create_join_token(&hash("gone"), "", 5, 3600)
        .await
        .unwrap();
    store.revoke_join_token(revoked.id).await.unwrap().unwrap();

    // A join abandoned before its certificate is recorded spends nothing.
    let abandoned = store
        .begin_join(&hash("two"), "a", "a")
        .await
        .unwrap()
        .unwrap();
    drop(abandoned);
    join(&store, "two", "a", "01", 600).await;
    join(&store, "two", "b", "02", 600).await;
    let refusal = |token: &'static str| {
        let store = &store;
        async move {
            store
                .begin_join(&hash(token), "c", "c")
                .await
                .unwrap()
                .map(|j| j.host_id.clone())
                .expect_err("refused")
        }
    };
    assert_eq!(refusal("two").await, TokenRefusal::UsedUp);
    assert_eq!(refusal("nope").await, TokenRefusal::Unknown);
    assert_eq!(refusal("gone").await, TokenRefusal::Revoked);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(refusal("short").await, TokenRefusal::Expired);
    let listed = store.join_tokens().await.unwrap();
    let uses = |id| listed.iter().find(|t| t.id == id).unwrap().uses;
    assert_eq!(uses(expiring.id), 0);
    assert_eq!(listed.iter().map(|t| t.uses).max(), Some(2));
}

#[tokio::test]
async fn host_ids_are_unique_and_a_host_from_before_identities_keeps_its_id() {
    let store = store().await;
    store
        .create_join_token(&hash("t"), "", 10, 3600)
        .await
        .unwrap();
    assert_eq!(join(&store, "t", "node", "01", 600).await, "node");
    assert_eq!(join(&store, "t", "node", "02", 600).await, "node-2");
    assert_eq!(join(&store, "t", "node", "03", 600).await, "node-3");
    // Registered by an older version: no identity yet.
    sqlx::query(
        "INSERT INTO hosts (id, agent_addr, cpu_millis, memory_mib, containerd_version, hostname) \
         VALUES ('old', '127.0.0.1:1', 1000, 1024, 'x', 'old')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(join(&store, "t", "old", "04", 600).await, "old");
    assert_eq!(join(&store, "t", "old", "05", 600).await, "old-2");
}

#[tokio::test]
async fn a_certificate_counts_only_while_issued_unexpired_and_unrevoked() {
    let store = store().await;
    store
        .create_join_token(&hash("t"), "", 10, 3600)
        .await
        .unwrap();
    let a = join(&store, "t", "a", "aa", 600).await;
    let b = join(&store, "t", "b", "bb", 600).await;
    let short = join(&store, "t", "s", "ss", 1).await;
    assert_eq!(
        store.certificate_standing(&a, "aa").await.unwrap(),
        Standing::Valid
    );
    // A serial never issued, or issued to another host.
    assert_eq!(
        store.certificate_standing(&a, "ff").await.unwrap(),
        Standing::Unknown
    );
    assert_eq!(
        store.certificate_standing(&a, "bb").await.unwrap(),
        Standing::Unknown
    );
    // A renewal adds a certificate; the older one stays valid until it expires.
    store
        .record_certificate(&a, "ab", Utc::now() + Duration::seconds(600))
        .await
        .unwrap();
    assert_eq!(
        store.certificate_standing(&a, "ab").await.unwrap(),
        Standing::Valid
    );
    assert_eq!(
        store.certificate_standing(&a, "aa").await.unwrap(),
        Standing::Valid
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        store.certificate_standing(&short, "ss").await.unwrap(),
        Standing::Unknown
    );

    // Revoking one host revokes every certificate it holds, and only its own.
    assert!(store.revoke_host("nobody").await.unwrap().is_none());
    store.revoke_host(&a).await.unwrap().expect("a joined host");
    for serial in ["aa", "ab"] {
        assert_eq!(
            store.certificate_standing(&a, serial).await.unwrap(),
            Standing::Revoked
        );
    }
    assert_eq!(
        store.certificate_standing(&b, "bb").await.unwrap(),
        Standing::Valid
    );
}

#[tokio::test]
async fn revocations_outlive_every_cleanup_while_their_certificates_are_valid() {
    let store = store().await;
    store
        .create_join_token(&hash("t"), "", 10, 3600)
        .await
        .unwrap();
    let a = join(&store, "t", "a", "aa", 3600).await;
    let old = join(&store, "t", "o", "oo", 3600).await;
    store.revoke_host(&a).await.unwrap().unwrap();
    // A certificate that expired two days ago.
    sqlx::query("UPDATE host_certs SET not_after = now() - interval '2 days' WHERE serial = 'oo'")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(store.forget_expired_certificates().await.unwrap(), 1);
    assert_eq!(
        store.certificate_standing(&a, "aa").await.unwrap(),
        Standing::Revoked
    );
    assert_eq!(
        store.certificate_standing(&old, "oo").await.unwrap(),
        Standing::Unknown
    );
    assert_eq!(store.forget_expired_certificates().await.unwrap(), 0);
}
