//! The `skiff` CLI as a user runs it: the binary (built beside `skiff-api`,
//! found the same way) as a subprocess against the main pool, with
//! `SKIFF_API`/`SKIFF_TOKEN` set as `.skiff/local.env` sets them and a
//! private `XDG_CONFIG_HOME`. `run` exits with the container's code and
//! prints its logs; `ps` shows it; `logs -f` follows until the exit; a
//! refused request exits non-zero naming the field; `login` writes a 0600
//! token file; the live phases are drawn on a pseudo-terminal (`script`);
//! exec (one-shot, -i and -it), inspect, events, rm, job run, the group
//! commands (create from a file, ls, get, stop, start, rm), usage and the
//! admin commands answer.

use crate::tenant;
use serde_json::json;
use skiff_e2e::{eventually, id_of, limit, secs, unique, Tenant};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use tokio::process::Command;

/// One test's CLI: a fresh tenant and a config dir of its own (so no
/// profile of the machine is read), removed when dropped.
struct Cli {
    t: Tenant,
    config: PathBuf,
}

impl Cli {
    async fn new(name: &str) -> Self {
        let t = tenant().await;
        let config = std::env::temp_dir().join(unique(&format!("skiff-cli-{name}")));
        std::fs::create_dir_all(&config).expect("a config dir");
        Self { t, config }
    }

    /// The `skiff` binary: beside `skiff-api` in the pool's binary dir.
    fn bin(&self) -> PathBuf {
        self.t.platform.api_bin.with_file_name("skiff")
    }

    fn image(&self) -> String {
        self.t.platform.image().to_owned()
    }

