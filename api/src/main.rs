//! `skiff-api`: parse config, set up tracing, serve until SIGINT/SIGTERM.
//! `skiff-api ca init --dir DIR` creates the worker channel's CA instead
//! (an explicit step: no replica ever creates one by itself);
//! `skiff-api secrets new-key|reencrypt` manages the keyring of secrets at rest.

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

#[derive(Debug, Parser)]
#[command(
    name = "skiff-api secrets",
    about = "The keyring that seals secrets at rest"
)]
enum SecretsCommand {
    /// Print a keyring line with a new random key: `<id>:<base64 key>`.
    /// Put it first in the keyring file to seal new secrets under it.
    NewKey {
        #[arg(long)]
        id: String,
    },
    /// Re-seal every stored secret under the keyring's first key (and seal
    /// any left in plain text). Afterwards the other keys can be removed.
    Reencrypt {
        #[arg(long, env = "SKIFF_DATABASE_URL")]
        database_url: String,
        #[command(flatten)]
        secrets: skiff_api::config::SecretsConfig,
    },
}

async fn secrets_command(command: SecretsCommand) -> anyhow::Result<()> {
    match command {
        SecretsCommand::NewKey { id } => {
            println!("{}", skiff_api::secrets::Keyring::new_key_line(&id)?);
        }
        SecretsCommand::Reencrypt {
            database_url,
            secrets,
        } => {
            let keyring = secrets.keyring()?;
            let current = keyring.current().to_owned();
            let store = skiff_api::store::Store::connect(
                &database_url,
                2,
                Duration::from_secs(30),
                keyring,
            )
            .await
            .context("connecting to the database")?;
            let done = store.reseal_secrets().await?;
            println!(
                "re-sealed under key {current}: {} containers, {} jobs, {} registry credentials",
                done.containers, done.jobs, done.registry_credentials
            );
            if !done.unopenable.is_empty() {
                anyhow::bail!(
                    "{} rows did not open and were left under their old key (keep that key): {:?}",
                    done.unopenable.len(),
                    done.unopenable
                );
            }
        }
    }
    Ok(())
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
    if std::env::args_os().nth(1).is_some_and(|a| a == "secrets") {
        return secrets_command(SecretsCommand::parse_from(std::env::args_os().skip(1))).await;
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
