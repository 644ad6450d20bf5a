//! `skiff`: parse the command line, run the command, print an error (the
//! API's problem title, detail and field) and exit non-zero on failure.

use clap::Parser;
use skiff_cli::args::Cli;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match skiff_cli::commands::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            let err = anyhow::Error::from(err);
            eprintln!("error: {err:#}");
            1
        }
    };
    // process::exit runs no destructors: hand buffered output over first.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code);
}
