//! The API fuzzed against its own contract: schemathesis (the pinned
//! `st` that test.sh installs, `SKIFF_TEST_SCHEMATHESIS`) reads
//! `/openapi.json`, generates valid and invalid requests for every
//! operation (examples, boundary values, random data, and sequences that
//! follow one answer's ids into the next request) and runs every check it
//! has on every answer: no 5xx; every status code, content type and header
//! documented; every body matching its schema; invalid input refused with a
//! 4xx and valid input accepted; a request without the token refused; a
//! deleted resource gone.
//!
//! It runs on a pool of its own ([`Platform::fuzz`]: one replica, no host,
//! its own database), not on the main pool: the fuzzer makes containers and
//! jobs by the hundred (with random images and sizes up to the limits),
//! tenants, quotas, rate cards and join tokens, and would eat the capacity,
//! queue and bills the other tests measure.
//!
//! Three runs: the tenant's operations with a tenant's token, the admin
//! operations (tag `admin`) with the admin token, and `wait` apart, with
//! invalid input only: a valid `wait` holds its request for up to 600 s
//! (its `timeout_s`) on a container that never runs here. The other
//! streams end by themselves: a log `follow` of a container with no host
//! answers at once, and the pool closes an SSE event stream after 1 s.
//!
//! The rules a JSON Schema cannot state (one field against another, the
//! server's configuration, the clock: a usage window's `to` after its
//! `from`, a fresh `Idempotency-Key` per request, ...) are in
//! `fuzz_hooks.py`, which makes the valid requests schemathesis generates
//! follow them; the invalid ones are sent as generated.
//!
//! Each run takes its `--max-time` (schemathesis repeats its fuzzing and
//! stateful phases until the time is spent), so the test takes about
//! their sum, whatever the machine: thousands of cases on this one, at
//! [`RATE_PER_S`] requests a second at most.

use reqwest::{Method, StatusCode};
use skiff_e2e::{limit, secs, Platform};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Requests a second (`--rate-limit`).
const RATE_PER_S: u32 = 40;

/// The operation that long-polls (fuzzed with invalid input only).
const WAIT_PATH: &str = "/v1/containers/{id}/wait";
/// The interactive exec: a WebSocket, which schemathesis does not speak
/// (a valid request without the upgrade is refused by design), so fuzzed
/// with invalid input only.
const ATTACH: &str = "GET /v1/containers/{id}/exec";

/// One `st run` against the pool.
struct FuzzRun {
    name: &'static str,
    token: String,
    /// Which operations, and how (`st run` options).
    args: Vec<String>,
    /// Test cases per operation and phase (`--max-examples`).
    max_examples: u32,
    /// schemathesis' own budget for the run (`--max-time`), seconds.
    max_time_s: u64,
}

/// What a run printed and how it ended.
struct Outcome {
    success: bool,
    status: String,
    output: String,
    /// "N generated" from schemathesis' summary.
    cases: u64,
    took: Duration,
}

/// The `st` program test.sh installed; panics (never skips) without it.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("SKIFF_TEST_SCHEMATHESIS").unwrap_or_else(|| {
        panic!(
            "SKIFF_TEST_SCHEMATHESIS is not set: run the tests with deploy/local/test.sh, \
             which installs schemathesis into .skiff/venv"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "SKIFF_TEST_SCHEMATHESIS={} does not exist: run deploy/local/test.sh to install it",
        path.display()
    );
    path
}

