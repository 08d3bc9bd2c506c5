//! `fileipc queue ...`; `recv` and `claim` acknowledge a message only once it was
//! handed on (written out and, to a pipe, read by the reader; or processed by the
//! command), so a reader or command that fails loses nothing.

use std::ffi::OsString;
use std::io::{BufRead, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use fileipc::{DEFAULT_MAX_MESSAGE_SIZE, MessageQueue, QueueOptions};

/// How messages are delimited on standard input (`send`) and output (`recv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// One message per line (`send` drops a `\r` before the `\n`).
    Lines,
    /// Each message followed by a NUL byte (`-0`).
    Nul,
    /// Each message as a 4-byte big-endian length, then its bytes (`--framed`).
    Framed,
}

/// How a queue command that may create the queue opens it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Create {
    /// Permission bits of what is created (`None`: the library's default).
    pub(crate) mode: Option<u32>,
    /// Whether sends are synced to stable storage before they return.
    pub(crate) durable: bool,
}

fn open(dir: &Path, create: Create) -> fileipc::Result<MessageQueue> {
    let options = QueueOptions::new().durable(create.durable);
    match create.mode {
        Some(mode) => options.mode(mode).open(dir),
        None => options.open(dir),
    }
}

/// Messages sent in one `send_all` batch at most.
const BATCH: usize = 256;

pub(crate) fn send(
    dir: &Path,
    msgs: Vec<OsString>,
    framing: Framing,
    create: Create,
) -> anyhow::Result<ExitCode> {
    let q = open(dir, create)?;
    if !msgs.is_empty() {
        // Every size is checked before anything is sent; a failure after the first
        // batch is an `Error::Partial` that says how many were.
        q.send_all(msgs.into_iter().map(OsStringExt::into_vec))?;
        return Ok(ExitCode::SUCCESS);
    }
    // A buffer of our own, whose contents say whether a next message is already here.
    let mut input = std::io::BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let mut sent = 0usize;
    let mut batch: Vec<Vec<u8>> = Vec::new();
    loop {
        let next = read_message(&mut input, framing, DEFAULT_MAX_MESSAGE_SIZE);
        let (msg, failure) = match next {
            Ok(m) => (m, None),
            Err(e) => (None, Some(e)),
        };
        let end = msg.is_none();
        batch.extend(msg);
        // Sent once no further complete message is already buffered: a slow producer's
        // message goes out at once, a fast one's are sent BATCH at a time.
        if end || batch.len() >= BATCH || !has_complete_message(input.buffer(), framing) {
            let n = batch.len();
            match q.send_all(batch.drain(..)) {
                Ok(k) => sent += k,
                Err(fileipc::Error::Partial {
                    completed, source, ..
                }) => {
                    return Err(anyhow!(source)).context(format!(
                        "{}: {} messages were sent before this error",
                        dir.display(),
                        sent + completed
                    ));
                }
                Err(e) => {
                    return Err(anyhow!(e)).context(format!(
                        "{}: {sent} messages were sent (not the {n} after them)",
                        dir.display()
                    ));
                }
            }
        }
        if let Some(e) = failure {
            return Err(anyhow!(e)).context(format!(
                "{}: message {} of standard input not sent; the {sent} before it were",
                dir.display(),
                sent + 1
            ));
        }
        if end {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Whether `buf` holds a whole message in `framing` (so reading it will not block).
fn has_complete_message(buf: &[u8], framing: Framing) -> bool {
    match framing {
        Framing::Lines => buf.contains(&b'\n'),
        Framing::Nul => buf.contains(&0),
        Framing::Framed => {
            buf.len() >= 4
                && buf.len() as u64 - 4
                    >= u64::from(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]))
        }
    }
}

/// Reads the next message from `r` (`None` at the end of the input), refusing one longer
/// than `max` before reading more of it than `max` bytes.
fn read_message(
    r: &mut impl BufRead,
    framing: Framing,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let too_large = |len: Option<usize>| {
        let size = len.map_or("longer than".to_owned(), |n| {
            format!("{n} bytes, more than")
        });
        std::io::Error::new(
            ErrorKind::InvalidInput,
            format!("the message is {size} a queue message may be ({max} bytes)"),
        )
    };
    let delim = match framing {
        Framing::Lines => b'\n',
        Framing::Nul => 0,
        Framing::Framed => {
            let mut len = [0u8; 4];
            let got = read_full(r, &mut len)?;
            if got == 0 {
                return Ok(None);
            }
            if got < 4 {
                return Err(truncated("length"));
            }
            let len = u32::from_be_bytes(len) as usize;
            if len > max {
                return Err(too_large(Some(len)));
            }
            let mut msg = vec![0u8; len];
            if read_full(r, &mut msg)? < len {
                return Err(truncated("message"));
            }
            return Ok(Some(msg));
        }
    };
    let mut msg = Vec::new();
    let mut started = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            // The end of the input: a last message without its delimiter still counts.
            return Ok(started.then_some(msg));
        }
        started = true;
        let (take, done) = match buf.iter().position(|&b| b == delim) {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if msg.len() + take > max {
            return Err(too_large(None));
        }
        msg.extend_from_slice(&buf[..take]);
        r.consume(take + usize::from(done));
        if done {
            if framing == Framing::Lines && msg.last() == Some(&b'\r') {
                msg.pop();
            }
            return Ok(Some(msg));
        }
    }
}

