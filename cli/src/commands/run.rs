//! `skiff run`: creates the container, shows its start phase by phase
//! ([`crate::progress`]), streams its logs to stdout, waits for its exit and
//! exits with its code, as `docker run` does. `-d` prints the id instead;
//! `--rm` deletes it at the end. Ctrl-C stops following (and with `--rm`
//! stops and deletes the container).

use super::Ctx;
use crate::args::{ContainerArgs, RunArgs};
use crate::client::{Client, Fetched};
use crate::parse;
use crate::progress::Display;
use crate::Error;
use futures::StreamExt;
use reqwest::Method;
use skiff_api::model::{ContainerView, CreateContainer, PlacementRequest};
use skiff_core::{ContainerState, SecretEnv};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How often the object is read while the container starts.
const POLL: Duration = Duration::from_millis(150);
/// `docker run`'s code when the container could not run at all.
pub const EXIT_NOT_RUN: i32 = 125;
/// The shell's code for a process ended by SIGINT.
const EXIT_INTERRUPTED: i32 = 130;

/// The request body of a container (`run`) or of a job's template.
pub fn request(args: &ContainerArgs, run: Option<&RunArgs>) -> Result<CreateContainer, Error> {
    let (restart_policy, max_restarts) = match run {
        Some(run) => {
            let (policy, max) = parse::restart(&run.restart)?;
            (Some(policy), max)
        }
        None => (None, None),
    };
    let ports = match run {
        Some(run) if !run.ports.is_empty() => Some(
            run.ports
                .iter()
                .map(|p| parse::port(p))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => None,
    };
    Ok(CreateContainer {
        name: run.and_then(|r| r.name.clone()),
        image: args.image.clone(),
        image_registry_credentials: None,
        command: (!args.command.is_empty()).then(|| args.command.clone()),
        env: parse::key_values("--env", &args.env)?,
        secure_env: parse::key_values("--secret-env", &args.secret_env)?.map(SecretEnv),
        cpu: args.cpu,
        memory_mib: parse::memory_mib(&args.memory)?,
        restart_policy,
        max_restarts,
        stop_timeout_s: None,
        timeout_s: args.timeout,
        max_cost: None,
        notify_url: None,
        labels: parse::key_values("--label", &args.labels)?,
        max_pending_s: None,
        placement: None::<PlacementRequest>,
        network: None,
        network_group: None,
        read_only_rootfs: None,
        ports,
        volumes: None,
        mounts: None,
        liveness_probe: None,
        readiness_probe: None,
    })
}

pub async fn run(ctx: &Ctx, args: RunArgs) -> Result<i32, Error> {
    let body = request(&args.container, Some(&args))?;
    let created: Fetched<ContainerView> = ctx.client.post("/v1/containers", &body).await?;
    let id = created.typed.id.to_string();
    if args.detach {
        crate::outln!("{id}");
        return Ok(0);
    }
    let outcome = tokio::select! {
        outcome = attach(&ctx.client, &id, created) => outcome,
        _ = tokio::signal::ctrl_c() => {
            if args.rm {
                eprintln!("interrupted: stopping and deleting {id}");
                ctx.client.delete(&format!("/v1/containers/{id}")).await?;
            } else {
                eprintln!("interrupted: {id} goes on (skiff logs -f {id}; skiff rm {id})");
            }
            return Ok(EXIT_INTERRUPTED);
        }
    };
    if args.rm {
        // Whatever the outcome, a --rm container does not outlive the run.
        let deleted = ctx.client.delete(&format!("/v1/containers/{id}")).await;
        if let (Ok(_), Err(e)) = (&outcome, deleted) {
            return Err(e);
        }
    }
    outcome
}

/// Shows the phases, streams the logs, and returns the exit code.
async fn attach(client: &Client, id: &str, created: Fetched<ContainerView>) -> Result<i32, Error> {
    let mut display = Display::new();
    let mut current = created;
    loop {
        display.update(&current.typed);
        let state = current.typed.state;
        if matches!(state, ContainerState::Running | ContainerState::Stopping)
            || state.is_terminal()
        {
            break;
        }
        tokio::time::sleep(POLL).await;
        current = client.container(id).await?;
    }
    display.finish();
    let never_ran = current.typed.state.is_terminal()
        && current.typed.exit_code.is_none()
        && current.typed.timings.start_ms.is_none();
    if never_ran {
        eprintln!("{}", not_run(&current.typed));
        return Ok(EXIT_NOT_RUN);
    }
    follow_logs(client, id, None).await?;
    let finished = wait_exited(client, id).await?;
    Ok(match finished.exit_code {
        Some(code) => code,
        None => {
            eprintln!("{}", not_run(&finished));
            EXIT_NOT_RUN
        }
    })
}

/// `skiff: <id> failed (ImagePullFailed): <message>`.
fn not_run(view: &ContainerView) -> String {
    let mut text = format!("skiff: {} {}", view.id, view.state);
    if let Some(reason) = view.reason {
        text.push_str(&format!(" ({reason})"));
    }
    if let Some(message) = &view.message {
        text.push_str(&format!(": {message}"));
    }
    text
}

/// Streams `GET .../logs?follow=true` to stdout until the server ends it
/// (the container exited).
pub async fn follow_logs(client: &Client, id: &str, tail: Option<u32>) -> Result<(), Error> {
    stream_logs(client, id, true, tail).await
}

pub async fn stream_logs(
    client: &Client,
    id: &str,
    follow: bool,
    tail: Option<u32>,
) -> Result<(), Error> {
    let path = format!("/v1/containers/{id}/logs");
    let mut query = vec![("follow", follow.to_string())];
    if let Some(tail) = tail {
        query.push(("tail", tail.to_string()));
    }
    let response = client
        .send(&path, client.request(Method::GET, &path).query(&query))
        .await?;
    let mut stream = response.bytes_stream();
    let mut stdout = tokio::io::stdout();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| Error::Transport {
            what: "reading the logs of",
            url: client.url(&path),
            source,
        })?;
        let written = stdout.write_all(&chunk).await.and(stdout.flush().await);
        written.map_err(|e| Error::Output(e.to_string()))?;
    }
    Ok(())
}

