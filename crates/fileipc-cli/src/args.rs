//! Argument types shared by several subcommands.

use std::time::Duration;

/// How long to wait: without `--timeout`, without limit (like flock(1), GNU sem and
/// inotifywait); `--timeout T` bounds it (`30` is seconds; `500ms`, `30s`, `1h30m`).
#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
pub(crate) struct Wait {
    /// Give up after T (default: wait without limit). A bare number is seconds; units:
    /// ms, s, m, h, combined as in `1h30m` (`0`: do not wait).
    #[arg(long, short = 't', value_name = "T", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Wait without limit (the default; accepted for compatibility).
    #[arg(long, hide = true, conflicts_with = "timeout")]
    forever: bool,
}

impl Wait {
    /// `None` means without limit.
    pub(crate) fn limit(&self) -> Option<Duration> {
        if self.forever { None } else { self.timeout }
    }
}

/// Permission bits for what a command creates: `--mode 660`.
#[derive(Debug, Clone, Copy, clap::Args)]
#[group(skip)]
pub(crate) struct Mode {
    /// Permission bits, in octal, of the files this command creates (default 600, the
    /// owner only; PID files 644). 660 shares them with the group; every user of a path
    /// must give the same mode.
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub(crate) mode: Option<u32>,
}

/// How `queue send` reads and `queue recv` writes messages.
#[derive(Debug, Clone, Copy, clap::Args)]
#[group(skip)]
pub(crate) struct Framing {
    /// Messages separated by NUL bytes instead of newlines (each followed by one).
    #[arg(short = '0', long = "null", conflicts_with = "framed")]
    null: bool,
    /// Binary messages: each a 4-byte big-endian length followed by that many bytes, so
    /// any bytes round-trip.
    #[arg(long)]
    framed: bool,
}

impl Framing {
    pub(crate) fn get(self) -> crate::cmd::queue::Framing {
        use crate::cmd::queue::Framing::*;
        match (self.null, self.framed) {
            (true, _) => Nul,
            (_, true) => Framed,
            _ => Lines,
        }
    }
}

/// How a queue command that creates the queue creates it.
#[derive(Debug, Clone, Copy, clap::Args)]
#[group(skip)]
pub(crate) struct QueueCreate {
    #[command(flatten)]
    mode: Mode,
    /// Sync each send to stable storage before it returns (survives a power loss; slower).
    #[arg(long)]
    durable: bool,
}

impl QueueCreate {
    pub(crate) fn get(self) -> crate::cmd::queue::Create {
        crate::cmd::queue::Create {
            mode: self.mode.mode,
            durable: self.durable,
        }
    }
}

/// How a `kv` command that creates the store creates it.
#[derive(Debug, Clone, Copy, clap::Args)]
#[group(skip)]
pub(crate) struct KvCreate {
    #[command(flatten)]
    mode: Mode,
    /// Sync the commit to stable storage before returning (survives a power loss).
    #[arg(long)]
    durable: bool,
}

impl KvCreate {
    pub(crate) fn get(self) -> crate::cmd::kv::Create {
        crate::cmd::kv::Create {
            mode: self.mode.mode,
            durable: self.durable,
        }
    }
}

/// Parses an octal mode: `660`, `0660`, `0o660`.
pub(crate) fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(m),
        _ => Err(format!(
            "{s:?} is not a permission mode (octal, at most 777: e.g. 600, 660, 644)"
        )),
    }
}

/// Parses `30` (seconds), `500ms`, `30s`, `1.5m`, `1h30m`, `2h 5m 3s`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (examples: 30, 500ms, 30s, 1m, 1h30m)");
    let text = s.trim();
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut secs = 0.0f64;
    let mut parts = 0;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(split);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "" if parts == 0 && after.trim().is_empty() => 1.0,
            "" => {
                return Err(format!(
                    "{s:?}: a number without a unit must be alone (seconds)"
                ));
            }
            "ms" => 1e-3,
            "us" => 1e-6,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                ));
            }
        };
        secs += value * scale;
        parts += 1;
        rest = after.trim_start();
    }
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("1m30s500ms"),
            Ok(Duration::from_millis(90_500))
        );
        assert_eq!(parse_duration("2h 5m"), Ok(Duration::from_secs(7500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("1m30").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("888").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("rw").is_err());
    }
}
