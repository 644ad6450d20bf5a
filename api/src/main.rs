//! `skiff-api`: parse config, set up tracing, serve until SIGINT/SIGTERM.
//! `skiff-api ca init --dir DIR` creates the worker channel's CA instead
//! (an explicit step: no replica ever creates one by itself).

use anyhow::Context;
use clap::Parser;
use skiff_api::config::ApiConfig;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "skiff-api ca",
    about = "The worker channel's certificate authority"
)]
enum CaCommand {
    /// Create a CA: DIR/ca.crt and DIR/ca.key (mode 0600). Refuses to
    /// overwrite either. Point SKIFF_CA_CERT and SKIFF_CA_KEY at them.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// How long the CA certificate is valid.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    if std::env::args_os().nth(1).is_some_and(|a| a == "ca") {
        let CaCommand::Init { dir, days } = CaCommand::parse_from(std::env::args_os().skip(1));
        let (cert, key) = skiff_api::trust::init_ca(&dir, Duration::from_secs(days * 86_400))?;
        println!(
            "SKIFF_CA_CERT={}\nSKIFF_CA_KEY={}",
            cert.display(),
            key.display()
        );
        return Ok(());
    }
    let config = ApiConfig::parse();
    let http = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", config.listen))?;
    let grpc = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("binding the gRPC listener on {}", config.grpc_listen))?;
    tracing::info!(grpc = %config.grpc_listen, "gRPC endpoint for workers");
    skiff_api::serve(config, http, grpc, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
