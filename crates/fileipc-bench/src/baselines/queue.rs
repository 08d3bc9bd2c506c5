//! The queue baselines: a POSIX message queue (`posix_mq_chunked`: messages over its
//! largest allowed size, `msgsize_max`, sent as several mq messages), a named pipe of fixed-size frames, the seed's
//! file-per-message directory, a futex word (the ping-pong floor), and a log with one
//! `fdatasync` per message (the durable baseline).
//!
//! Where a message cannot move in one atomic kernel operation (a pipe frame over
//! `PIPE_BUF`, a message split into several mq messages) and a queue has several
//! producers or consumers, each side takes an `flock` per message (one lock file for the
//! senders, one for the receivers), so frames are neither interleaved nor split between
//! receivers: what a user of those primitives would have to do.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};

use super::{Env, SEED_POLL, SEED_TIMEOUT_NS};
use crate::api::QueueEnd;
use crate::ours;
use crate::sys::{self, Mq, Shm, now_ns};

/// Opens channel `chan` of the queue implementation `imp`.
pub(crate) fn open_queue(imp: &str, env: &Env, chan: &str) -> Result<Box<dyn QueueEnd>> {
    Ok(match imp {
        "ours" => ours::queue(&env.dir.join(chan), false)?,
        "ours_durable" => ours::queue(&env.dir.join(chan), true)?,
        "ours_claim" => ours::queue_claim(&env.dir.join(chan))?,
        "ours_redis" => ours::queue(&env.redis_ours(chan)?, false)?,
        "redis_list" => super::redis::open_queue(env, chan)?,
        "posix_mq" => {
            let name = format!("/{}-{chan}", env.tag);
            let mq = Mq::open(&name, env.depth, env.size.max(16))
                .with_context(|| format!("mq_open {name} (maxmsg {})", env.depth))?;
            Box::new(MqQueue(mq))
        }
        "posix_mq_chunked" => {
            let name = format!("/{}-{chan}", env.tag);
            let chunk = mq_chunk(env.size);
            let mq = Mq::open(&name, env.depth, chunk).with_context(|| {
                format!("mq_open {name} (maxmsg {}, msgsize {chunk})", env.depth)
            })?;
            Box::new(MqChunked {
                mq,
                chunk,
                part: Vec::with_capacity(chunk),
                locks: EndLocks::open(env, chan, chunk < env.size)?,
            })
        }
        "pipe" => {
            let path = env.dir.join(format!("{chan}.fifo"));
            sys::mkfifo(&path).with_context(|| format!("mkfifo {}", path.display()))?;
            // O_RDWR: opening never blocks waiting for the other end (Linux).
            let f = OpenOptions::new().read(true).write(true).open(&path)?;
            let size = env.size.max(12);
            Box::new(Pipe {
                f,
                size,
                multi: env.consumers > 1,
                locks: EndLocks::open(env, chan, size > PIPE_BUF)?,
            })
        }
        "seed_files" => {
            let dir = env.dir.join(chan);
            fs::create_dir_all(&dir)?;
            Box::new(SeedDir {
                dir,
                seq: 0,
                pid: std::process::id(),
                deadline: env.deadline.clone(),
            })
        }
        "futex" => {
            let shm = Shm::open(&env.dir.join(format!("{chan}.futex")), 64)?;
            Box::new(FutexChan { shm, seen: 0 })
        }
        "fdatasync" => {
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .open(env.dir.join(format!("{chan}.log")))?;
            Box::new(SyncLog(f))
        }
        other => bail!("unknown queue implementation {other:?}"),
    })
}

/// POSIX message queue.
struct MqQueue(Mq);

impl QueueEnd for MqQueue {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        Ok(self.0.send(msg)?)
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        self.0.recv(buf)?;
        Ok(true)
    }
}

/// The largest write a pipe makes atomically (Linux).
const PIPE_BUF: usize = 4096;

/// The size of the mq messages a message of `size` bytes travels in: the whole message
/// if the system's `msgsize_max` allows it, else `msgsize_max` bytes.
pub(crate) fn mq_chunk(size: usize) -> usize {
    size.max(16).min(sys::mq_msgsize_max())
}

/// The per-message locks of a queue with several producers or consumers whose messages
/// take more than one kernel operation: the senders' lock file and the receivers'.
struct EndLocks {
    send: File,
    recv: File,
}

impl EndLocks {
    /// The locks of channel `chan`, if its messages are `split` (not one atomic kernel
    /// operation each) and it has several producers or consumers; else `None`.
    fn open(env: &Env, chan: &str, split: bool) -> Result<Option<EndLocks>> {
        if !split || (env.producers <= 1 && env.consumers <= 1) {
            return Ok(None);
        }
        let open = |side: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(env.dir.join(format!("{chan}.{side}.lock")))
        };
        Ok(Some(EndLocks {
            send: open("send")?,
            recv: open("recv")?,
        }))
    }
}

/// Runs `f` holding `lock` (an `flock(LOCK_EX)`), if any.
fn locked<T>(lock: Option<&File>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let Some(l) = lock else { return f() };
    sys::flock_lock(l, true)?;
    let r = f();
    sys::flock_unlock(l)?;
    r
}

/// A POSIX message queue carrying each message as consecutive mq messages of `chunk`
/// bytes (the last one shorter), reassembled by the receiver.
struct MqChunked {
    mq: Mq,
    chunk: usize,
    part: Vec<u8>,
    locks: Option<EndLocks>,
}

