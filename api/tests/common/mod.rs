//! A fresh database for a store test: made from SKIFF_TEST_DATABASE_URL (a
//! superuser URL that deploy/local/test.sh sets), with every migration.
//! Without it the test fails: it never passes unrun.

use skiff_api::store::Store;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use std::str::FromStr;

pub async fn store() -> Store {
    let url = std::env::var("SKIFF_TEST_DATABASE_URL")
        .expect("SKIFF_TEST_DATABASE_URL: run these tests with deploy/local/test.sh");
    let name = format!("skiff_api_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&url).await.expect("connect as admin");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap();
    let options = PgConnectOptions::from_str(&url).unwrap().database(&name);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let keyring = skiff_api::secrets::Keyring::parse(
        &skiff_api::secrets::Keyring::new_key_line("test-1").unwrap(),
    )
    .unwrap();
    Store::with_pool(pool, keyring).await.unwrap()
}
