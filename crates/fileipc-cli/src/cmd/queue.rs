//! `fileipc queue ...`

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
    let mut got = 0u64;
    while got < want {
        let msg = if all && got > 0 {
            q.try_recv()?
        } else {
            match deadline {
                Some(d) => q.recv_deadline(d)?,
                None => Some(q.recv_forever()?),
            }
        };
        let Some(msg) = msg else { break };
        out.write_all(&msg)?;
        out.write_all(b"\n")?;
        got += 1;
    }
    out.flush()?;
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
