//! The test registry behind basic auth that `deploy/local/test.sh` starts
//! (htpasswd, holding the sample image): where it is and its login, from
//! `SKIFF_TEST_AUTH_REGISTRY`, `SKIFF_TEST_AUTH_REGISTRY_USER` and
//! `SKIFF_TEST_AUTH_REGISTRY_PASSWORD`.

use serde_json::{json, Value};

/// The registry with auth and its login.
#[derive(Clone)]
pub struct AuthRegistry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for AuthRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRegistry")
            .field("host", &self.host)
            .field("user", &self.user)
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

    /// The sample image in it.
    pub fn image(&self) -> String {
        format!("{}/skiff/busybox:latest", self.host)
    }

    /// A request's `image_registry_credentials` with `password`.
    pub fn credentials_with(&self, password: &str) -> Value {
        json!([{ "server": self.host, "username": self.user, "password": password }])
    }

    /// A request's `image_registry_credentials` with the right password.
    pub fn credentials(&self) -> Value {
        self.credentials_with(&self.password)
    }
}
