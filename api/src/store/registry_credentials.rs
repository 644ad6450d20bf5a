//! Registry credentials at rest: a tenant's stored ones (one per server),
//! the one a container's own request gave, and which applies to a pull.
//!
//! Passwords are sealed with the keyring ([`crate::secrets`]) before they
//! reach PostgreSQL and opened only on their way to a host (an assignment,
//! a prewarm). Nothing here returns a password to an HTTP caller:
//! [`CredentialRow`] has none.

use super::{Result, Store};
use crate::secrets::{container_registry_credential_row, registry_credential_row, Keyring, Sealed};
use chrono::{DateTime, Utc};
use skiff_core::{Password, RegistryCredential};
use skiff_proto as pb;
use std::collections::HashMap;
use uuid::Uuid;

/// A stored credential as a tenant may see it: no password.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CredentialRow {
    pub server: String,
    pub username: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    Replaced,
}

/// A credential with its password still sealed, and the row it is bound to.
#[derive(Clone, sqlx::FromRow)]
pub struct SealedCredential {
    pub id: Uuid,
    pub server: String,
    pub username: String,
    pub password_kid: String,
    pub password_sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedCredential")
            .field("id", &self.id)
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password_kid", &self.password_kid)
            .finish()
    }
}

/// Whose a sealed credential is: what its password is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A tenant's stored credential (`registry_credentials`).
    Tenant,
    /// A container's own (`container_registry_credentials`).
    Container,
}

impl SealedCredential {
    /// Opens the password, as the worker protocol carries it.
    pub fn open(
        &self,
        owner: Owner,
        keyring: &Keyring,
    ) -> std::result::Result<pb::RegistryCredential, crate::secrets::SecretError> {
        let row = match owner {
            Owner::Tenant => registry_credential_row(self.id),
            Owner::Container => container_registry_credential_row(self.id),
        };
        let sealed = Sealed {
            kid: self.password_kid.clone(),
            bytes: self.password_sealed.clone(),
        };
        let plain = keyring.open(&sealed, &row)?;
        let password = String::from_utf8(plain.to_vec()).map_err(|_| {
            crate::secrets::SecretError::Corrupt {
                row,
                kid: self.password_kid.clone(),
            }
        })?;
        Ok(pb::RegistryCredential {
            server: self.server.clone(),
            username: self.username.clone(),
            password,
        })
    }
}

/// The credentials an assignment step may need, still sealed: the
/// containers' own, by container, and the tenants' stored ones, by
/// (tenant, server).
#[derive(Debug, Clone, Default)]
pub struct StepCredentials {
    pub own: HashMap<Uuid, SealedCredential>,
    pub stored: HashMap<(Uuid, String), SealedCredential>,
}

impl StepCredentials {
    /// The credential that applies to a pull of `server` for `container`
    /// of `tenant`: the container's own for that server, else the tenant's.
    pub fn applying(
        &self,
        container: Uuid,
        tenant: Uuid,
        server: &str,
    ) -> Option<(Owner, &SealedCredential)> {
        if let Some(own) = self.own.get(&container).filter(|c| c.server == server) {
            return Some((Owner::Container, own));
        }
        self.stored
            .get(&(tenant, server.to_owned()))
            .map(|c| (Owner::Tenant, c))
    }
}