fn truncated(what: &str) -> std::io::Error {
    std::io::Error::new(
        ErrorKind::UnexpectedEof,
        format!("the input ended inside a frame's {what}"),
    )
}

/// Fills `buf` from `r`; fewer bytes only at the end of the input.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes one received message to `out` in `framing`.
fn write_message(out: &mut impl Write, msg: &[u8], framing: Framing) -> std::io::Result<()> {
    match framing {
        Framing::Lines => {
            out.write_all(msg)?;
            out.write_all(b"\n")
        }
        Framing::Nul => {
            out.write_all(msg)?;
            out.write_all(b"\0")
        }
        Framing::Framed => {
            // Queue messages are at most `MESSAGE_SIZE_LIMIT` (< 4 GiB) long.
            let len = u32::try_from(msg.len()).expect("a queue message fits a u32 length");
            out.write_all(&len.to_be_bytes())?;
            out.write_all(msg)
        }
    }
}

pub(crate) fn recv(
    dir: &Path,
    limit: Option<Duration>,
    count: Option<u64>,
    all: bool,
    framing: Framing,
    mode: Option<u32>,
) -> anyhow::Result<ExitCode> {
    // Durability concerns sends only: receiving never syncs.
    let q = open(
        dir,
        Create {
            mode,
            durable: false,
        },
    )?;
    let deadline = limit.and_then(|l| Instant::now().checked_add(l));
    let want = if all { u64::MAX } else { count.unwrap_or(1) };
    let mut out = std::io::stdout().lock();
    let pipe = stdout_is_pipe();
    let mut got = 0u64;
    while got < want {
        // Claimed, written, flushed, then acknowledged: a failed write (or a reader that
        // went away, like `head -n 1`) gives the message back.
        let msg = if all && got > 0 {
            q.try_claim()?
        } else {
            match deadline {
                Some(d) => q.claim_deadline(d)?,
                None => Some(q.claim_forever()?),
            }
        };
        let Some(msg) = msg else { break };
        write_message(&mut out, &msg, framing)?;
        out.flush()?;
        if pipe {
            wait_until_read(&out)?;
        }
        msg.ack()?;
        got += 1;
    }
    Ok(crate::yes(got > 0))
}

