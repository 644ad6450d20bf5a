//! `skiff-api`: parse config, set up tracing, serve until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use skiff_api::config::ApiConfig;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
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
