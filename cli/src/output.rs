//! How answers are printed: `--output table` (the default: plain columns,
//! as `docker ps` prints them), `csv` (the same rows), `json` or `yaml` (the
//! server's JSON as it came). Colours only when stdout is a terminal (and `NO_COLOR` is unset).

use crate::Error;
use chrono::{DateTime, Utc};
use comfy_table::{presets, ContentArrangement, Table};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML (for `table`, as JSON too: callers with
/// a table print it themselves).
pub fn print_value(format: Format, value: &Value) -> Result<(), Error> {
    crate::outln!("{}", render_value(format, value)?);
    Ok(())
}

/// The id for a table, the object for json/yaml: what an action on one
/// object (create, stop, delete, ...) prints.
pub fn print_one(format: Format, id: &str, object: &Value) -> Result<(), Error> {
    match format {
        Format::Json | Format::Yaml => print_value(format, object),
        Format::Table | Format::Csv => {
            crate::outln!("{id}");
            Ok(())
        }
    }
}

pub fn render_value(format: Format, value: &Value) -> Result<String, Error> {
    match format {
        Format::Yaml => serde_norway::to_string(value)
            .map(|s| s.trim_end().to_owned())
            .map_err(|e| Error::Output(e.to_string())),
        Format::Json | Format::Table | Format::Csv => {
            serde_json::to_string_pretty(value).map_err(|e| Error::Output(e.to_string()))
        }
    }
}

/// The rows as `format` asks: CSV (RFC 4180, via the csv crate) for
/// `csv`, else [`table`].
pub fn rows(format: Format, headers: &[&str], rows: Vec<Vec<String>>) -> Result<String, Error> {
    if format != Format::Csv {
        return Ok(table(headers, rows));
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| Error::Output(e.to_string());
    writer.write_record(headers).map_err(err)?;
    for row in rows {
        writer.write_record(&row).map_err(err)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| Error::Output(e.to_string()))?;
    Ok(String::from_utf8_lossy(&bytes).trim_end().to_owned())
}

/// Plain columns: a header line, then a line per row, padded, no borders.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().map(|h| h.to_uppercase()));
    for row in rows {
        table.add_row(row);
    }
    // comfy-table pads each cell by one space on both sides: trim the edges.
    table
        .lines()
        .map(|line| line.trim().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// How long ago, as `docker ps` says it: `5s`, `3m`, `2h`, `4d`.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - since).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A byte count for people: `512 B`, `3.4 MB` (powers of 1000, as pull
/// progress is usually shown).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A state coloured by how it is doing (on a TTY only).
pub fn state_colour(state: &str) -> String {
    let style = console::Style::new().for_stdout();
    let style = match state {
        "running" | "succeeded" => style.green(),
        "failed" => style.red(),
        "pending" | "scheduled" | "pulling" | "starting" | "stopping" => style.yellow(),
        _ => style,
    };
    style.apply_to(state).to_string()
}

/// An optional value, or `-`.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Writes to stdout; a closed pipe (the reader went away) exits with 0,
/// another write error with 1 (see [`crate::outln!`]).
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        let code = i32::from(e.kind() != std::io::ErrorKind::BrokenPipe);
        std::process::exit(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_plain_padded_columns() {
        let text = table(
            &["id", "state"],
            vec![
                vec!["a".into(), "running".into()],
                vec!["bbbb".into(), "failed".into()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(lines[0].contains("STATE"), "{text}");
        // Columns line up: STATE and the states start at the same offset.
        let at = lines[0].find("STATE").unwrap();
        assert_eq!(lines[1].find("running"), Some(at), "{text}");
        assert_eq!(lines[2].find("failed"), Some(at), "{text}");
        assert!(!text.contains('|') && !text.contains('+'), "{text}");
    }

    #[test]
    fn csv_rows_are_quoted() {
        let text = rows(
            Format::Csv,
            &["id", "name"],
            vec![vec!["a".into(), "x,y".into()]],
        )
        .unwrap();
        assert_eq!(text, "id,name\na,\"x,y\"");
    }

    #[test]
    fn ages_and_bytes_read_like_docker() {
        let now = Utc::now();
        let ago = |s: i64| age(now - chrono::Duration::seconds(s), now);
        assert_eq!(
            [ago(5), ago(180), ago(7200), ago(4 * 86_400)],
            ["5s", "3m", "2h", "4d"]
        );
        assert_eq!(ago(-3), "0s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3_400_000), "3.4 MB");
    }

    #[test]
    fn yaml_and_json_render_the_same_value() {
        let value = serde_json::json!({"id": "x", "n": 1});
        assert_eq!(render_value(Format::Yaml, &value).unwrap(), "id: x\nn: 1");
        assert!(render_value(Format::Json, &value)
            .unwrap()
            .contains("\"id\": \"x\""));
    }
}
