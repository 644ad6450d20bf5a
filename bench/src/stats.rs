//! Sample summaries: nearest-rank percentiles over the sorted samples.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

/// Nearest-rank percentile (`p` in 0..=100) of already sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarize(samples: &[f64]) -> Summary {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return Summary {
            p50: f64::NAN,
            p99: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            mean: f64::NAN,
            ..Summary::default()
        };
    }
    Summary {
        n: s.len(),
        p50: percentile(&s, 50.0),
        p99: percentile(&s, 99.0),
        min: s[0],
        max: s[s.len() - 1],
        mean: s.iter().sum::<f64>() / s.len() as f64,
    }
}

/// Median of the present values (None when there are none).
pub fn median_of(values: impl IntoIterator<Item = Option<i64>>) -> Option<f64> {
    let v: Vec<f64> = values.into_iter().flatten().map(|x| x as f64).collect();
    (!v.is_empty()).then(|| summarize(&v).p50)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        let sum = summarize(&[3.0, 1.0, 2.0]);
        assert_eq!((sum.n, sum.p50, sum.min, sum.max), (3, 2.0, 1.0, 3.0));
        assert_eq!(median_of([Some(1), None, Some(3), Some(2)]), Some(2.0));
        assert_eq!(median_of([None]), None);
    }
}