/// Stores the credential a container's request gave (in the caller's
/// transaction, beside the container's row).
pub(super) async fn insert_for_container(
    conn: &mut sqlx::PgConnection,
    container: Uuid,
    credential: &RegistryCredential,
    keyring: &Keyring,
) -> Result<()> {
    let sealed = keyring.seal(
        credential.password.expose().as_bytes(),
        &container_registry_credential_row(container),
    );
    sqlx::query(
        "INSERT INTO container_registry_credentials \
         (id, server, username, password_kid, password_sealed) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(container)
    .bind(&credential.server)
    .bind(&credential.username)
    .bind(&sealed.kid)
    .bind(&sealed.bytes)
    .execute(conn)
    .await?;
    Ok(())
}

/// Loads, in the caller's transaction, the credentials `wanted` (container,
/// tenant, server) may use.
pub(super) async fn load_for(
    conn: &mut sqlx::PgConnection,
    wanted: &[(Uuid, Uuid, String)],
) -> Result<StepCredentials> {
    if wanted.is_empty() {
        return Ok(StepCredentials::default());
    }
    let containers: Vec<Uuid> = wanted.iter().map(|w| w.0).collect();
    let tenants: Vec<Uuid> = wanted.iter().map(|w| w.1).collect();
    let servers: Vec<&str> = wanted.iter().map(|w| w.2.as_str()).collect();
    let own: Vec<SealedCredential> = sqlx::query_as(
        "SELECT id, server, username, password_kid, password_sealed \
         FROM container_registry_credentials WHERE id = ANY($1)",
    )
    .bind(&containers)
    .fetch_all(&mut *conn)
    .await?;
    let stored: Vec<(Uuid, SealedCredential)> =
        sqlx::query_as::<_, (Uuid, Uuid, String, String, String, Vec<u8>)>(
            "SELECT r.tenant_id, r.id, r.server, r.username, r.password_kid, r.password_sealed \
         FROM registry_credentials r \
         JOIN (SELECT DISTINCT * FROM unnest($1::uuid[], $2::text[])) w (tenant_id, server) \
           ON r.tenant_id = w.tenant_id AND r.server = w.server",
        )
        .bind(&tenants)
        .bind(&servers)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(
            |(tenant, id, server, username, password_kid, password_sealed)| {
                (
                    tenant,
                    SealedCredential {
                        id,
                        server,
                        username,
                        password_kid,
                        password_sealed,
                    },
                )
            },
        )
        .collect();
    Ok(StepCredentials {
        own: own.into_iter().map(|c| (c.id, c)).collect(),
        stored: stored
            .into_iter()
            .map(|(tenant, c)| ((tenant, c.server.clone()), c))
            .collect(),
    })
}

impl Store {
    /// The tenant's stored credentials, by server.
    pub async fn registry_credentials(&self, tenant: Uuid) -> Result<Vec<CredentialRow>> {
        Ok(sqlx::query_as(
            "SELECT server, username, created_at, updated_at FROM registry_credentials \
             WHERE tenant_id = $1 ORDER BY server",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Creates or replaces the tenant's credential for `server` (checked,
    /// lower case), sealing the password.
    pub async fn put_registry_credential(
        &self,
        tenant: Uuid,
        server: &str,
        username: &str,
        password: &Password,
    ) -> Result<(Put, CredentialRow)> {
        let mut tx = self.pool.begin().await?;
        // Serializes PUTs of one (tenant, server): the row's id is what its
        // password is bound to, so it must be known before sealing.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 13))")
            .bind(format!("registry_credentials/{tenant}/{server}"))
            .execute(&mut *tx)
            .await?;
        let existing: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM registry_credentials WHERE tenant_id = $1 AND server = $2",
        )
        .bind(tenant)
        .bind(server)
        .fetch_optional(&mut *tx)
        .await?;
        let (put, id) = match existing {
            Some(id) => (Put::Replaced, id),
            None => (Put::Created, Uuid::now_v7()),
        };
        let sealed = self
            .keyring
            .seal(password.expose().as_bytes(), &registry_credential_row(id));
        let row: CredentialRow = sqlx::query_as(
            "INSERT INTO registry_credentials \
             (id, tenant_id, server, username, password_kid, password_sealed) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, \
               password_kid = EXCLUDED.password_kid, password_sealed = EXCLUDED.password_sealed, \
               updated_at = now() \
             RETURNING server, username, created_at, updated_at",
        )
        .bind(id)
        .bind(tenant)
        .bind(server)
        .bind(username)
        .bind(&sealed.kid)
        .bind(&sealed.bytes)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((put, row))
    }

    /// Deletes the tenant's credential for `server`; false when it had none.
    pub async fn delete_registry_credential(&self, tenant: Uuid, server: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM registry_credentials WHERE tenant_id = $1 AND server = $2")
                .bind(tenant)
                .bind(server)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The tenant's stored credential for `server`, opened (for a prewarm).
    pub async fn stored_registry_credential(
        &self,
        tenant: Uuid,
        server: &str,
    ) -> Result<Option<pb::RegistryCredential>> {
        let sealed: Option<SealedCredential> = sqlx::query_as(
            "SELECT id, server, username, password_kid, password_sealed \
             FROM registry_credentials WHERE tenant_id = $1 AND server = $2",
        )
        .bind(tenant)
        .bind(server)
        .fetch_optional(&self.pool)
        .await?;
        Ok(sealed
            .map(|c| c.open(Owner::Tenant, &self.keyring))
            .transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring::parse(&Keyring::new_key_line("k1").unwrap()).unwrap()
    }

    fn sealed(keyring: &Keyring, owner: Owner, id: Uuid, server: &str) -> SealedCredential {
        let row = match owner {
            Owner::Tenant => registry_credential_row(id),
            Owner::Container => container_registry_credential_row(id),
        };
        let s = keyring.seal(b"hunter2", &row);
        SealedCredential {
            id,
            server: server.into(),
            username: "bob".into(),
            password_kid: s.kid,
            password_sealed: s.bytes,
        }
    }

    #[test]
    fn a_containers_own_credential_for_the_server_comes_before_the_tenants() {
        let k = keyring();
        let (container, tenant) = (Uuid::now_v7(), Uuid::now_v7());
        let mut step = StepCredentials::default();
        step.stored.insert(
            (tenant, "r.example".into()),
            sealed(&k, Owner::Tenant, Uuid::now_v7(), "r.example"),
        );
        let (owner, _) = step.applying(container, tenant, "r.example").unwrap();
        assert_eq!(owner, Owner::Tenant);
        assert!(step.applying(container, tenant, "other.example").is_none());
        assert!(step
            .applying(container, Uuid::now_v7(), "r.example")
            .is_none());
        step.own.insert(
            container,
            sealed(&k, Owner::Container, container, "r.example"),
        );
        let (owner, _) = step.applying(container, tenant, "r.example").unwrap();
        assert_eq!(owner, Owner::Container);
        // Its own credential is for its image's server only.
        step.own.insert(
            container,
            sealed(&k, Owner::Container, container, "elsewhere.example"),
        );
        let (owner, _) = step.applying(container, tenant, "r.example").unwrap();
        assert_eq!(owner, Owner::Tenant);
    }

    #[test]
    fn a_password_opens_for_its_own_row_only_and_never_prints() {
        let k = keyring();
        let id = Uuid::now_v7();
        let own = sealed(&k, Owner::Container, id, "r.example");
        let opened = own.open(Owner::Container, &k).unwrap();
        assert_eq!(
            (opened.username.as_str(), opened.password.as_str()),
            ("bob", "hunter2")
        );
        // Bound to its row: as a tenant's, or moved to another id, it does not open.
        assert!(own.open(Owner::Tenant, &k).is_err());
        let moved = SealedCredential {
            id: Uuid::now_v7(),
            ..own.clone()
        };
        assert!(moved.open(Owner::Container, &k).is_err());
        assert!(!format!("{own:?}").contains("hunter2"));
        assert!(!format!("{opened:?}").contains("hunter2"));
    }
}
