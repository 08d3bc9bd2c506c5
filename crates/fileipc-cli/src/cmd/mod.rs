//! One module per primitive: each function is one subcommand.

pub(crate) mod demo;
pub(crate) mod docs;
pub(crate) mod event;
pub(crate) mod kv;
pub(crate) mod mutex;
pub(crate) mod pidfile;
pub(crate) mod queue;
pub(crate) mod rm;
pub(crate) mod sem;
pub(crate) mod stat;

/// An error in what the user asked for, found after parsing (exit status 2).
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// `d` as people write it: `5s`, `250ms`, `1.5s`, `1m30s`, `2h`.
pub(crate) fn human(d: std::time::Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if d.as_secs() == 0 {
        return if d.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", d.subsec_millis())
        } else {
            format!("{}µs", d.subsec_micros())
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    let ms = d.subsec_millis();
    if ms > 0 {
        let frac = format!("{ms:03}");
        out += &format!("{s}.{}s", frac.trim_end_matches('0'));
    } else if s > 0 {
        out += &format!("{s}s");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_print_as_written() {
        let cases = [
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(3661), "1h1m1s"),
            (Duration::from_micros(20), "20µs"),
            (Duration::ZERO, "0s"),
        ];
        for (d, s) in cases {
            assert_eq!(super::human(d), s);
        }
    }
}
