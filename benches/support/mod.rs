//! What the benchmarks share: environment knobs, latency percentiles, directory sizes.

// Each benchmark uses a subset of these.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};

/// A positive integer from the environment (`_` separators allowed), or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Latency statistics in milliseconds; nearest-rank percentiles.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(samples: &[Duration]) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        let n = ms.len();
        let pct = |q: f64| ms[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Stats {
            n,
            min: ms[0],
            mean: ms.iter().sum::<f64>() / n as f64,
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            max: ms[n - 1],
        }
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {:>7.2}  p90 {:>7.2}  p99 {:>7.2}  max {:>7.2}  mean {:>7.2} ms  (n={})",
            self.p50, self.p90, self.p99, self.max, self.mean, self.n
        )
    }

    pub fn json(&self) -> Value {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        json!({
            "n": self.n, "p50_ms": r(self.p50), "p90_ms": r(self.p90), "p99_ms": r(self.p99),
            "max_ms": r(self.max), "min_ms": r(self.min), "mean_ms": r(self.mean),
        })
    }
}

/// Bytes under `p` (files and subdirectories).
pub fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Milliseconds, to the microsecond.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
