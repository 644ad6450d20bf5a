//! Finds the web console's built assets for `src/http/console.rs` to embed
//! (rust-embed reads the folder named by `SKIFF_CONSOLE_DIST`).
//!
//! `console/dist` is made by `npm ci && npm run build` in `console/`
//! (`deploy/local/test.sh` and `up.sh` do it before cargo). Without it the
//! binary gets a placeholder page that says how to build the console, so a
//! Rust-only build of a fresh checkout still works; under CI (`CI` set) or
//! with `SKIFF_CONSOLE_REQUIRED=1` a missing console fails the build instead.
//!
//! It also has the crate rebuilt when `migrations/` changes (see below).

use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let console = manifest.join("../console");
    let dist = console.join("dist");
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=SKIFF_CONSOLE_REQUIRED");
    // `sqlx::migrate!` embeds migrations/ at compile time, and cargo does
    // not notice a new file there by itself: a new migration would be
    // missing from an incremental build.
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../migrations").display()
    );
    if dist.join("index.html").is_file() {
        // A folder is scanned recursively: any rebuilt asset re-embeds.
        println!("cargo:rerun-if-changed={}", dist.display());
        set_dist(&dist);
        return;
    }
    // Watching console/ (not the missing dist, which would rerun this on
    // every build) notices the dist once it is built.
    println!("cargo:rerun-if-changed={}", console.display());
    let required = ["CI", "SKIFF_CONSOLE_REQUIRED"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"));
    if required {
        panic!(
            "the web console is not built ({} has no index.html): run `npm ci && npm run build` \
             in console/ first (deploy/local/test.sh and up.sh do)",
            dist.display()
        );
    }
    println!(
        "cargo:warning=console/dist is missing: skiff-api serves a placeholder at /console \
         (run `npm ci && npm run build` in console/, or deploy/local/up.sh)"
    );
    let placeholder = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"))
        .join("console-placeholder");
    std::fs::create_dir_all(&placeholder).expect("creating the placeholder folder");
    std::fs::write(placeholder.join("index.html"), PLACEHOLDER).expect("writing the placeholder");
    set_dist(&placeholder);
}

fn set_dist(dir: &Path) {
    let dir = dir.canonicalize().expect("canonical console folder");
    println!("cargo:rustc-env=SKIFF_CONSOLE_DIST={}", dir.display());
}

const PLACEHOLDER: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>skiff console not built</title></head>
<body><h1>The skiff console was not built into this binary</h1>
<p>Run <code>npm ci &amp;&amp; npm run build</code> in <code>console/</code>, then build
skiff-api again (<code>deploy/local/up.sh</code> does both).</p></body></html>
";
