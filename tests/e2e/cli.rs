//! The `skiff` CLI as a user runs it: the binary (built beside `skiff-api`,
//! found the same way) as a subprocess against the main pool, with
//! `SKIFF_API`/`SKIFF_TOKEN` set as `.skiff/local.env` sets them and a
//! private `XDG_CONFIG_HOME`. `run` exits with the container's code and
//! prints its logs; `ps` shows it; `logs -f` follows until the exit; a
//! refused request exits non-zero naming the field; `login` writes a 0600
//! token file; the live phases are drawn on a pseudo-terminal (`script`).

use crate::tenant;
use serde_json::json;
use skiff_e2e::{eventually, id_of, limit, secs, unique, Tenant};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use tokio::process::Command;

/// The `skiff` binary: beside `skiff-api` in the pool's binary directory.
fn skiff_bin(t: &Tenant) -> PathBuf {
    t.platform.api_bin.with_file_name("skiff")
}

/// A config dir of the test's own, so no profile of the machine is read.
fn config_home(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(&format!("skiff-cli-{name}")));
    std::fs::create_dir_all(&dir).expect("a config dir");
    dir
}

/// `skiff <args>` as the tenant (`SKIFF_API`, `SKIFF_TOKEN`), no colours.
fn skiff(t: &Tenant, config: &PathBuf, args: &[&str]) -> Command {
    let mut command = Command::new(skiff_bin(t));
    command
        .args(args)
        .env("SKIFF_API", &t.api_url)
        .env("SKIFF_TOKEN", &t.token)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("SKIFF_PROFILE")
        .env_remove("SKIFF_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn output(mut command: Command) -> Output {
    command.output().await.expect("running skiff")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `stdout`, `stderr` and the exit code, for assertion messages.
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
        let t = tenant().await;
        let config = config_home("run");
        let image = t.platform.image().to_owned();
        let name = unique("cli-run");
        let out = output(skiff(
            &t,
            &config,
            &[
                "run",
                "--name",
                &name,
                "--cpu",
                "0.2",
                "-m",
                "64m",
                "-e",
                "WHO=cli",
                &image,
                "--",
                "sh",
                "-c",
                "echo hello-$WHO; echo to-stderr >&2; exit 3",
            ],
        ))
        .await;
        assert_eq!(out.status.code(), Some(3), "{}", shown(&out));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("hello-cli\n"), "{}", shown(&out));
        assert!(stdout.contains("to-stderr\n"), "{}", shown(&out));
        // Not a terminal: one plain line per phase, on stderr only.
        let stderr = text(&out.stderr);
        for phase in ["queued", "pulling", "created", "started"] {
            assert!(
                stderr.contains(&format!("✔ {phase}")),
                "{phase}: {}",
                shown(&out)
            );
        }
        assert!(
            !stderr.contains('\x1b'),
            "no escapes off a terminal: {}",
            shown(&out)
        );
        assert!(!stdout.contains("✔"), "{}", shown(&out));

        // Control: a command that exits 0 makes skiff exit 0, and --rm
        // leaves nothing behind.
        let kept = unique("cli-ok");
        let out = output(skiff(
            &t,
            &config,
            &["run", "--rm", "--name", &kept, &image, "--", "echo", "fine"],
        ))
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
        assert_eq!(text(&out.stdout), "fine\n", "{}", shown(&out));
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
        let out = output(skiff(&t, &config, &["ps", "-a"])).await;
        assert!(out.status.success(), "{}", shown(&out));
        let listing = text(&out.stdout);
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
        let out = output(skiff(&t, &config, &["ps"])).await;
        let live = text(&out.stdout);
        assert!(live.contains(&sleeper), "the sleeper runs: {live}");
        assert!(!live.contains(&name), "a finished one is not live: {live}");
        // The same through -o json: the API's objects.
        let out = output(skiff(&t, &config, &["ps", "-a", "-o", "json"])).await;
        let items: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", shown(&out)));
        let ours = items
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name.as_str()).cloned())
            .unwrap_or_else(|| panic!("{name} not in {items}"));
        assert_eq!(ours["exit_code"], 3, "{ours}");
        let _ = std::fs::remove_dir_all(&config);
    })
    .await
}

