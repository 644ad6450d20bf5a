//! Tenants and their API tokens (stored as SHA-256 hashes).

use super::{Result, Store};
use uuid::Uuid;

impl Store {
    pub async fn create_tenant(&self, name: &str, token_sha256: &[u8]) -> Result<Uuid> {
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO api_tokens (token_sha256, tenant_id) VALUES ($1, $2)")
            .bind(token_sha256)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn tenant_for_token(&self, token_sha256: &[u8]) -> Result<Option<Uuid>> {
        Ok(
            sqlx::query_scalar("SELECT tenant_id FROM api_tokens WHERE token_sha256 = $1")
                .bind(token_sha256)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