/// `GET .../wait?for=exited`, asked again while it times out (408).
pub async fn wait_exited(client: &Client, id: &str) -> Result<ContainerView, Error> {
    let path = format!("/v1/containers/{id}/wait");
    loop {
        let query = [("for", "exited".to_string()), ("timeout_s", "600".into())];
        match client.get::<ContainerView>(&path, &query).await {
            Ok(view) => return Ok(view.typed),
            Err(Error::Api { problem }) if problem.status == 408 => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn body(line: &[&str]) -> Result<serde_json::Value, Error> {
        let cli = Cli::try_parse_from(line).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        request(&args.container, Some(&args)).map(|b| serde_json::to_value(b).unwrap())
    }

    #[test]
    fn run_flags_become_the_request_body() {
        let b = body(&[
            "skiff",
            "run",
            "--name",
            "web",
            "-m",
            "1g",
            "-e",
            "A=1",
            "--secret-env",
            "S=x",
            "--label",
            "team=a",
            "-p",
            "8080:80",
            "--restart",
            "on-failure:2",
            "--timeout",
            "60",
            "img",
            "--",
            "sh",
            "-c",
            "echo hi",
        ])
        .unwrap();
        assert_eq!(b["name"], "web");
        assert_eq!(b["memory_mib"], 1024);
        assert_eq!(b["cpu"], 0.5);
        assert_eq!(b["env"]["A"], "1");
        assert_eq!(b["secure_env"]["S"], "x");
        assert_eq!(b["labels"]["team"], "a");
        assert_eq!(b["ports"][0]["host_port"], 8080);
        assert_eq!(b["restart_policy"], "on_failure");
        assert_eq!(b["max_restarts"], 2);
        assert_eq!(b["timeout_s"], 60);
        assert_eq!(b["command"], serde_json::json!(["sh", "-c", "echo hi"]));
    }

    #[test]
    fn defaults_are_docker_like() {
        let b = body(&["skiff", "run", "img"]).unwrap();
        assert_eq!(
            (b["cpu"].as_f64(), b["memory_mib"].as_u64()),
            (Some(0.5), Some(256))
        );
        assert_eq!(b["restart_policy"], "never");
        assert!(b["command"].is_null());
        let err = body(&["skiff", "run", "-m", "12k", "img"]).unwrap_err();
        assert!(err.to_string().contains("--memory"), "{err}");
    }
}
