//! A log-linear latency histogram (about 3% resolution, any u64 of nanoseconds), small
//! enough for a worker to print on one line and for the harness to merge across workers.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

/// Counts of samples per bucket.
#[derive(Debug, Default, Clone)]
pub(crate) struct Hist(BTreeMap<u32, u64>);

fn bucket(v: u64) -> u32 {
    if v < 2 * SUB {
        return v as u32;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let m = (v >> (e - SUB_BITS)) & (SUB - 1);
    (2 * SUB as u32) + (e - SUB_BITS - 1) * SUB as u32 + m as u32
}

/// The middle of bucket `b`'s range.
fn value(b: u32) -> f64 {
    let b = u64::from(b);
    if b < 2 * SUB {
        return b as f64;
    }
    let e = (b - 2 * SUB) / SUB + u64::from(SUB_BITS) + 1;
    let m = (b - 2 * SUB) % SUB;
    let lo = (1u64 << e) + (m << (e - u64::from(SUB_BITS)));
    lo as f64 + (1u64 << (e - u64::from(SUB_BITS))) as f64 / 2.0
}

impl Hist {
    /// Records one sample.
    pub(crate) fn add(&mut self, v: u64) {
        *self.0.entry(bucket(v)).or_default() += 1;
    }

    /// Number of samples.
    pub(crate) fn count(&self) -> u64 {
        self.0.values().sum()
    }

    /// Adds all of `other`'s samples.
    pub(crate) fn merge(&mut self, other: &Hist) {
        for (b, c) in &other.0 {
            *self.0.entry(*b).or_default() += c;
        }
    }

    /// The `q` quantile (0..=1) of the samples; `None` if there are none.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (b, c) in &self.0 {
            seen += c;
            if seen >= rank {
                return Some(value(*b));
            }
        }
        None
    }

    /// `bucket:count,...` (`-` when empty).
    pub(crate) fn encode(&self) -> String {
        if self.0.is_empty() {
            return "-".into();
        }
        let parts: Vec<String> = self.0.iter().map(|(b, c)| format!("{b}:{c}")).collect();
        parts.join(",")
    }

    /// The inverse of [`Hist::encode`].
    pub(crate) fn decode(s: &str) -> Result<Hist> {
        let mut h = Hist::default();
        if s == "-" {
            return Ok(h);
        }
        for part in s.split(',') {
            let (b, c) = part.split_once(':').context("bad histogram entry")?;
            *h.0.entry(b.parse()?).or_default() += c.parse::<u64>()?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 20, 12_345_678, u64::MAX / 2]) {
            let b = bucket(v);
            assert!(b >= last || v == 1 << 20, "bucket order at {v}");
            last = b;
            let mid = value(b);
            assert!(
                (mid - v as f64).abs() <= (v as f64) * 0.04 + 1.0,
                "{v} -> {mid}"
            );
        }
    }

    #[test]
    fn quantiles_and_round_trip() {
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.add(v * 1000);
        }
        let h2 = Hist::decode(&h.encode()).unwrap();
        assert_eq!(h2.count(), 1000);
        let p50 = h2.quantile(0.5).unwrap();
        assert!((p50 - 500_000.0).abs() < 20_000.0, "{p50}");
        let p99 = h2.quantile(0.99).unwrap();
        assert!((p99 - 990_000.0).abs() < 40_000.0, "{p99}");
        assert_eq!(Hist::default().quantile(0.5), None);
    }
}