    /// `program args` as the tenant: `SKIFF_API`, `SKIFF_TOKEN`, the config
    /// dir, no profile or admin token from the test's own environment.
    fn command(&self, program: &PathBuf, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("SKIFF_API", &self.t.api_url)
            .env("SKIFF_TOKEN", &self.t.token)
            .env("XDG_CONFIG_HOME", &self.config)
            .env_remove("SKIFF_PROFILE")
            .env_remove("SKIFF_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// `skiff <args>` (a shell line) on a pseudo-terminal: script(1) gives
    /// it one and exits with its code. Its stdin stays /dev/null: script
    /// waits for its own stdin's end before it exits.
    fn in_terminal(&self, args: &str) -> Command {
        let line = format!("{} {args}", self.bin().display());
        let mut script = self.command(
            &PathBuf::from("script"),
            &["-q", "-e", "-f", "-c", &line, "/dev/null"],
        );
        script.env("TERM", "xterm").env_remove("NO_COLOR");
        script
    }

    fn skiff(&self, args: &[&str]) -> Command {
        self.command(&self.bin(), args)
    }

    /// `skiff args`, to its end; asserts its exit code, returns stdout
    /// and stderr.
    async fn expect(&self, code: i32, args: &[&str]) -> (String, String) {
        expect(code, self.skiff(args)).await
    }

    /// [`Cli::expect`] without `SKIFF_API` and `SKIFF_TOKEN`: only the
    /// profile in the config dir.
    async fn expect_bare(&self, code: i32, args: &[&str]) -> (String, String) {
        let mut command = self.skiff(args);
        command.env_remove("SKIFF_API").env_remove("SKIFF_TOKEN");
        expect(code, command).await
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.config);
    }
}

/// Runs `command` to its end, asserts its exit code; stdout and stderr.
async fn expect(code: i32, mut command: Command) -> (String, String) {
    let out = command.output().await.expect("running skiff");
    assert_eq!(out.status.code(), Some(code), "{}", shown(&out));
    (text(&out.stdout), text(&out.stderr))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The exit code, stdout and stderr, for assertion messages.
fn shown(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[tokio::test]
async fn run_exits_with_the_code_prints_the_logs_and_ps_shows_it() {
    limit(secs(120), async {
        let cli = Cli::new("run").await;
        let (t, image) = (&cli.t, cli.image());
        let name = unique("cli-run");
        let script = "echo hello-$WHO; echo to-stderr >&2; exit 3";
        let (stdout, stderr) = cli
            .expect(
                3,
                &[
                    "run", "--name", &name, "--cpu", "0.2", "-m", "64m", "-e", "WHO=cli", &image,
                    "--", "sh", "-c", script,
                ],
            )
            .await;
        let both = format!("{stdout}\n---\n{stderr}");
        assert!(stdout.contains("hello-cli\n"), "{both}");
        assert!(stdout.contains("to-stderr\n"), "{both}");
        // Not a terminal: one plain line per phase, on stderr only.
        for phase in ["queued", "pulling", "created", "started"] {
            assert!(stderr.contains(&format!("✔ {phase}")), "{phase}: {both}");
        }
        assert!(
            !stderr.contains('\x1b'),
            "no escapes off a terminal: {both}"
        );
        assert!(!stdout.contains('✔'), "{both}");

        // Control: a command that exits 0 makes skiff exit 0, and --rm
        // leaves nothing behind.
        let kept = unique("cli-ok");
        let (stdout, _) = cli
            .expect(
                0,
                &["run", "--rm", "--name", &kept, &image, "--", "echo", "fine"],
            )
            .await;
        assert_eq!(stdout, "fine\n");
        assert!(
            t.list_all()
                .await
                .iter()
                .all(|c| c["name"] != kept.as_str()),
            "--rm deleted it"
        );

        // ps -a shows the finished one with its exit code; plain ps shows
        // only live ones (a sleeper, as the control).
        let sleeper = t.create_id(&t.platform.sleeper(0.1)).await;
        t.wait(&sleeper, "running", 60).await;
        let (listing, _) = cli.expect(0, &["ps", "-a"]).await;
        let header = listing.lines().next().unwrap_or_default();
        for column in [
            "ID", "NAME", "IMAGE", "STATE", "AGE", "CPU", "MEMORY", "EXIT",
        ] {
            assert!(header.contains(column), "{column}: {listing}");
        }
        let line = listing
            .lines()
            .find(|l| l.contains(&name))
            .unwrap_or_else(|| panic!("{name} not in ps -a:\n{listing}"));
        for cell in ["failed", "0.2", "64Mi", " 3"] {
            assert!(line.contains(cell), "{cell} in {line:?}");
        }
        let (live, _) = cli.expect(0, &["ps"]).await;
        assert!(live.contains(&sleeper), "the sleeper runs: {live}");
        assert!(!live.contains(&name), "a finished one is not live: {live}");
        // The same through -o json: the API's objects.
        let (json_text, _) = cli.expect(0, &["ps", "-a", "-o", "json"]).await;
        let items: serde_json::Value =
            serde_json::from_str(&json_text).unwrap_or_else(|e| panic!("{e}: {json_text}"));
        let ours = items
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name.as_str()).cloned())
            .unwrap_or_else(|| panic!("{name} not in {items}"));
        assert_eq!(ours["exit_code"], 3, "{ours}");
    })
    .await
}

#[tokio::test]
async fn logs_follow_follows_until_the_container_exits() {
    limit(secs(90), async {
        let cli = Cli::new("logs").await;
        let t = &cli.t;
        // It prints `two` and exits only once /tmp/go exists.
        let waits_for_go = "echo one; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo two";
        let id = t.create_id(&t.platform.sh(waits_for_go)).await;
        t.wait(&id, "running", 60).await;
        eventually("its first line", secs(30), || async {
            (t.logs(&id).await == "one\n").then_some(())
        })
        .await;
        let mut follower = cli
            .skiff(&["logs", "-f", &id])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning skiff logs -f");

        // Control: without -f the log so far comes back at once, without
        // `two`, while the follower is still there.
        let (so_far, _) = cli.expect(0, &["logs", &id]).await;
        assert_eq!(so_far, "one\n");
        assert!(
            follower.try_wait().expect("try_wait").is_none(),
            "logs -f returned before the container exited"
        );

        let (status, answer) = t
            .exec(&id, json!({ "command": ["touch", "/tmp/go"] }))
            .await;
        assert_eq!(status, 200, "{answer}");
        let out = follower.wait_with_output().await.expect("logs -f");
        assert!(out.status.success(), "{}", shown(&out));
        assert_eq!(text(&out.stdout), "one\ntwo\n", "{}", shown(&out));
        t.wait_exited_in(&id, "succeeded").await;
    })
    .await
}

#[tokio::test]
async fn a_refused_request_exits_non_zero_naming_the_field() {
    limit(secs(60), async {
        let cli = Cli::new("refused").await;
        let image = cli.image();
        let (stdout, stderr) = cli
            .expect(1, &["run", "--cpu", "0", "-d", &image, "--", "true"])
            .await;
        assert!(stderr.contains("(400)"), "{stderr}");
        assert!(stderr.contains("field: cpu"), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");

        // Control: the same with a valid cpu is accepted (-d prints the id).
        let (stdout, _) = cli
            .expect(0, &["run", "--cpu", "0.1", "-d", &image, "--", "true"])
            .await;
        let id = stdout.trim();
        assert_eq!(id_of(&cli.t.get(id).await), id);

        // A flag the CLI itself can tell is wrong never reaches the API.
        let (_, stderr) = cli.expect(1, &["run", "-m", "12k", &image]).await;
        assert!(stderr.contains("--memory"), "{stderr}");
    })
    .await
}

#[tokio::test]
async fn login_saves_a_profile_with_a_private_token_file() {
    limit(secs(60), async {
        let cli = Cli::new("login").await;
        let t = &cli.t;
        // Nothing configured: a clear refusal.
        let (_, stderr) = cli.expect_bare(1, &["ps"]).await;
        assert!(stderr.contains("skiff login"), "{stderr}");

        // A wrong token is refused at login, and nothing is saved.
        let (_, stderr) = cli
            .expect_bare(1, &["login", "--api", &t.api_url, "--token", "not-a-token"])
            .await;
        assert!(stderr.contains("(401)"), "{stderr}");
        let token_file = cli.config.join("skiff/credentials.toml");
        assert!(!token_file.exists());

        cli.expect_bare(0, &["login", "--api", &t.api_url, "--token", &t.token])
            .await;
        let mode = std::fs::metadata(&token_file)
            .unwrap_or_else(|e| panic!("{}: {e}", token_file.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "token file mode {mode:o}");
        let saved = std::fs::read_to_string(&token_file).expect("token file");
        assert!(saved.contains(&t.token), "{saved}");

        // The profile is now enough.
        let id = t.create_id(&t.platform.spec(&["true"])).await;
        let (listing, _) = cli.expect_bare(0, &["ps", "-a"]).await;
        assert!(listing.contains(&id), "{listing}");
    })
    .await
}

#[tokio::test]
async fn run_draws_its_phases_live_on_a_terminal() {
    limit(secs(90), async {
        let cli = Cli::new("tty").await;
        let script = cli.in_terminal(&format!(
            "run {} -- sh -c 'echo on-a-tty; exit 4'",
            cli.image()
        ));
        let (screen, _) = expect(4, script).await;
        for phase in ["queued", "pulling", "created", "started"] {
            assert!(
                screen.contains(&format!("✔ {phase}")),
                "{phase}: {screen:?}"
            );
        }
        assert!(screen.contains("on-a-tty"), "{screen:?}");
        // The spinner redraws its line: terminal escapes, which the
        // non-terminal run of the test above never prints.
        assert!(screen.contains('\x1b'), "{screen:?}");
    })
    .await
}

#[tokio::test]
async fn exec_inspect_events_rm_jobs_usage_and_admin_commands_answer() {
    limit(secs(120), async {
        let cli = Cli::new("more").await;
        let (t, image) = (&cli.t, cli.image());
        let name = unique("cli-exec");
        let (stdout, _) = cli
            .expect(
                0,
                &[
                    "run", "-d", "--cpu", "0.1", "-m", "64", "--name", &name, &image, "--",
                    "sleep", "600",
                ],
            )
            .await;
        let id = stdout.trim().to_owned();
        t.wait(&id, "running", 60).await;

        // exec: its output, and its exit code as skiff's (by name).
        let (stdout, stderr) = cli
            .expect(
                5,
                &[
                    "exec",
                    &name,
                    "--",
                    "sh",
                    "-c",
                    "echo out; echo err >&2; exit 5",
                ],
            )
            .await;
        assert_eq!((stdout.as_str(), stderr.as_str()), ("out\n", "err\n"));
        let (yaml, _) = cli.expect(0, &["inspect", &name, "-o", "yaml"]).await;
        assert!(yaml.contains(&format!("name: {name}")), "{yaml}");
        assert!(yaml.contains("state: running"), "{yaml}");
        let (events, _) = cli.expect(0, &["events", "--container", &id]).await;
        assert!(events.contains("Started"), "{events}");
        let (removed, _) = cli.expect(0, &["rm", &name]).await;
        assert_eq!(removed.trim(), id);
        t.wait_removed(&id).await;

        // A job: 0 when every task succeeded, 1 when one failed.
        let job = [
            "job",
            "run",
            "--count",
            "3",
            "--parallelism",
            "2",
            "--cpu",
            "0.1",
            "-m",
            "64",
        ];
        let mut ok = job.to_vec();
        ok.extend([image.as_str(), "--", "true"]);
        let (_, stderr) = cli.expect(0, &ok).await;
        assert!(stderr.contains("3 done, 0 failed"), "{stderr}");
        assert!(stderr.contains("succeeded"), "{stderr}");
        let mut failing = job.to_vec();
        failing.extend([image.as_str(), "--", "false"]);
        let (_, stderr) = cli.expect(1, &failing).await;
        assert!(stderr.contains("0 done, 3 failed"), "{stderr}");
        let (jobs, _) = cli.expect(0, &["job", "ls"]).await;
        assert_eq!(jobs.lines().count(), 3, "a header and two jobs: {jobs}");

        // Usage as CSV (the server's) and as a table with a total.
        let (csv, _) = cli.expect(0, &["usage", "-o", "csv"]).await;
        assert!(
            csv.lines().next().is_some_and(|h| h.contains("cost")),
            "{csv}"
        );
        let (table, _) = cli.expect(0, &["usage", "--group-by", "day"]).await;
        assert!(
            table.lines().last().is_some_and(|l| l.starts_with("TOTAL")),
            "{table}"
        );

        // Admin commands take SKIFF_ADMIN_TOKEN; a tenant's token is refused.
        let admin = |args: &[&str]| {
            let mut c = cli.skiff(args);
            c.env("SKIFF_ADMIN_TOKEN", t.platform.admin_token());
            c
        };
        let (hosts, _) = expect(0, admin(&["hosts"])).await;
        assert!(hosts.contains(t.platform.hosts[0].id.as_str()), "{hosts}");
        let (_, stderr) = cli.expect(1, &["hosts"]).await;
        assert!(stderr.contains("(40"), "{stderr}");
        let (created, _) = expect(
            0,
            admin(&["tenants", "create", &unique("cli-made"), "-o", "json"]),
        )
        .await;
        let created: serde_json::Value = serde_json::from_str(&created).expect("json");
        assert!(created["token"].is_string(), "{created}");

        let (script, _) = cli.expect(0, &["completions", "bash"]).await;
        assert!(script.contains("skiff"), "{script}");
    })
    .await
}

#[tokio::test]
async fn exec_i_sends_stdin_and_exec_it_gets_a_terminal() {
    use tokio::io::AsyncWriteExt;
    limit(secs(90), async {
        let cli = Cli::new("exec-it").await;
        let t = &cli.t;
        let id = t.create_id(&t.platform.sh("exec sleep 600")).await;
        t.wait(&id, "running", 60).await;

        // -i: stdin reaches the process, and so does its end; its exit
        // code is skiff's; no terminal without -t (the control for the -it
        // case below).
        let mut child = cli
            .skiff(&[
                "exec",
                "-i",
                &id,
                "--",
                "sh",
                "-c",
                // cat ends only if the end of stdin reaches the process.
                "tty; cat; echo eof; exit 6",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning skiff exec -i");
        let mut stdin = child.stdin.take().expect("its stdin");
        stdin.write_all(b"through-stdin\n").await.expect("writing");
        drop(stdin);
        let out = tokio::time::timeout(secs(30), child.wait_with_output())
            .await
            .expect("skiff exec -i ends")
            .expect("skiff exec -i");
        assert_eq!(out.status.code(), Some(6), "{}", shown(&out));
        assert_eq!(
            text(&out.stdout),
            "not a tty\nthrough-stdin\neof\n",
            "{}",
            shown(&out)
        );

        // -it from a terminal (script's): the process gets one too.
        let mut script = cli.in_terminal(&format!("exec -it {id} -- sh -c 'tty; exit 7'"));
        let out = tokio::time::timeout(secs(30), script.output())
            .await
            .expect("skiff exec -it ends")
            .expect("skiff exec -it");
        assert_eq!(out.status.code(), Some(7), "{}", shown(&out));
        assert!(text(&out.stdout).contains("/dev/pts/"), "{}", shown(&out));
    })
    .await
}

#[tokio::test]
async fn group_commands_create_show_act_on_and_remove_a_group() {
    limit(secs(120), async {
        let cli = Cli::new("group").await;
        let (t, image) = (&cli.t, cli.image());
        let member = |name: &str| {
            json!({
                "name": name,
                "image": image,
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                "cpu": 0.1,
                "memory_mib": 64,
            })
        };
        let name = unique("cli-pair");
        let request = json!({ "name": name, "containers": [member("web"), member("side")] });
        let file = cli.config.join("group.json");
        std::fs::write(&file, request.to_string()).expect("the request file");

        // A request that is not JSON is refused before any call, naming
        // the flag; a well-formed but wrong one by the server, naming the
        // field; the positive control beside them creates the group.
        let bad = cli.config.join("bad.json");
        std::fs::write(&bad, "{ not json").expect("the bad file");
        let (_, stderr) = cli
            .expect(1, &["group", "create", "-f", bad.to_str().unwrap()])
            .await;
        assert!(stderr.contains("--file"), "{stderr}");
        let wrong = cli.config.join("wrong.json");
        std::fs::write(&wrong, json!({ "containers": [] }).to_string()).expect("the file");
        let (_, stderr) = cli
            .expect(1, &["group", "create", "-f", wrong.to_str().unwrap()])
            .await;
        assert!(stderr.contains("containers"), "{stderr}");
        let (stdout, _) = cli
            .expect(0, &["group", "create", "-f", file.to_str().unwrap()])
            .await;
        let id = stdout.trim().to_owned();
        let group = t
            .poll_path(
                &format!("/v1/groups/{id}"),
                60,
                "the group running",
                |g| g["state"] == "running",
                |g| async move { format!("{g:#}") },
            )
            .await;
        let members: Vec<String> = group["containers"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["container"]["id"].as_str().expect("an id").to_owned())
            .collect();

        // ls shows it running with both members; get adds their rows.
        let (ls, _) = cli.expect(0, &["group", "ls"]).await;
        let row = ls.lines().find(|l| l.contains(&id)).unwrap_or_default();
        assert!(row.contains(&name) && row.contains("running"), "{ls}");
        assert!(row.contains("web,side"), "{ls}");
        let (get, _) = cli.expect(0, &["group", "get", &id]).await;
        for m in &members {
            assert!(get.contains(m.as_str()), "{get}");
        }
        let (json_out, _) = cli.expect(0, &["group", "get", &id, "-o", "json"]).await;
        let parsed: serde_json::Value = serde_json::from_str(&json_out).expect("json");
        assert_eq!(parsed["id"], id.as_str(), "{parsed}");

        // stop, start and rm act on every member.
        let (stopped, _) = cli.expect(0, &["group", "stop", &id]).await;
        assert_eq!(stopped.trim(), id);
        for m in &members {
            t.wait(m, "exited", 60).await;
        }
        cli.expect(0, &["group", "start", &id]).await;
        for m in &members {
            t.wait(m, "running", 60).await;
        }
        let (removed, _) = cli.expect(0, &["group", "rm", &id]).await;
        assert_eq!(removed.trim(), id);
        for m in &members {
            t.wait_removed(m).await;
        }
        let (_, stderr) = cli.expect(1, &["group", "get", &id]).await;
        assert!(stderr.contains("(404"), "{stderr}");
    })
    .await
}