pub(crate) fn count(dir: &Path) -> anyhow::Result<ExitCode> {
    let q = MessageQueue::open_existing(dir)?;
    println!("{}", q.count()?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn clear(dir: &Path) -> anyhow::Result<ExitCode> {
    MessageQueue::open(dir)?.clear()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn destroy(dir: &Path) -> anyhow::Result<ExitCode> {
    MessageQueue::open(dir)?.destroy()?;
    Ok(ExitCode::SUCCESS)
}

/// Whether standard output is a pipe (or FIFO): then a successful write only reached the
/// pipe's buffer, not the reader.
fn stdout_is_pipe() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.file_type().is_fifo())
}

/// How long a written message may sit unread in a pipe whose reader is alive before it
/// counts as handed on: a reader that reads only once we exit (a parent collecting our
/// output after `wait`) must not hold us up for ever, and one that exits without reading
/// (`head -n 1`) closes the pipe well within it.
const UNREAD_GRACE: Duration = Duration::from_millis(500);

/// Waits until the reader of the pipe `out` has read everything written to it, or
/// [`UNREAD_GRACE`] passed with the reader alive; an error if the reader closed the pipe
/// first (what it did not read is then given back).
fn wait_until_read(out: &impl std::os::fd::AsFd) -> anyhow::Result<()> {
    use rustix::event::{PollFd, PollFlags, poll};
    let start = Instant::now();
    let mut nap = Duration::from_micros(5);
    loop {
        if rustix::io::ioctl_fionread(out)? == 0 {
            return Ok(());
        }
        let mut fds = [PollFd::new(out, PollFlags::OUT)];
        poll(&mut fds, Some(&rustix::time::Timespec::default()))?;
        if fds[0].revents().contains(PollFlags::ERR) {
            anyhow::bail!("standard output: the reader closed the pipe");
        }
        if start.elapsed() >= UNREAD_GRACE {
            return Ok(());
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(5));
    }
}

pub(crate) fn claim(
    dir: &Path,
    limit: Option<Duration>,
    lease: Duration,
    max_deliveries: u32,
    cmd: &[OsString],
) -> anyhow::Result<ExitCode> {
    let q = fileipc::QueueOptions::new()
        .lease(lease)
        .max_deliveries(max_deliveries)
        .open(dir)?;
    let deadline = limit.and_then(|l| Instant::now().checked_add(l));
    let msg = match deadline {
        Some(d) => q.claim_deadline(d)?,
        None => Some(q.claim_forever()?),
    };
    let Some(mut msg) = msg else {
        return Ok(crate::NO);
    };
    let (program, args) = cmd.split_first().expect("clap requires CMD");
    let mut child = std::process::Command::new(program)
        .args(args)
        .env("FILEIPC_ATTEMPT", msg.attempt().to_string())
        .env("FILEIPC_FENCE", msg.fence().to_string())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("{}: {e}", program.to_string_lossy()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let (done_tx, done) = std::sync::mpsc::channel();
    let status = std::thread::scope(|s| {
        let bytes = msg.bytes().to_vec();
        // A command that does not read its input must not block us: write aside.
        s.spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
        s.spawn(move || {
            let _ = done_tx.send(child.wait());
        });
        // Renew the lease while the command runs.
        let renew = (lease / 3).max(Duration::from_millis(10));
        loop {
            match done.recv_timeout(renew) {
                Ok(status) => break status,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = msg.extend(lease) {
                        eprintln!("fileipc: {e}");
                    }
                }
                Err(e) => break Err(std::io::Error::other(e)),
            }
        }
    })?;
    if status.success() {
        msg.ack()?;
        return Ok(ExitCode::SUCCESS);
    }
    msg.nack(Duration::ZERO)?;
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

pub(crate) fn dead(dir: &Path, drain: bool) -> anyhow::Result<ExitCode> {
    let dead = MessageQueue::open(dir)?.dead_letters()?;
    let mut out = std::io::stdout().lock();
    let pipe = stdout_is_pipe();
    let mut held = Vec::new();
    while let Some(m) = dead.try_claim()? {
        let attempts = m.dead_letter_attempts();
        write!(out, "{attempts}\t")?;
        out.write_all(m.bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        if drain {
            if pipe {
                wait_until_read(&out)?;
            }
            m.ack()?;
        } else {
            // Listed, kept: given back once all are listed (at most the queue's
            // in-flight limit of 1024 are listed).
            held.push(m);
        }
    }
    let left = dead.count()?.saturating_sub(held.len() as u64);
    if !drain && left > 0 {
        eprintln!("fileipc: {left} more dead letters not listed (drain these to see them)");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], framing: Framing, max: usize) -> std::io::Result<Vec<Vec<u8>>> {
        let mut r = std::io::BufReader::with_capacity(3, input);
        let mut v = Vec::new();
        while let Some(m) = read_message(&mut r, framing, max)? {
            v.push(m);
        }
        Ok(v)
    }

    #[test]
    fn reading_messages() {
        let lines = all(b"a\r\n\nbc\nlast", Framing::Lines, 10).unwrap();
        assert_eq!(lines, [&b"a"[..], b"", b"bc", b"last"]);
        assert_eq!(all(b"a\n", Framing::Lines, 10).unwrap(), [b"a"]);
        let nul = all(b"x\ny\r\0\0z\0", Framing::Nul, 10).unwrap();
        assert_eq!(nul, [&b"x\ny\r"[..], b"", b"z"]);
        let framed = all(b"\0\0\0\x02\0\n\0\0\0\0", Framing::Framed, 10).unwrap();
        assert_eq!(framed, [&b"\0\n"[..], b""]);
        assert!(all(b"0123456789", Framing::Lines, 10).is_ok());
        assert!(all(b"0123456789A\n", Framing::Lines, 10).is_err());
        assert!(all(b"\0\0\0\x0b", Framing::Framed, 10).is_err());
        assert!(all(b"\0\0\0\x02x", Framing::Framed, 10).is_err());
        assert!(all(b"\0\0", Framing::Framed, 10).is_err());
    }

    #[test]
    fn complete_messages() {
        assert!(has_complete_message(b"a\nb", Framing::Lines));
        assert!(!has_complete_message(b"ab", Framing::Lines));
        assert!(has_complete_message(b"\0\0\0\x01x", Framing::Framed));
        assert!(!has_complete_message(b"\0\0\0\x02x", Framing::Framed));
        assert!(!has_complete_message(b"\0\0", Framing::Framed));
    }
}
