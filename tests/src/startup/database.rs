//! A pool's database: a new database in test.sh's PostgreSQL, or (for the
//! pool whose tests stop PostgreSQL) a cluster of its own.
//!
//! Layout:
//! - [`PoolDatabase`]: where a pool's database is.
//! - [`start_database`]: creates or starts it.
//! - `create_database`, `pg_socket_dir`: helpers over test.sh's PostgreSQL.

use super::env::{free_port, TestEnv};
use super::{PoolRun, PoolSpec};
use crate::postgres::OwnPostgres;
use crate::service::{quote, Reaper};
use anyhow::{anyhow, Context, Result};
use std::path::Path;

/// Where a pool's database is, and how the replicas reach it.
pub(super) struct PoolDatabase {
    /// The pool's own cluster, when it has one.
    pub(super) postgres: Option<OwnPostgres>,
    /// The database's URL over TCP.
    pub(super) url: String,
    /// PostgreSQL's unix socket directory, for a replica in a network
    /// namespace (where the TCP port is out of reach); only for a
    /// partitioned pool on test.sh's PostgreSQL.
    pub(super) socket_dir: Option<String>,
    pub(super) port: u16,
    pub(super) name: String,
}

/// Starts the pool's own PostgreSQL cluster (arming its cleanup first), or
/// creates the pool's database in test.sh's.
pub(super) async fn start_database(
    env: &TestEnv,
    spec: &PoolSpec,
    lib: &Path,
    run: &PoolRun,
    reapers: &mut Vec<Reaper>,
) -> Result<PoolDatabase> {
    let run_dir = &run.run_dir;
    if spec.own_postgres {
        let port = free_port()?;
        let pg = OwnPostgres::start(lib, &run_dir.join("postgres"), port).await?;
        reapers.push(Reaper::spawn(
            format!("source {}; stop_postgres {}", quote(lib), quote(&pg.dir)),
            &run_dir.join("reaper.log"),
        )?);
        let url = format!("postgres://postgres@127.0.0.1:{port}/skiff");
        Ok(PoolDatabase {
            postgres: Some(pg),
            url,
            socket_dir: None,
            port,
            name: "skiff".to_string(),
        })
    } else {
        let name = format!("skiff_e2e_{}_{}", run.run_id.replace('-', "_"), spec.name);
        let url = create_database(&env.database_url, &name).await?;
        let port = reqwest::Url::parse(&env.database_url)?
            .port()
            .unwrap_or(5432);
        let socket_dir = if spec.partition {
            Some(pg_socket_dir(env).await?)
        } else {
            None
        };
        Ok(PoolDatabase {
            postgres: None,
            url,
            socket_dir,
            port,
            name,
        })
    }
}

/// The unix socket directory of test.sh's PostgreSQL:
/// `SKIFF_TEST_PG_SOCKET_DIR`, else what the server itself says.
async fn pg_socket_dir(env: &TestEnv) -> Result<String> {
    if let Some(dir) = &env.pg_socket_dir {
        return Ok(dir.clone());
    }
    use sqlx::Connection as _;
    let mut connection = sqlx::PgConnection::connect(&env.database_url).await?;
    let dirs: String = sqlx::query_scalar("SHOW unix_socket_directories")
        .fetch_one(&mut connection)
        .await?;
    connection.close().await?;
    dirs.split(',')
        .map(str::trim)
        .find(|d| d.starts_with('/'))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("PostgreSQL has no unix socket directory ({dirs:?})"))
}

/// Creates database `name` with the superuser URL and returns its URL.
async fn create_database(superuser_url: &str, name: &str) -> Result<String> {
    use sqlx::Connection as _;
    let mut connection = sqlx::PgConnection::connect(superuser_url)
        .await
        .with_context(|| {
            format!("connecting to {superuser_url} (is deploy/local/test.sh's PostgreSQL up?)")
        })?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut connection)
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    connection.close().await?;
    let mut url = reqwest::Url::parse(superuser_url).context("SKIFF_TEST_DATABASE_URL")?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}