/// Runs schemathesis once, in `dir` (its reports and example database stay
/// there, out of the checkout).
async fn run(st: &Path, platform: &Platform, dir: &Path, fuzz: &FuzzRun) -> Outcome {
    let started = Instant::now();
    let mut command = tokio::process::Command::new(st);
    command
        .arg("run")
        .arg(format!("{}/openapi.json", platform.api_url))
        .args(["--header", &format!("Authorization: Bearer {}", fuzz.token)])
        .args(["--checks", "all"])
        .args(["--max-examples", &fuzz.max_examples.to_string()])
        .args(["--max-time", &fuzz.max_time_s.to_string()])
        // Reproducible generation (the server's ids differ run to run).
        .args(["--seed", "20261127"])
        // One worker: Debian 12's Python (3.11.2) fails schemathesis'
        // generation in several threads at once ("AST constructor
        // recursion depth mismatch", fixed in Python 3.11.5).
        .args(["--workers", "1"])
        // A pattern such as an image reference's makes hypothesis throw
        // away many drafts of a job's body: that slows generation down but
        // is no fault of the API, so it must not abort the run.
        .args(["--suppress-health-check", "filter_too_much"])
        // Well above any answer here; an SSE stream is read this long.
        .args(["--request-timeout", "10"])
        // Unbounded, one worker sends 100 requests a second and keeps a
        // core busy for minutes, beside the suite's other tests on this
        // 2-core machine; at this pace it idles half the time and still
        // makes thousands of cases.
        .args(["--rate-limit", &format!("{RATE_PER_S}/s")])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .args(&fuzz.args)
        .current_dir(dir)
        .env("SCHEMATHESIS_HOOKS", "fuzz_hooks")
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e"),
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // Past its own budget (which bounds generation, not a phase already
    // under way) it gets two more minutes, then is killed.
    let deadline = Duration::from_secs(fuzz.max_time_s + 120);
    let output = match tokio::time::timeout(deadline, command.output()).await {
        Ok(output) => {
            output.unwrap_or_else(|e| panic!("running {} ({}): {e}", st.display(), fuzz.name))
        }
        Err(_) => panic!(
            "schemathesis ({}) did not finish within {deadline:?}\n{}",
            fuzz.name,
            platform.logs_dump()
        ),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Outcome {
        success: output.status.success(),
        status: output.status.to_string(),
        cases: generated_cases(&text),
        output: text,
        took: started.elapsed(),
    }
}

/// The "N generated" of schemathesis' summary (the line after "Test
/// cases:"); 0 when it has none (a run that generated nothing fails the
/// test).
fn generated_cases(output: &str) -> u64 {
    let lines: Vec<&str> = output.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == "Test cases:")
        .filter_map(|pair| pair[1].split_whitespace().next())
        .filter_map(|n| n.parse::<u64>().ok())
        .next_back()
        .unwrap_or(0)
}

#[test]
fn the_summary_gives_the_number_of_cases() {
    let summary =
        "Failures:\n\nTest cases:\n  3400 generated, 3400 passed, 44 skipped\n\nSeed: 1\n";
    assert_eq!(generated_cases(summary), 3400);
    assert_eq!(generated_cases("no summary"), 0);
}

#[tokio::test]
async fn schemathesis_finds_no_failure_in_the_api() {
    limit(secs(420), async {
        let st = schemathesis();
        let platform = Platform::fuzz().await;
        let tenant = platform.new_tenant().await;
        // A notify_url needs the tenant's webhook secret.
        let secret = tenant.call(Method::POST, "/v1/webhook-secret", None).await;
        assert_eq!(secret.status, StatusCode::CREATED, "{secret:?}");
        let dir = platform.run_dir.join("schemathesis");
        std::fs::create_dir_all(&dir).expect("creating the fuzzer's directory");
        let runs = [
            FuzzRun {
                name: "tenant",
                token: tenant.token.clone(),
                args: vec![
                    "--exclude-tag".into(),
                    "admin".into(),
                    "--exclude-path".into(),
                    WAIT_PATH.into(),
                    "--exclude-name".into(),
                    ATTACH.into(),
                ],
                max_examples: 40,
                max_time_s: 100,
            },
            FuzzRun {
                name: "attach",
                token: tenant.token.clone(),
                args: vec![
                    "--include-name".into(),
                    ATTACH.into(),
                    "--mode".into(),
                    "negative".into(),
                ],
                max_examples: 40,
                max_time_s: 15,
            },
            FuzzRun {
                name: "wait",
                token: tenant.token.clone(),
                args: vec![
                    "--include-path".into(),
                    WAIT_PATH.into(),
                    "--mode".into(),
                    "negative".into(),
                ],
                max_examples: 40,
                max_time_s: 15,
            },
            FuzzRun {
                name: "admin",
                token: platform.admin_token().to_owned(),
                args: vec!["--include-tag".into(), "admin".into()],
                max_examples: 40,
                max_time_s: 45,
            },
        ];
        let mut report = String::new();
        let mut failed = Vec::new();
        let mut total = 0;
        for fuzz in &runs {
            let outcome = run(&st, platform, &dir, fuzz).await;
            let header = format!(
                "===== schemathesis, {} run: {}, {} cases in {:.0?}",
                fuzz.name, outcome.status, outcome.cases, outcome.took
            );
            // Shown by libtest when the test fails (and with --nocapture).
            println!("{header}\n{}", outcome.output);
            report.push_str(&format!("{header}\n{}\n", outcome.output));
            total += outcome.cases;
            if !outcome.success || outcome.cases == 0 {
                failed.push(fuzz.name);
            }
        }
        let _ = std::fs::write(dir.join("output.txt"), &report);
        assert!(
            failed.is_empty(),
            "schemathesis found failures in the {failed:?} run(s):\n{report}\n{}",
            platform.logs_dump()
        );
        assert!(
            total >= 1000,
            "schemathesis generated {total} cases in all, fewer than the 1000 this test \
             promises:\n{report}"
        );
    })
    .await
}
