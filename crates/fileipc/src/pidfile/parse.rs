//! The content of a PID file: the owner's decimal process ID and a newline (`1234\n`),
//! how this process writes it ([`pid_line`]) and how any PID file is read
//! ([`parse_pid`]: lenient about trailing white space only).

/// What a PID file must hold, for error messages.
pub(super) const EXPECTED: &str = "PID file (a process ID and a newline)";

/// The longest content accepted; a PID file is a few bytes.
pub(super) const MAX_LEN: usize = 64;

/// This process's PID file content.
pub(super) fn pid_line() -> String {
    format!("{}\n", std::process::id())
}

/// Parses PID file content: `None` if empty, the PID if it is one (trailing white
/// space allowed), else what is wrong.
pub(crate) fn parse_pid(content: &[u8]) -> std::result::Result<Option<u32>, String> {
    if content.is_empty() {
        return Ok(None);
    }
    if content.len() > MAX_LEN {
        return Err(format!("more than {MAX_LEN} bytes"));
    }
    let end = content
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let digits = &content[..end];
    let shown = || format!("{:?}", String::from_utf8_lossy(content));
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 10 {
        return Err(format!("{} is not a process ID", shown()));
    }
    // At most 10 ASCII digits: fits in u64.
    let n: u64 = digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
    if n == 0 || n > i32::MAX as u64 {
        return Err(format!("{} is out of the range of process IDs", shown()));
    }
    Ok(Some(n as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pids_leniently_at_the_end_only() {
        assert_eq!(parse_pid(b""), Ok(None));
        assert_eq!(parse_pid(b"1234\n"), Ok(Some(1234)));
        assert_eq!(parse_pid(b"1234"), Ok(Some(1234)));
        assert_eq!(parse_pid(b"1234 \r\n\n\t"), Ok(Some(1234)));
        assert_eq!(parse_pid(b"2147483647\n"), Ok(Some(2147483647)));
        assert_eq!(parse_pid(b"007\n"), Ok(Some(7)));
        for bad in [
            &b"\n"[..],
            b" 1234\n",
            b"+1234\n",
            b"-1\n",
            b"12 34\n",
            b"1234\nextra\n",
            b"0\n",
            b"2147483648\n",
            b"99999999999\n",
            b"hello",
            b"\xff\xfe",
            b"1234\0",
        ] {
            assert!(parse_pid(bad).is_err(), "{bad:?} accepted");
        }
        let long = vec![b'1'; MAX_LEN + 1];
        assert!(parse_pid(&long).unwrap_err().contains("more than"));
        let e = parse_pid(b"hello\n").unwrap_err();
        assert_eq!(e, r#""hello\n" is not a process ID"#);
    }

    #[test]
    fn pid_line_parses_back() {
        assert_eq!(
            parse_pid(pid_line().as_bytes()),
            Ok(Some(std::process::id()))
        );
    }
}
