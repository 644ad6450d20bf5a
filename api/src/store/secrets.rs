//! Sealed secrets in bulk: sealing rows written before secrets were sealed,
//! re-sealing everything under the keyring's current key (after a key
//! rotation), and the start-up check that every stored secret has its key.
//!
//! Rows are taken in batches `FOR UPDATE SKIP LOCKED`, so any number of
//! replicas (and a `skiff-api secrets reencrypt` beside them) can run these
//! at once without doing a row twice or blocking requests for long; rows
//! skipped because a request held them are taken by a later pass, until
//! none is left.

use super::{Result, Store, StoreError};
use crate::secrets::{
    container_registry_credential_row, container_row, job_row, registry_credential_row, Sealed,
};
use skiff_core::SecretEnv;
use sqlx::types::Json;
use std::time::Duration;
use uuid::Uuid;

/// Rows handled per transaction.
const BATCH: i64 = 500;
/// How long a bulk pass waits for rows other transactions hold locked, and
/// how often it looks again.
const LOCKED_WAIT: Duration = Duration::from_secs(60);
const LOCKED_RETRY: Duration = Duration::from_millis(100);

/// Where rows of an earlier version keep secrets in plain text.
struct Legacy {
    table: &'static str,
    /// The plain-text map (SQL; NULL when there is none).
    plain: &'static str,
    /// Rows that still hold one.
    filter: &'static str,
    /// What empties it.
    clear: &'static str,
    row_of: fn(Uuid) -> String,
}

const LEGACY_CONTAINERS: Legacy = Legacy {
    table: "containers",
    plain: "secure_env",
    filter: "secure_env <> '{}'",
    // (SET reads the old row: the keys come from the map it empties.)
    clear: "secure_env_keys = ARRAY(SELECT jsonb_object_keys(secure_env) ORDER BY 1), \
            secure_env = '{}'",
    row_of: container_row,
};

const LEGACY_JOBS: Legacy = Legacy {
    table: "jobs",
    plain: "NULLIF(template->'secure_env', 'null')",
    filter: "template ? 'secure_env'",
    clear: "template = template - 'secure_env'",
    row_of: job_row,
};

/// A sealed column pair: the id of the key and the sealed bytes, in a
/// table whose rows are bound by `row_of(id)`.
struct SealedColumn {
    table: &'static str,
    kid: &'static str,
    sealed: &'static str,
    row_of: fn(Uuid) -> String,
}

const CONTAINERS_SECURE_ENV: SealedColumn = SealedColumn {
    table: "containers",
    kid: "secure_env_kid",
    sealed: "secure_env_sealed",
    row_of: container_row,
};

const JOBS_SECURE_ENV: SealedColumn = SealedColumn {
    table: "jobs",
    kid: "secure_env_kid",
    sealed: "secure_env_sealed",
    row_of: job_row,
};

const REGISTRY_PASSWORDS: SealedColumn = SealedColumn {
    table: "registry_credentials",
    kid: "password_kid",
    sealed: "password_sealed",
    row_of: registry_credential_row,
};

const CONTAINER_REGISTRY_PASSWORDS: SealedColumn = SealedColumn {
    table: "container_registry_credentials",
    kid: "password_kid",
    sealed: "password_sealed",
    row_of: container_registry_credential_row,
};

/// Every sealed column, for the start-up check and `secrets reencrypt`.
const SEALED: [&SealedColumn; 4] = [
    &CONTAINERS_SECURE_ENV,
    &JOBS_SECURE_ENV,
    &REGISTRY_PASSWORDS,
    &CONTAINER_REGISTRY_PASSWORDS,
];

/// What a bulk pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resealed {
    pub containers: u64,
    pub jobs: u64,
    /// Registry passwords: tenants' stored ones and containers' own.
    pub registry_credentials: u64,
    /// Rows whose secrets did not open (left as they were).
    pub unopenable: Vec<Uuid>,
}

