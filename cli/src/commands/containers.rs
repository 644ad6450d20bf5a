//! The container commands besides `run`: `ps`, `inspect`, `logs`,
//! `stop|start|restart`, `rm`, `wait` and `exec` (one-shot; `-i`/`-t` hand
//! over to [`super::attach`]). Each takes ids, names or
//! unique id prefixes ([`crate::client::Client::resolve`]).

use super::run::{stream_logs, wait_exited};
use super::Ctx;
use crate::args::{ExecArgs, IdsArgs, LogsArgs, PsArgs};
use crate::client::Fetched;
use crate::output::{self, age, or_dash, print_one, print_value, state_colour, Format};
use crate::{parse, Error};
use serde_json::{json, Value};
use skiff_api::model::{ContainerView, ExecRequest, ExecResult};
use skiff_core::ContainerState;

/// The states `ps` shows without `-a`: everything not finished.
const LIVE: [ContainerState; 6] = [
    ContainerState::Pending,
    ContainerState::Scheduled,
    ContainerState::Pulling,
    ContainerState::Starting,
    ContainerState::Running,
    ContainerState::Stopping,
];

pub async fn ps(ctx: &Ctx, args: PsArgs) -> Result<i32, Error> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if !args.all {
        query.extend(LIVE.iter().map(|s| ("state", s.as_str().to_owned())));
    }
    for label in &args.labels {
        let (k, v) = parse::key_value("--label", label)?;
        query.push(("label", format!("{k}={v}")));
    }
    let containers = ctx.client.containers(&query).await?;
    print_containers(ctx.format, &containers)
}

/// `ps`'s table (or the objects, for json/yaml).
pub fn print_containers(
    format: Format,
    containers: &[Fetched<ContainerView>],
) -> Result<i32, Error> {
    if matches!(format, Format::Json | Format::Yaml) {
        let raws: Vec<Value> = containers.iter().map(|c| c.raw.clone()).collect();
        print_value(format, &Value::Array(raws))?;
        return Ok(0);
    }
    let now = chrono::Utc::now();
    let rows = containers
        .iter()
        .map(|c| container_row(&c.typed, now, format == Format::Table))
        .collect();
    crate::outln!(
        "{}",
        output::rows(
            format,
            &["id", "name", "image", "state", "age", "cpu", "memory", "exit"],
            rows
        )?
    );
    Ok(0)
}

fn container_row(
    c: &ContainerView,
    now: chrono::DateTime<chrono::Utc>,
    colour: bool,
) -> Vec<String> {
    let state = c.state.as_str();
    vec![
        c.id.to_string(),
        c.name.clone(),
        c.image.clone(),
        if colour {
            state_colour(state)
        } else {
            state.to_owned()
        },
        age(c.created_at, now),
        format!("{}", c.cpu),
        format!("{}Mi", c.memory_mib),
        or_dash(c.exit_code),
    ]
}

pub async fn inspect(ctx: &Ctx, args: IdsArgs) -> Result<i32, Error> {
    let mut all = Vec::new();
    for name in &args.containers {
        let id = ctx.client.resolve(name).await?;
        all.push(ctx.client.container(&id).await?.raw);
    }
    // Objects are not tables: JSON unless YAML is asked for.
    let format = if ctx.format == Format::Yaml {
        Format::Yaml
    } else {
        Format::Json
    };
    let value = if all.len() == 1 {
        all.remove(0)
    } else {
        Value::Array(all)
    };
    print_value(format, &value)?;
    Ok(0)
}

pub async fn logs(ctx: &Ctx, args: LogsArgs) -> Result<i32, Error> {
    let id = ctx.client.resolve(&args.container).await?;
    stream_logs(&ctx.client, &id, args.follow, args.tail).await?;
    Ok(0)
}

/// `stop`, `start`, `restart`: the POST, then the id (or the objects).
pub async fn action(ctx: &Ctx, verb: &str, args: IdsArgs) -> Result<i32, Error> {
    for name in &args.containers {
        let id = ctx.client.resolve(name).await?;
        let done: Fetched<ContainerView> = ctx
            .client
            .post_empty(&format!("/v1/containers/{id}/{verb}"))
            .await?;
        print_one(ctx.format, &id, &done.raw)?;
    }
    Ok(0)
}

pub async fn rm(ctx: &Ctx, args: IdsArgs) -> Result<i32, Error> {
    for name in &args.containers {
        let id = ctx.client.resolve(name).await?;
        let answer = ctx.client.delete(&format!("/v1/containers/{id}")).await?;
        print_one(
            ctx.format,
            &id,
            &answer.unwrap_or_else(|| json!({"id": id, "deleted": true})),
        )?;
    }
    Ok(0)
}

/// Waits for each to exit; prints its exit code (`-` when it has none).
pub async fn wait(ctx: &Ctx, args: IdsArgs) -> Result<i32, Error> {
    for name in &args.containers {
        let id = ctx.client.resolve(name).await?;
        let done = wait_exited(&ctx.client, &id).await?;
        match ctx.format {
            Format::Json | Format::Yaml => print_value(
                ctx.format,
                &json!({"id": id, "state": done.state, "exit_code": done.exit_code}),
            )?,
            _ => crate::outln!("{}", or_dash(done.exit_code)),
        }
    }
    Ok(0)
}

/// A one-shot exec: its stdout and stderr, and its exit code as ours.
pub async fn exec(ctx: &Ctx, args: ExecArgs) -> Result<i32, Error> {
    let id = ctx.client.resolve(&args.container).await?;
    if args.interactive || args.tty {
        return super::attach::interactive(
            &ctx.client,
            &id,
            &args.command,
            args.interactive,
            args.tty,
        )
        .await;
    }
    let body = ExecRequest {
        command: args.command,
        env: parse::key_values("--env", &args.env)?,
        timeout_s: args.timeout,
    };
    let result: Fetched<ExecResult> = ctx
        .client
        .post(&format!("/v1/containers/{id}/exec"), &body)
        .await?;
    if matches!(ctx.format, Format::Json | Format::Yaml) {
        print_value(ctx.format, &result.raw)?;
        return Ok(result.typed.exit_code);
    }
    let r = result.typed;
    crate::out!("{}", r.stdout);
    eprint!("{}", r.stderr);
    for (stream, cut) in [
        ("stdout", r.stdout_truncated),
        ("stderr", r.stderr_truncated),
    ] {
        if cut {
            eprintln!("skiff: {stream} was cut at 1 MiB");
        }
    }
    if r.timed_out {
        eprintln!("skiff: killed past its timeout");
    }
    Ok(r.exit_code)
}
