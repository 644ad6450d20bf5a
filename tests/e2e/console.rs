//! The web console in a real browser: Playwright (`console/tests/`, from
//! npm, installed by `npm ci` in `console/`, which test.sh runs) drives
//! Debian's headless Chromium (`/usr/bin/chromium`; no browser is ever
//! downloaded) against replica 1 of the main pool, which serves the console
//! at `/console` from the assets embedded in `skiff-api`. It signs in with a
//! fresh tenant's token, runs a container from the form, sees its log
//! followed live (a line written after an exec shows up while the page
//! watches) and the container reach `succeeded`, sees the API's validation
//! error for `cpu: 0` at the CPU field, sees the usage chart painted (and
//! downloads the CSV), a job's progress, a group with its members linking
//! to their containers, and, with the admin token, the hosts.
//!
//! Screenshots of every page, at 1280 and 360 px wide, are left in
//! `<target>/console-screenshots/` for a reviewer; Playwright's traces of a
//! failed test in `<target>/console-test-results/`. A missing node,
//! Chromium or `console/node_modules` fails the test: it never skips.

use skiff_e2e::{limit, secs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every screenshot the tests take (each also at 360 px: `<name>-360.png`).
const SCREENSHOTS: &[&str] = &[
    "01-sign-in",
    "02-containers-empty",
    "03-run-form-cpu-0",
    "04a-container-running",
    "04-container-succeeded",
    "05-containers-list",
    "06-usage-per-day",
    "07-usage-per-label",
    "08-jobs",
    "08b-groups",
    "09-hosts",
];

/// Where cargo puts this build's outputs (the parent of the tests' tmpdir).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}

#[tokio::test]
async fn console_runs_a_container_and_shows_logs_usage_and_hosts_in_chromium() {
    limit(secs(600), async {
        let t = crate::tenant().await;
        let platform = t.platform;
        let console = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ has a parent")
            .join("console");
        let chromium = std::env::var("SKIFF_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            Path::new(&chromium).is_file(),
            "{chromium} is missing: install Debian's chromium (deploy/local/test.sh does)"
        );
        let node = tokio::process::Command::new("node")
            .arg("--version")
            .output()
            .await;
        assert!(
            node.as_ref().is_ok_and(|o| o.status.success()),
            "node is missing ({node:?}): install Debian's nodejs and npm (deploy/local/test.sh does)"
        );
        let playwright = console.join("node_modules/.bin/playwright");
        assert!(
            playwright.is_file(),
            "{} is missing: run `npm ci` in console/ (deploy/local/test.sh does)",
            playwright.display()
        );

        let target = target_dir();
        let shots = target.join("console-screenshots");
        let results = target.join("console-test-results");
        for dir in [&shots, &results] {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::fs::create_dir_all(&shots).expect("screenshot folder");

        let run = tokio::process::Command::new(&playwright)
            .arg("test")
            .current_dir(&console)
            .env("SKIFF_CONSOLE_API_URL", &t.api_url)
            .env("SKIFF_CONSOLE_TENANT_TOKEN", &t.token)
            .env("SKIFF_CONSOLE_ADMIN_TOKEN", platform.admin_token())
            .env("SKIFF_CONSOLE_IMAGE", platform.image())
            .env("SKIFF_CONSOLE_SCREENSHOTS", &shots)
            .env("SKIFF_CONSOLE_RESULTS", &results)
            .env("SKIFF_CHROMIUM", &chromium)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .env("NO_COLOR", "1")
            .env("CI", "1")
            .kill_on_drop(true)
            .output();
        // Each Playwright test has its own limit (playwright.config.js and
        // the spec); this one only stops a browser that hangs.
        let output = tokio::time::timeout(Duration::from_secs(540), run)
            .await
            .expect("playwright test did not finish within 540 s")
            .expect("running playwright");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "playwright test failed ({}):\n{stdout}\n{stderr}\ntraces: {}\n{}",
            output.status,
            results.display(),
            platform.logs_dump()
        );
        println!("{stdout}");
        assert!(
            stdout.contains("7 passed"),
            "expected all 7 browser tests to pass:\n{stdout}\n{stderr}"
        );
        for name in SCREENSHOTS {
            for file in [format!("{name}.png"), format!("{name}-360.png")] {
                let path = shots.join(&file);
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                assert!(size > 0, "screenshot {} missing or empty", path.display());
            }
        }
        println!("console screenshots: {}", shots.display());
    })
    .await
}