impl QueueEnd for MqChunked {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let (mq, chunk) = (&self.mq, self.chunk);
        locked(self.locks.as_ref().map(|l| &l.send), || {
            for part in msg.chunks(chunk) {
                mq.send(part)?;
            }
            Ok(())
        })
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        // Every message has the size of the run (the caller sized `buf` to it).
        let want = buf.len();
        let (mq, part) = (&self.mq, &mut self.part);
        locked(self.locks.as_ref().map(|l| &l.recv), || {
            buf.clear();
            while buf.len() < want {
                mq.recv(part)?;
                if part.is_empty() {
                    bail!("posix_mq: empty part after {} of {want} bytes", buf.len());
                }
                buf.extend_from_slice(part);
            }
            Ok(())
        })?;
        if buf.len() != want {
            bail!("posix_mq: parts add up to {} bytes, want {want}", buf.len());
        }
        Ok(true)
    }
}

/// A named pipe carrying fixed-size frames (every message is `size` bytes).
struct Pipe {
    f: File,
    size: usize,
    multi: bool,
    /// Per-message locks of a multi-producer or multi-consumer pipe of frames over
    /// `PIPE_BUF` bytes.
    locks: Option<EndLocks>,
}

impl QueueEnd for Pipe {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        // Frames up to PIPE_BUF (4096) bytes are written atomically; larger ones under
        // the senders' lock when there are several producers or consumers.
        let f = &mut self.f;
        locked(self.locks.as_ref().map(|l| &l.send), || {
            Ok(f.write_all(msg)?)
        })
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        let want = self.size;
        buf.resize(want, 0);
        if let Some(l) = &self.locks {
            let f = &mut self.f;
            locked(Some(&l.recv), || Ok(f.read_exact(buf)?))?;
            return Ok(true);
        }
        let n = loop {
            match self.f.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            bail!("pipe: end of file");
        }
        if n < want {
            if self.multi {
                bail!("pipe: short read ({n} of {want} bytes) with several readers");
            }
            self.f.read_exact(&mut buf[n..])?;
        }
        Ok(true)
    }
}

/// The seed's queue: one file per message in a directory; `recv` lists and sorts the
/// directory, takes the first name, reads and deletes it, and sleeps 10 ms when empty.
struct SeedDir {
    dir: PathBuf,
    seq: u64,
    pid: u32,
    deadline: Rc<Cell<u64>>,
}

impl QueueEnd for SeedDir {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.seq += 1;
        let name = format!("{:020}_{:010}_{:012}", now_ns(), self.pid, self.seq);
        // Written under a temporary name and renamed, so a reader never sees half a
        // message (the seed did not even do that; this baseline must stay countable).
        let tmp = self.dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, msg)?;
        fs::rename(&tmp, self.dir.join(format!("{name}.msg")))?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        let give_up = self.deadline.get().min(now_ns() + SEED_TIMEOUT_NS);
        loop {
            let mut names: Vec<_> = fs::read_dir(&self.dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .filter(|n| n.as_bytes_lossy().ends_with(b".msg"))
                .collect();
            names.sort();
            for name in names {
                let path = self.dir.join(&name);
                match fs::read(&path) {
                    Ok(data) => {
                        if fs::remove_file(&path).is_ok() {
                            *buf = data;
                            return Ok(true);
                        }
                        // Another consumer took it between our read and our delete.
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if now_ns() >= give_up {
                return Ok(false);
            }
            std::thread::sleep(SEED_POLL);
        }
    }
}

trait LossyBytes {
    fn as_bytes_lossy(&self) -> &[u8];
}

impl LossyBytes for std::ffi::OsString {
    fn as_bytes_lossy(&self) -> &[u8] {
        use std::os::unix::ffi::OsStrExt;
        self.as_os_str().as_bytes()
    }
}

/// The floor for ping-pong: a counter word in a shared mapping, `FUTEX_WAIT`/`FUTEX_WAKE`
/// on it, and only the 12-byte frame header as payload (two atomic words). One sender and
/// one receiver per channel, one message in flight (ping-pong only).
struct FutexChan {
    shm: Shm,
    seen: u32,
}

impl QueueEnd for FutexChan {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let head: [u8; 12] = msg
            .get(..12)
            .and_then(|h| h.try_into().ok())
            .unwrap_or([0; 12]);
        let (p, s) = head.split_at(4);
        self.shm
            .u32(4)
            .store(u32::from_le_bytes(p.try_into()?), Ordering::Relaxed);
        self.shm
            .u64(8)
            .store(u64::from_le_bytes(s.try_into()?), Ordering::Relaxed);
        let w = self.shm.u32(0);
        w.fetch_add(1, Ordering::Release);
        sys::futex_wake(w, 1);
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        let w = self.shm.u32(0);
        loop {
            let v = w.load(Ordering::Acquire);
            if v != self.seen {
                self.seen = self.seen.wrapping_add(1);
                if buf.len() < 12 {
                    buf.resize(12, 0);
                }
                let p = self.shm.u32(4).load(Ordering::Relaxed);
                let s = self.shm.u64(8).load(Ordering::Relaxed);
                buf[..4].copy_from_slice(&p.to_le_bytes());
                buf[4..12].copy_from_slice(&s.to_le_bytes());
                return Ok(true);
            }
            sys::futex_wait(w, v, None);
        }
    }
}

/// A durable log: one `write` + `fdatasync` per message, on one file shared by producers.
struct SyncLog(File);

impl QueueEnd for SyncLog {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.0.write_all(msg)?;
        self.0.sync_data()?;
        Ok(())
    }

    fn recv(&mut self, _buf: &mut Vec<u8>) -> Result<bool> {
        bail!("the fdatasync log is send-only")
    }
}
