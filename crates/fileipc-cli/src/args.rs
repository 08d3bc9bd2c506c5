//! Argument types shared by several subcommands.

use std::time::Duration;

/// How long to wait: `--timeout T` (milliseconds like the original `@stdlib/ipc`, or a
/// number with a unit: `250ms`, `2s`, `1.5m`, `1h`) or `--forever`. Neither: the
/// library's default of 5 seconds.
#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
pub(crate) struct Wait {
    /// How long to wait: milliseconds (`500`) or a value with a unit (`250ms`, `2s`, `1m`).
    #[arg(long, short = 't', value_name = "T", value_parser = parse_duration, conflicts_with = "forever")]
    timeout: Option<Duration>,
    /// Wait without limit.
    #[arg(long)]
    forever: bool,
}

impl Wait {
    /// `None` means without limit.
    pub(crate) fn limit(&self) -> Option<Duration> {
        if self.forever {
            None
        } else {
            Some(self.timeout.unwrap_or(fileipc::DEFAULT_TIMEOUT))
        }
    }
}

/// Parses `500` (milliseconds), `500ms`, `2s`, `1.5s`, `3m`, `1h`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500, 250ms, 2s, 1m)"))?;
    let scale = match unit.trim() {
        "" | "ms" => 1e-3,
        "us" => 1e-6,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m or h)")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
