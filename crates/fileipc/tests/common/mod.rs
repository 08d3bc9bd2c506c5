//! Shared harness for the cross-process integration tests.
//!
//! A test spawns children by re-running its own test binary with only the
//! `child_process_entry` test selected and the role in the environment. Each test file
//! that spawns children has this entry point:
//!
//! ```ignore
//! #[test]
//! fn child_process_entry() {
//!     common::child_main(|role, args| match role {
//!         "locker" => locker(&args),
//!         other => panic!("unknown role {other}"),
//!     });
//! }
//! ```
//!
//! In a normal run `child_main` returns at once (no role is set). A child speaks to its
//! parent with [`say`], one line at a time; the parent reads those lines with
//! [`Proc::expect_line`], bounded by a timeout, so a hung child fails the test instead of
//! hanging it. Every `Proc` is SIGKILLed when dropped.

#![allow(dead_code, unreachable_pub)]

pub mod measure;
pub mod redis;
pub mod stalls;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

const ROLE_VAR: &str = "FILEIPC_TEST_ROLE";
const ARGS_VAR: &str = "FILEIPC_TEST_ARGS";
const PREFIX: &str = "@@ ";

/// Generous bound for anything a test waits on: long enough for a loaded 2-core CI
/// machine, short enough that a hang fails the run.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// In a child (role set in the environment): runs `dispatch(role, args)` and exits the
/// process with status 0, or 101 if it panicked. In the parent: returns at once.
pub fn child_main(dispatch: impl FnOnce(&str, Vec<String>)) {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let args: Vec<String> = std::env::var(ARGS_VAR)
        .unwrap_or_default()
        .split('\x1f')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(&role, args)));
    std::io::stdout().flush().ok();
    std::process::exit(if r.is_ok() { 0 } else { 101 });
}

/// In a child: sends one line to the parent.
pub fn say(msg: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{PREFIX}{msg}").unwrap();
    out.flush().unwrap();
}

/// A child process running one role of the current test binary.
pub struct Proc {
    pub pid: u32,
    lines: Receiver<String>,
    exit: Receiver<ExitStatus>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `role` with `args` in a new process.
    pub fn spawn(role: &str, args: &[&str]) -> Proc {
        Proc::spawn_under(&[], role, args)
    }

    /// Starts `role` with `args` in a new process run through the command `wrapper`
    /// (e.g. `["unshare", "--pid", "--fork", "--mount-proc"]`), which must execute the
    /// program and arguments that follow it.
    pub fn spawn_under(wrapper: &[&str], role: &str, args: &[&str]) -> Proc {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let mut child = cmd
            .args([
                "child_process_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(ROLE_VAR, role)
            .env(ARGS_VAR, args.join("\x1f"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let (ltx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(msg) = line.strip_prefix(PREFIX)
                    && ltx.send(msg.to_owned()).is_err()
                {
                    break;
                }
            }
        });
        let (etx, exit) = channel();
        std::thread::spawn(move || {
            if let Ok(st) = child.wait() {
                let _ = etx.send(st);
            }
        });
        Proc {
            pid,
            lines,
            exit,
            status: None,
        }
    }

    /// The next line the child said, waiting at most `timeout`; panics on timeout or if
    /// the child exited without saying one.
    pub fn expect_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!("child {} said nothing within {timeout:?}", self.pid)
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("child {} exited without saying a line", self.pid)
            }
        }
    }

    /// The next line the child says within `timeout`, or `None` if it says none by then
    /// (a bounded wait for something that must not happen); panics if the child exited
    /// without saying one.
    pub fn line_within(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                panic!("child {} exited without saying a line", self.pid)
            }
        }
    }

    /// Waits for a line equal to `want`, panicking on anything else or on timeout.
    pub fn expect(&mut self, want: &str) {
        let got = self.expect_line(PATIENCE);
        assert_eq!(
            got, want,
            "child {} said {got:?}, expected {want:?}",
            self.pid
        );
    }

    /// The next line the child said, waiting at most `timeout` for its output to be
    /// read to the end; `None` once all of it was read. For a child that has exited:
    /// its last lines may still be on their way from the pipe.
    pub fn line_or_eof(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next line if one is already there.
    pub fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Sends SIGKILL (no effect if it already exited).
    pub fn kill(&self) {
        signal(self.pid, rustix::process::Signal::KILL);
    }

    /// Waits at most `timeout` for the child to exit; panics on timeout.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        match self.exit.recv_timeout(timeout) {
            Ok(st) => {
                self.status = Some(st);
                st
            }
            Err(_) => panic!("child {} still running after {timeout:?}", self.pid),
        }
    }

    /// Waits for the child and asserts that it exited with status 0.
    pub fn wait_success(&mut self) {
        let st = self.wait(PATIENCE);
        assert!(st.success(), "child {} failed: {st}", self.pid);
    }

    /// Kills the child and waits until the kernel has reaped it, so everything it held
    /// (descriptors, locks) is released when this returns.
    pub fn kill_and_reap(&mut self) -> ExitStatus {
        self.kill();
        self.wait(PATIENCE)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
            let _ = self.exit.recv_timeout(Duration::from_secs(10));
        }
    }
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// A fresh temporary directory for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fileipc-test-")
        .tempdir()
        .unwrap()
}

