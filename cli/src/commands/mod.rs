//! One module per group of commands; [`run`] picks the one asked for.
//! Each returns the process's exit code (a container's own, for `run` and
//! `exec`), or an [`Error`] that `main` prints.
//!
//! Layout:
//! - [`run`]: `skiff run` (create, phases, logs, exit code, `--rm`).
//! - [`containers`]: `ps`, `inspect`, `logs`, `stop|start|restart|rm`,
//!   `wait`, `exec`.
//! - [`attach`]: `skiff exec -i [-t]`, the interactive exec's WebSocket.
//! - [`events`]: `skiff events [-f]`.
//! - [`jobs`]: `skiff job run|ls|get|cancel|tasks`.
//! - [`groups`]: `skiff group create|ls|get|stop|start|restart|rm`.
//! - [`usage`]: `skiff usage`.
//! - [`admin`]: `skiff hosts`, `skiff tenants create` (admin token).
//! - [`login`]: `skiff login`.

pub mod admin;
pub mod attach;
pub mod containers;
pub mod events;
pub mod groups;
pub mod jobs;
pub mod login;
pub mod run;
pub mod usage;

use crate::args::{Cli, Command, GroupCommand, JobCommand, TenantsCommand};
use crate::client::Client;
use crate::config::{self, Overrides};
use crate::output::Format;
use crate::Error;
use clap::CommandFactory;

/// What every command gets: the client and the output format.
pub struct Ctx {
    pub client: Client,
    pub format: Format,
}

/// Runs the command line; returns the exit code.
pub async fn run(cli: Cli) -> Result<i32, Error> {
    let overrides = Overrides {
        profile: cli.profile.clone(),
        api: cli.api.clone(),
        token: cli.token.clone(),
    };
    let admin = matches!(cli.command, Command::Hosts | Command::Tenants(_));
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "skiff", &mut std::io::stdout());
            return Ok(0);
        }
        Command::Login(_) => return login::login(&overrides).await,
        _ => {}
    }
    let mut target = config::resolve(&config::dir()?, &overrides)?;
    if admin {
        // The admin routes take the admin token; local.env carries both.
        if let Ok(token) = std::env::var("SKIFF_ADMIN_TOKEN") {
            target.token = token;
        }
    }
    let ctx = Ctx {
        client: Client::new(&target)?,
        format: cli.output,
    };
    match cli.command {
        Command::Run(args) => run::run(&ctx, args).await,
        Command::Ps(args) => containers::ps(&ctx, args).await,
        Command::Inspect(args) => containers::inspect(&ctx, args).await,
        Command::Logs(args) => containers::logs(&ctx, args).await,
        Command::Stop(args) => containers::action(&ctx, "stop", args).await,
        Command::Start(args) => containers::action(&ctx, "start", args).await,
        Command::Restart(args) => containers::action(&ctx, "restart", args).await,
        Command::Rm(args) => containers::rm(&ctx, args).await,
        Command::Wait(args) => containers::wait(&ctx, args).await,
        Command::Exec(args) => containers::exec(&ctx, args).await,
        Command::Events(args) => events::events(&ctx, args).await,
        Command::Job(JobCommand::Run(args)) => jobs::run(&ctx, args).await,
        Command::Job(JobCommand::Ls) => jobs::ls(&ctx).await,
        Command::Job(JobCommand::Get { job }) => jobs::get(&ctx, &job).await,
        Command::Job(JobCommand::Cancel { job }) => jobs::cancel(&ctx, &job).await,
        Command::Job(JobCommand::Tasks { job }) => jobs::tasks(&ctx, &job).await,
        Command::Group(GroupCommand::Create { file }) => groups::create(&ctx, &file).await,
        Command::Group(GroupCommand::Ls) => groups::ls(&ctx).await,
        Command::Group(GroupCommand::Get { group }) => groups::get(&ctx, &group).await,
        Command::Group(GroupCommand::Stop { group }) => groups::action(&ctx, "stop", &group).await,
        Command::Group(GroupCommand::Start { group }) => {
            groups::action(&ctx, "start", &group).await
        }
        Command::Group(GroupCommand::Restart { group }) => {
            groups::action(&ctx, "restart", &group).await
        }
        Command::Group(GroupCommand::Rm { group }) => groups::rm(&ctx, &group).await,
        Command::Usage(args) => usage::usage(&ctx, args).await,
        Command::Hosts => admin::hosts(&ctx).await,
        Command::Tenants(TenantsCommand::Create { name }) => {
            admin::create_tenant(&ctx, &name).await
        }
        Command::Login(_) | Command::Completions { .. } => unreachable!("handled above"),
    }
}
