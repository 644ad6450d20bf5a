//! The command line: every command, flag and its environment variable.

use crate::output::Format;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "skiff",
    version,
    about = "Run containers on a skiff platform",
    long_about = "Run containers on a skiff platform.\n\nThe API and token come from \
        SKIFF_API and SKIFF_TOKEN when set, else from the profile `skiff login` saved."
)]
pub struct Cli {
    /// The profile to use (see `skiff login`).
    #[arg(long, global = true, env = "SKIFF_PROFILE")]
    pub profile: Option<String>,
    /// The API's URL (overrides the profile).
    #[arg(long, global = true, env = "SKIFF_API", hide_env_values = true)]
    pub api: Option<String>,
    /// The bearer token (overrides the profile).
    #[arg(long, global = true, env = "SKIFF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How answers are printed.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a container, show its start, stream its logs, exit with its code.
    Run(RunArgs),
    /// List containers (running ones; -a for all).
    Ps(PsArgs),
    /// Show containers' full objects.
    Inspect(IdsArgs),
    /// Print a container's logs.
    Logs(LogsArgs),
    /// Stop containers (SIGTERM, then SIGKILL after their stop timeout).
    Stop(IdsArgs),
    /// Start a new run of stopped or finished containers.
    Start(IdsArgs),
    /// Stop and start containers again.
    Restart(IdsArgs),
    /// Delete containers (a running one is stopped first).
    Rm(IdsArgs),
    /// Wait until containers exit; print their exit codes.
    Wait(IdsArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// The tenant's event log (-f to follow it).
    Events(EventsArgs),
    /// Jobs: many tasks of one template.
    #[command(subcommand)]
    Job(JobCommand),
    /// Container groups: members placed together, sharing localhost.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Usage and cost over a window.
    Usage(UsageArgs),
    /// The pool's hosts (admin token).
    Hosts,
    /// Tenants (admin token).
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Save an API URL (--api, required) and token (--token, else stdin) as a profile.
    Login(LoginArgs),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// What a container runs with: shared by `run` and `job run`.
#[derive(Debug, Args)]
pub struct ContainerArgs {
    /// vCPUs (0.1 to 4).
    #[arg(long, default_value_t = 0.5)]
    pub cpu: f64,
    /// Memory: MiB, or with a suffix (512m, 1g).
    #[arg(long, short = 'm', default_value = "256")]
    pub memory: String,
    /// An environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// An environment variable the API never shows again, KEY=VALUE.
    #[arg(long = "secret-env", value_name = "KEY=VALUE")]
    pub secret_env: Vec<String>,
    /// A label, KEY=VALUE (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Longest a run may last, in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u32>,
    /// The image, e.g. registry:5000/repo:tag.
    pub image: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The container's name (unique; generated when absent).
    #[arg(long)]
    pub name: Option<String>,
    /// never (the default), always, on-failure or on-failure:N.
    #[arg(long, default_value = "never")]
    pub restart: String,
    /// Publish a port: PORT or HOST_PORT:PORT, with /tcp or /udp.
    #[arg(long = "port", short = 'p', value_name = "[HOST:]PORT[/PROTO]")]
    pub ports: Vec<String>,
    /// Print the id and return at once.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Delete the container once it exits (or on Ctrl-C).
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub container: ContainerArgs,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// All containers, finished ones too.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Only containers with this label, KEY=VALUE (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IdsArgs {
    /// Container ids, names, or unique id prefixes.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep following new output until the container exits.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Interactive: stdin goes to the process (over a WebSocket).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// A pseudo-terminal for the process (with -i, this terminal goes raw).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Seconds before it is killed (default 30).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u32>,
    /// KEY=VALUE merged over the container's environment.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    pub container: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Follow the log live (Server-Sent Events).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only this container's events (id, name or id prefix).
    #[arg(long)]
    pub container: Option<String>,
    /// Only after this cursor.
    #[arg(long)]
    pub since: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run a job and show its tasks' progress until it ends.
    Run(JobRunArgs),
    /// List jobs.
    Ls,
    /// Show a job.
    Get { job: String },
    /// Cancel a job (running tasks are stopped).
    Cancel { job: String },
    /// A job's task containers (every attempt).
    Tasks { job: String },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group from its JSON request (the body of POST /v1/groups).
    Create {
        /// The request's file (`-`: stdin).
        #[arg(long, short = 'f')]
        file: String,
    },
    /// List groups.
    Ls,
    /// Show a group and its members.
    Get { group: String },
    /// Stop every member.
    Stop { group: String },
    /// Start every member again.
    Start { group: String },
    /// Stop and start every member.
    Restart { group: String },
    /// Delete a group and its members (running ones are stopped first).
    Rm { group: String },
}

#[derive(Debug, Args)]
pub struct JobRunArgs {
    /// How many tasks.
    #[arg(long)]
    pub count: i32,
    /// Most tasks at once (default: all).
    #[arg(long)]
    pub parallelism: Option<i32>,
    /// New attempts of a failed task.
    #[arg(long)]
    pub max_retries: Option<i32>,
    /// The job's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Print the job's id and return at once.
    #[arg(long, short = 'd')]
    pub detach: bool,
    #[command(flatten)]
    pub container: ContainerArgs,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Start (RFC 3339 or YYYY-MM-DD; default: the first of this month).
    #[arg(long)]
    pub from: Option<String>,
    /// End, exclusive (RFC 3339 or YYYY-MM-DD; default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// container, job, day, hour or label:KEY.
    #[arg(long)]
    pub group_by: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant; prints its token (shown only once).
    Create { name: String },
}

/// `skiff login` takes the global `--api` (required) and `--token` (else
/// read from stdin), so it has no flags of its own.
#[derive(Debug, Args)]
pub struct LoginArgs {}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        // clap's own checks: no flag or short name twice, valid defaults.
        Cli::command().debug_assert();
    }

    #[test]
    fn the_command_comes_after_a_double_dash() {
        let cli = Cli::try_parse_from(["skiff", "run", "-d", "img", "--", "ls", "-l"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert!(run.detach);
        assert_eq!(run.container.command, ["ls", "-l"]);
        assert_eq!(run.restart, "never");
    }
}