impl Store {
    /// Checks every key of the keyring against the check its id sealed
    /// before (recording a check for ids seen the first time): a key
    /// regenerated under a known id would open nothing it sealed.
    pub async fn check_secret_keys(&self) -> Result<()> {
        for check in self.keyring.checks() {
            sqlx::query(
                "INSERT INTO secret_key_checks (kid, sealed) VALUES ($1, $2) \
                 ON CONFLICT (kid) DO NOTHING",
            )
            .bind(&check.kid)
            .bind(&check.bytes)
            .execute(&self.pool)
            .await?;
            let bytes: Vec<u8> =
                sqlx::query_scalar("SELECT sealed FROM secret_key_checks WHERE kid = $1")
                    .bind(&check.kid)
                    .fetch_one(&self.pool)
                    .await?;
            self.keyring.verify_check(&Sealed {
                kid: check.kid,
                bytes,
            })?;
        }
        Ok(())
    }

    /// Key ids that stored secrets were sealed under and the keyring lacks
    /// (those secrets could not be opened: an API must not serve then).
    pub async fn missing_secret_keys(&self) -> Result<Vec<String>> {
        let known: Vec<String> = self.keyring.ids().map(str::to_owned).collect();
        let kids = SEALED
            .iter()
            .map(|c| {
                format!(
                    "SELECT DISTINCT {kid} AS kid FROM {table} WHERE {kid} IS NOT NULL",
                    kid = c.kid,
                    table = c.table
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ");
        Ok(sqlx::query_scalar(&format!(
            "SELECT kid FROM ({kids}) k WHERE kid <> ALL($1) ORDER BY kid"
        ))
        .bind(&known)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Seals plain-text secrets left by rows written before they were
    /// sealed (`containers.secure_env`, `jobs.template.secure_env`) and
    /// empties the plain-text copies; waits for rows others hold locked.
    pub async fn seal_legacy_secrets(&self) -> Result<Resealed> {
        let mut done = Resealed::default();
        let left = [&LEGACY_CONTAINERS, &LEGACY_JOBS]
            .map(|l| format!("(SELECT count(*) FROM {} WHERE {})", l.table, l.filter))
            .join(" + ");
        let left = format!("SELECT {left}");
        self.until_none_left(
            async || Ok(sqlx::query_scalar(&left).fetch_one(&self.pool).await?),
            async || {
                done.containers += self.seal_legacy(&LEGACY_CONTAINERS).await?;
                done.jobs += self.seal_legacy(&LEGACY_JOBS).await?;
                Ok(())
            },
        )
        .await?;
        Ok(done)
    }

    /// Runs `pass` until `count` finds no row left: a pass skips rows other
    /// transactions hold locked (`SKIP LOCKED`), and those are taken by a
    /// later pass, within [`LOCKED_WAIT`] of the last progress.
    async fn until_none_left(
        &self,
        mut count: impl AsyncFnMut() -> Result<i64>,
        mut pass: impl AsyncFnMut() -> Result<()>,
    ) -> Result<()> {
        let mut deadline = tokio::time::Instant::now() + LOCKED_WAIT;
        let mut before = i64::MAX;
        loop {
            pass().await?;
            let left = count().await?;
            if left == 0 {
                return Ok(());
            }
            if left < before {
                before = left;
                deadline = tokio::time::Instant::now() + LOCKED_WAIT;
            } else if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Locked(left));
            }
            tokio::time::sleep(LOCKED_RETRY).await;
        }
    }

    /// One pass of [`Store::seal_legacy_secrets`] over one table.
    async fn seal_legacy(&self, legacy: &Legacy) -> Result<u64> {
        let Legacy {
            table,
            plain,
            filter,
            clear,
            row_of,
        } = legacy;
        let mut done = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let rows: Vec<(Uuid, Option<Json<SecretEnv>>)> = sqlx::query_as(&format!(
                "SELECT id, {plain} FROM {table} WHERE {filter} \
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
            ))
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            for (id, env) in &rows {
                let env = env.as_ref().map(|j| j.0.clone()).unwrap_or_default();
                let secrets = crate::secrets::Secrets {
                    env,
                    files: Default::default(),
                };
                let sealed = self.keyring.seal_secrets(&secrets, &row_of(*id));
                sqlx::query(&format!(
                    "UPDATE {table} SET {clear}, secure_env_kid = $2, secure_env_sealed = $3 \
                     WHERE id = $1"
                ))
                .bind(id)
                .bind(sealed.as_ref().map(|s| &s.kid))
                .bind(sealed.as_ref().map(|s| &s.bytes))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            done += rows.len() as u64;
            if (rows.len() as i64) < BATCH {
                return Ok(done);
            }
        }
    }

    /// Re-seals every secret not sealed under the keyring's current key
    /// (after the plain-text ones of [`Store::seal_legacy_secrets`]). Once
    /// it returns, keys other than the current one can leave the keyring.
    pub async fn reseal_secrets(&self) -> Result<Resealed> {
        self.check_secret_keys().await?;
        let mut done = self.seal_legacy_secrets().await?;
        let current = self.keyring.current();
        // Rows whose secrets do not open are listed, and left as they are.
        let unopenable = std::sync::Mutex::new(Vec::new());
        let left = SEALED
            .iter()
            .map(|c| {
                format!(
                    "(SELECT count(*) FROM {} WHERE {} <> $1 AND id <> ALL($2))",
                    c.table, c.kid
                )
            })
            .collect::<Vec<_>>()
            .join(" + ");
        let left = format!("SELECT {left}");
        self.until_none_left(
            async || {
                let skip = unopenable.lock().expect("list").clone();
                Ok(sqlx::query_scalar(&left)
                    .bind(current)
                    .bind(skip)
                    .fetch_one(&self.pool)
                    .await?)
            },
            async || {
                done.containers += self
                    .reseal_column(&CONTAINERS_SECURE_ENV, &unopenable)
                    .await?;
                done.jobs += self.reseal_column(&JOBS_SECURE_ENV, &unopenable).await?;
                for column in [&REGISTRY_PASSWORDS, &CONTAINER_REGISTRY_PASSWORDS] {
                    done.registry_credentials += self.reseal_column(column, &unopenable).await?;
                }
                Ok(())
            },
        )
        .await?;
        done.unopenable = unopenable.into_inner().expect("list");
        Ok(done)
    }

    /// [`Store::reseal_secrets`] of one sealed column; rows that do not
    /// open are added to `unopenable` (and skipped from then on).
    async fn reseal_column(
        &self,
        column: &SealedColumn,
        unopenable: &std::sync::Mutex<Vec<Uuid>>,
    ) -> Result<u64> {
        let SealedColumn {
            table,
            kid: kid_column,
            sealed: sealed_column,
            row_of,
        } = column;
        let mut done = 0;
        loop {
            let skip = unopenable.lock().expect("list").clone();
            let mut tx = self.pool.begin().await?;
            let rows: Vec<(Uuid, String, Vec<u8>)> = sqlx::query_as(&format!(
                "SELECT id, {kid_column}, {sealed_column} FROM {table} \
                 WHERE {kid_column} IS NOT NULL AND {kid_column} <> $1 AND id <> ALL($3) \
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
            ))
            .bind(self.keyring.current())
            .bind(BATCH)
            .bind(&skip)
            .fetch_all(&mut *tx)
            .await?;
            for (id, kid, bytes) in rows.iter().cloned() {
                let row = row_of(id);
                let plaintext = match self.keyring.open(&Sealed { kid, bytes }, &row) {
                    Ok(plaintext) => plaintext,
                    Err(err) => {
                        tracing::error!(%row, error = %err, "left as it is: its secrets do not open");
                        unopenable.lock().expect("list").push(id);
                        continue;
                    }
                };
                let new = self.keyring.seal(&plaintext, &row);
                sqlx::query(&format!(
                    "UPDATE {table} SET {kid_column} = $2, {sealed_column} = $3 WHERE id = $1"
                ))
                .bind(id)
                .bind(&new.kid)
                .bind(&new.bytes)
                .execute(&mut *tx)
                .await?;
                done += 1;
            }
            tx.commit().await?;
            if (rows.len() as i64) < BATCH {
                return Ok(done);
            }
        }
    }
}
