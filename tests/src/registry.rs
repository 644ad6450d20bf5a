//! The test registries with auth that `deploy/local/test.sh` starts, both
//! holding the sample image: one behind basic auth (htpasswd,
//! `SKIFF_TEST_AUTH_REGISTRY`), one behind the distribution spec's bearer
//! tokens (`SKIFF_TEST_TOKEN_REGISTRY`, its token server at
//! `SKIFF_TEST_TOKEN_SERVER`), with one login
//! (`SKIFF_TEST_AUTH_REGISTRY_USER`, `SKIFF_TEST_AUTH_REGISTRY_PASSWORD`).

use serde_json::{json, Value};

/// The registry with auth and its login.
#[derive(Clone)]
pub struct AuthRegistry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    pub user: String,
    pub password: String,
    /// The registry with token auth (`127.0.0.1:<port>`).
    pub token_registry: String,
    /// Its token server (`127.0.0.1:<port>`).
    pub token_server: String,
}

impl std::fmt::Debug for AuthRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRegistry")
            .field("host", &self.host)
            .field("user", &self.user)
            .field("token_registry", &self.token_registry)
            .field("token_server", &self.token_server)
            .finish()
    }
}

impl AuthRegistry {
    /// The registry test.sh exported, if it did.
    pub fn from_env() -> Option<Self> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        Some(Self {
            host: var("SKIFF_TEST_AUTH_REGISTRY")?,
            user: var("SKIFF_TEST_AUTH_REGISTRY_USER")?,
            password: var("SKIFF_TEST_AUTH_REGISTRY_PASSWORD")?,
            token_registry: var("SKIFF_TEST_TOKEN_REGISTRY")?,
            token_server: var("SKIFF_TEST_TOKEN_SERVER")?,
        })
    }

    /// The registry test.sh exported; panics (never skips) without it.
    pub fn get() -> Self {
        Self::from_env().unwrap_or_else(|| {
            panic!(
                "SKIFF_TEST_AUTH_REGISTRY(_USER, _PASSWORD) not set: run the tests with \
                 deploy/local/test.sh, which starts the registry with auth"
            )
        })
    }

    /// The sample image in the registry with basic auth.
    pub fn image(&self) -> String {
        format!("{}/skiff/busybox:latest", self.host)
    }

    /// The sample image in the registry with token auth.
    pub fn token_image(&self) -> String {
        format!("{}/skiff/busybox:latest", self.token_registry)
    }

    /// A request's `image_registry_credentials` for `server` with `password`.
    pub fn credentials_for(&self, server: &str, password: &str) -> Value {
        json!([{ "server": server, "username": self.user, "password": password }])
    }

    /// A request's `image_registry_credentials` with `password`.
    pub fn credentials_with(&self, password: &str) -> Value {
        self.credentials_for(&self.host, password)
    }

    /// What hosts must reach over plain HTTP: both registries and the
    /// token server.
    pub fn insecure(&self) -> String {
        format!(
            "{},{},{}",
            self.host, self.token_registry, self.token_server
        )
    }

    /// A request's `image_registry_credentials` with the right password.
    pub fn credentials(&self) -> Value {
        self.credentials_with(&self.password)
    }
}
