//! The API server's configuration: flags, with `SKIFF_*` environment variables.

use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "skiff-api",
    about = "skiff control plane: REST API, scheduler, worker gRPC endpoint"
)]
pub struct ApiConfig {
    /// Address of the REST API.
    #[arg(long, env = "SKIFF_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the gRPC endpoint that workers dial.
    #[arg(long, env = "SKIFF_GRPC_LISTEN", default_value = "127.0.0.1:8081")]
    pub grpc_listen: SocketAddr,

    /// PostgreSQL URL; migrations run at start.
    #[arg(long, env = "SKIFF_DATABASE_URL")]
    pub database_url: String,

    /// Token for admin routes (creating tenants).
    #[arg(long, env = "SKIFF_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,

    /// A host that has not heartbeated for this long is lost; its containers fail with HostLost.
    #[arg(long, env = "SKIFF_HOST_LOST_AFTER_S", default_value_t = 30)]
    pub host_lost_after_s: u64,

    /// Default price per vCPU-second in nano-units (used when the rate card is empty).
    #[arg(long, env = "SKIFF_PRICE_VCPU_SECOND_NANO", default_value_t = 11_300)]
    pub price_vcpu_second_nano: i64,

    /// Default price per GiB-second in nano-units (used when the rate card is empty).
    #[arg(long, env = "SKIFF_PRICE_GIB_SECOND_NANO", default_value_t = 1_240)]
    pub price_gib_second_nano: i64,

    /// Maximum PostgreSQL connections.
    #[arg(long, env = "SKIFF_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

impl ApiConfig {
    pub fn host_lost_after(&self) -> Duration {
        Duration::from_secs(self.host_lost_after_s)
    }

    /// Fails fast on settings that would only break later.
    pub fn validate(&self) -> Result<(), String> {
        if self.admin_token.len() < 16 {
            return Err("SKIFF_ADMIN_TOKEN must be at least 16 characters".into());
        }
        if self.host_lost_after_s < 5 {
            return Err("SKIFF_HOST_LOST_AFTER_S must be at least 5".into());
        }
        Ok(())
    }
}
