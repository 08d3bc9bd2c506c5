//! `fileipc queue ...`; `recv` and `claim` acknowledge a message only once it was
//! handed on (written out and, to a pipe, read by the reader; or processed by the
//! command), so a reader or command that fails loses nothing.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fileipc::MessageQueue;

pub(crate) fn send(dir: &Path, msgs: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let q = MessageQueue::open(dir)?;
    if msgs.is_empty() {
        let stdin = std::io::stdin().lock();
        for line in stdin.split(b'\n') {
            let mut line = line?;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            q.send(&line)?;
        }
    } else {
        q.send_all(msgs.into_iter().map(OsStringExt::into_vec))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn recv(
    dir: &Path,
    limit: Option<Duration>,
    count: Option<u64>,
    all: bool,
) -> anyhow::Result<ExitCode> {
    let q = MessageQueue::open(dir)?;
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
        out.write_all(&msg)?;
        out.write_all(b"\n")?;
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
