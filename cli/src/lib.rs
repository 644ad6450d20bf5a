//! skiff-cli: the `skiff` command, a client of the REST API only (it never
//! touches the database or a host). Requests and answers use the API's own
//! types (`skiff_api::model`, `skiff_api::http::*`), so a change to the API's
//! JSON breaks this build rather than a user's command.
//!
//! Layout:
//! - [`args`]: the command line (clap), every command and flag.
//! - [`config`]: profiles in the XDG config dir, `SKIFF_API`/`SKIFF_TOKEN`
//!   overrides, `skiff login`'s files (the token file is 0600).
//! - [`client`]: the REST client: one method per route, problem+json
//!   errors, name and id-prefix resolution.
//! - [`parse`]: pure parsers of flag values (memory sizes, `KEY=VAL`,
//!   ports, restart policies).
//! - [`output`]: `--output table|json|yaml`, tables, ages, colours on a TTY.
//! - [`progress`]: the phases of a starting container (pure) and their live
//!   display.
//! - [`sse`]: a Server-Sent Events decoder for `skiff events -f`.
//! - [`commands`]: one module per group of commands.
//! - [`error`]: the crate's error type.

/// `println!` for the command's output: a reader that went away (`skiff ps |
/// head`) ends the process quietly, as it does any Unix filter, instead of
/// the panic `println!` makes of a broken pipe.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` likewise (see [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!($($arg)*))
    };
}

pub mod args;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod output;
pub mod parse;
pub mod progress;
pub mod sse;

pub use error::Error;
