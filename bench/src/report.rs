//! The result table (stdout) and the JSON file.

use crate::machine::Machine;
use serde::Serialize;

/// One line of the table: the platform's figure against a raw baseline
/// (ratio = platform / raw) or against the target alone.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub unit: String,
    pub platform: f64,
    /// What the raw figure is ("ctr run -d", "worker library", ...).
    pub raw_label: String,
    pub raw: Option<f64>,
    /// platform / raw.
    pub ratio: Option<f64>,
    pub target: String,
    pub meets: Option<bool>,
}

impl Row {
    pub fn vs_raw(scenario: &str, unit: &str, platform: f64, raw_label: &str, raw: f64) -> Self {
        Self {
            scenario: scenario.to_owned(),
            unit: unit.to_owned(),
            platform,
            raw_label: raw_label.to_owned(),
            raw: Some(raw),
            ratio: (raw > 0.0).then(|| platform / raw),
            target: String::new(),
            meets: None,
        }
    }

    pub fn alone(scenario: &str, unit: &str, platform: f64) -> Self {
        Self {
            scenario: scenario.to_owned(),
            unit: unit.to_owned(),
            platform,
            raw_label: String::new(),
            raw: None,
            ratio: None,
            target: String::new(),
            meets: None,
        }
    }

    /// Target on the ratio: `at_most` true means ratio <= limit.
    pub fn ratio_target(mut self, limit: f64, at_most: bool) -> Self {
        let (sym, ok) = match self.ratio {
            Some(r) if at_most => ("<=", r <= limit),
            Some(r) => (">=", r >= limit),
            None => (if at_most { "<=" } else { ">=" }, false),
        };
        self.target = format!("ratio {sym} {limit:.1}x");
        self.meets = self.ratio.map(|_| ok);
        self
    }

    /// Target on the platform figure itself.
    pub fn value_target(mut self, limit: f64, at_most: bool) -> Self {
        let (sym, ok) = if at_most {
            ("<=", self.platform <= limit)
        } else {
            (">=", self.platform >= limit)
        };
        self.target = format!("{sym} {} {}", fmt_num(limit), self.unit);
        self.meets = Some(ok);
        self
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub run_id: String,
    pub command: String,
    pub started_at: String,
    pub finished_at: String,
    pub quick: bool,
    pub machine: Machine,
    pub rows: Vec<Row>,
    /// Per scenario: every summary, the timings medians, counts.
    pub details: serde_json::Map<String, serde_json::Value>,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "-".to_owned()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The table as Markdown (readable on a terminal too).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | platform | raw baseline | ratio | target | met |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let raw = match r.raw {
            Some(v) => format!("{} {} ({})", fmt_num(v), r.unit, r.raw_label),
            None => "-".to_owned(),
        };
        let ratio = r.ratio.map_or("-".to_owned(), |x| format!("{x:.2}x"));
        let met = match r.meets {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        out.push_str(&format!(
            "| {} | {} {} | {raw} | {ratio} | {} | {met} |\n",
            r.scenario,
            fmt_num(r.platform),
            r.unit,
            if r.target.is_empty() { "-" } else { &r.target },
        ));
    }
    out
}
