//! `skiff-worker`: parse config, set up tracing, run until SIGINT/SIGTERM.
//! Stopping the worker leaves containers running; a new worker re-adopts them.

use anyhow::Context;
use clap::Parser;
use skiff_worker::config::WorkerConfig;
use tokio::net::TcpListener;

/// jemalloc returns freed memory to the kernel over time; glibc's malloc
/// kept the buffers of a large image pull resident for good, which is what
/// dominated the worker's RSS (the containers themselves cost it ~1 KB each).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = WorkerConfig::parse();
    if config.teardown_network {
        let net = config
            .network()
            .context("--teardown-network: SKIFF_NETWORK_ENABLED is false")?;
        let bridge = net.bridge.clone();
        skiff_worker::net::Network::new(net)?
            .teardown_all()
            .await
            .with_context(|| format!("tearing down the networks of bridge {bridge}"))?;
        tracing::info!(%bridge, "container networks torn down");
        return Ok(());
    }
    let listener = TcpListener::bind(config.agent_listen)
        .await
        .with_context(|| format!("binding the agent endpoint on {}", config.agent_listen))?;
    skiff_worker::serve(config, listener, shutdown_signal()).await?;
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