#[tokio::test]
async fn logs_follow_follows_until_the_container_exits() {
    limit(secs(90), async {
        let t = tenant().await;
        let config = config_home("logs");
        // It prints `two` and exits only once /tmp/go exists.
        let id = t
            .create_id(
                &t.platform
                    .sh("echo one; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo two"),
            )
            .await;
        t.wait(&id, "running", 60).await;
        eventually("its first line", secs(30), || async {
            (t.logs(&id).await == "one\n").then_some(())
        })
        .await;
        let mut follower = skiff(&t, &config, &["logs", "-f", &id])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning skiff logs -f");

        // Control: without -f the log so far comes back at once, without
        // `two`, while the follower is still there.
        let out = output(skiff(&t, &config, &["logs", &id])).await;
        assert!(out.status.success(), "{}", shown(&out));
        assert_eq!(text(&out.stdout), "one\n", "{}", shown(&out));
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
        let _ = std::fs::remove_dir_all(&config);
    })
    .await
}

#[tokio::test]
async fn a_refused_request_exits_non_zero_naming_the_field() {
    limit(secs(60), async {
        let t = tenant().await;
        let config = config_home("refused");
        let image = t.platform.image().to_owned();
        let out = output(skiff(
            &t,
            &config,
            &["run", "--cpu", "0", "-d", &image, "--", "true"],
        ))
        .await;
        assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("(400)"), "{}", shown(&out));
        assert!(stderr.contains("field: cpu"), "{}", shown(&out));
        assert!(out.stdout.is_empty(), "{}", shown(&out));

        // Control: the same with a valid cpu is accepted (-d prints the id).
        let out = output(skiff(
            &t,
            &config,
            &["run", "--cpu", "0.1", "-d", &image, "--", "true"],
        ))
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
        let id = text(&out.stdout).trim().to_owned();
        assert_eq!(id_of(&t.get(&id).await), id);

        // A flag the CLI itself can tell is wrong never reaches the API.
        let out = output(skiff(&t, &config, &["run", "-m", "12k", &image])).await;
        assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
        assert!(text(&out.stderr).contains("--memory"), "{}", shown(&out));
        let _ = std::fs::remove_dir_all(&config);
    })
    .await
}

#[tokio::test]
async fn login_saves_a_profile_with_a_private_token_file() {
    limit(secs(60), async {
        let t = tenant().await;
        let config = config_home("login");
        let bare = |args: &[&str]| {
            let mut c = skiff(&t, &config, args);
            c.env_remove("SKIFF_API").env_remove("SKIFF_TOKEN");
            c
        };
        // Nothing configured: a clear refusal.
        let out = output(bare(&["ps"])).await;
        assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
        assert!(text(&out.stderr).contains("skiff login"), "{}", shown(&out));

        // A wrong token is refused at login, and nothing is saved.
        let out = output(bare(&[
            "login",
            "--api",
            &t.api_url,
            "--token",
            "not-a-token",
        ]))
        .await;
        assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
        assert!(text(&out.stderr).contains("(401)"), "{}", shown(&out));
        let token_file = config.join("skiff/credentials.toml");
        assert!(!token_file.exists());

        let out = output(bare(&["login", "--api", &t.api_url, "--token", &t.token])).await;
        assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
        let mode = std::fs::metadata(&token_file)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", token_file.display(), shown(&out)))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "token file mode {mode:o}");
        let saved = std::fs::read_to_string(&token_file).expect("token file");
        assert!(saved.contains(&t.token), "{saved}");

        // The profile is now enough.
        let id = t.create_id(&t.platform.spec(&["true"])).await;
        let out = output(bare(&["ps", "-a"])).await;
        assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
        assert!(text(&out.stdout).contains(&id), "{}", shown(&out));
        let _ = std::fs::remove_dir_all(&config);
    })
    .await
}

#[tokio::test]
async fn run_draws_its_phases_live_on_a_terminal() {
    limit(secs(90), async {
        let t = tenant().await;
        let config = config_home("tty");
        let image = t.platform.image().to_owned();
        let bin = skiff_bin(&t);
        // script(1) gives skiff a pseudo-terminal and exits with its code.
        let line = format!(
            "{} run {image} -- sh -c 'echo on-a-tty; exit 4'",
            bin.display()
        );
        let mut command = Command::new("script");
        command
            .args(["-q", "-e", "-f", "-c", &line, "/dev/null"])
            .env("SKIFF_API", &t.api_url)
            .env("SKIFF_TOKEN", &t.token)
            .env("XDG_CONFIG_HOME", &config)
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = output(command).await;
        assert_eq!(out.status.code(), Some(4), "{}", shown(&out));
        let screen = text(&out.stdout);
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
        let _ = std::fs::remove_dir_all(&config);
    })
    .await
}