/// Calls `f` until it returns true or `timeout` passes; panics on timeout. For
/// observing state another process changes, never as a delay.
pub fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut nap = Duration::from_micros(100);
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

// --- Exit status and unread output of a killed child, for the torture suite.

impl Proc {
    /// The exit status if the child has exited already, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.exit.try_recv().ok();
        }
        self.status
    }

    /// After the child exited (e.g. after [`Proc::kill_and_reap`]): every line it said
    /// that was not read yet, waiting at most `timeout` for the pipe to be drained;
    /// panics on timeout.
    pub fn remaining_lines(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(RecvTimeoutError::Disconnected) => return out,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("output of child {} not closed within {timeout:?}", self.pid)
                }
            }
        }
    }
}

/// Reports that a test cannot run here (it needs root, a mount, a namespace...): loudly
/// on stderr, and as a failure where `FILEIPC_REQUIRE_ROOT_TESTS` is set (CI sets it,
/// since it runs as root and every such test must run there).
pub fn skip(test: &str, why: impl std::fmt::Display) {
    assert!(
        std::env::var_os("FILEIPC_REQUIRE_ROOT_TESTS").is_none(),
        "{test} could not run ({why}), and FILEIPC_REQUIRE_ROOT_TESTS is set"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// Where the byte whose open-file-description lock marks owner id `id` alive lies
/// (docs/FORMAT.md, "Owners").
pub const OWNER_LOCK_BASE: i64 = 1 << 40;

/// Makes `id` a live owner id of the state file `f` (open read-write) the way the library
/// does: an open-file-description lock on its byte, held while `f`'s description is open.
/// Tests use it to stand for an owner in the middle of something (a lock word it holds).
pub fn hold_owner_id(f: &std::fs::File, id: u32) {
    use nix::fcntl::{FcntlArg, fcntl};
    let l = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: OWNER_LOCK_BASE + i64::from(id),
        l_len: 1,
        l_pid: 0,
    };
    fcntl(f, FcntlArg::F_OFD_SETLK(&l)).unwrap();
}

/// The offset of a semaphore file's critical-section lock word (docs/FORMAT.md,
/// "Semaphore file").
pub const SEM_LOCK: u64 = 100;

/// The semaphore file's critical-section lock word, read from the file.
pub fn sem_lock_word(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut w = [0u8; 4];
    f.read_exact_at(&mut w, SEM_LOCK).unwrap();
    u32::from_le_bytes(w)
}

/// Takes the semaphore file's critical section the way the library does: an owner id of
/// its own (`0x4000_0000 | PID`), alive through its byte lock ([`hold_owner_id`]),
/// written into the lock word, which must be free. Returns the file (the owner lives as
/// long as it is open) and the id.
pub fn take_sem_lock_word(path: &std::path::Path) -> (std::fs::File, u32) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let id = 0x4000_0000 | std::process::id();
    hold_owner_id(&f, id);
    assert_eq!(sem_lock_word(path), 0, "the critical section is not free");
    f.write_all_at(&id.to_le_bytes(), SEM_LOCK).unwrap();
    (f, id)
}

/// A small tmpfs mounted for one test, unmounted when dropped (even on failure).
pub struct Tmpfs {
    pub dir: std::path::PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "2m"); `None`, with the reason printed (see
    /// `skip`), where that is impossible (not root).
    pub fn mount(test: &str, size: &str) -> Option<Tmpfs> {
        let parent = tempdir();
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir,
                _parent: parent,
            }),
            Ok(o) => {
                skip(
                    test,
                    format!(
                        "needs root: cannot mount a tmpfs ({}): {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                );
                None
            }
            Err(e) => {
                skip(test, format!("needs root: cannot run mount: {e}"));
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let r = std::process::Command::new("umount").arg(&self.dir).status();
        if !matches!(r, Ok(s) if s.success()) {
            // Lazily, so that a process still holding a file cannot keep it mounted.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

/// Forks; the child runs `child` and exits with the code it returns (or 101 if it
/// panics), without running the parent's exit handlers. Returns the child's PID.
#[allow(unsafe_code)]
pub fn spawn_forked(child: impl FnOnce() -> i32) -> nix::unistd::Pid {
    // SAFETY: the roles that call this start no threads of their own, so the child is a
    // copy of a process whose other threads (the test harness's) hold no lock the child
    // needs; the child only uses this library and exits with `_exit`.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
            // SAFETY: `_exit` ends the process at once; nothing runs after it.
            unsafe { nix::libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    }
}
