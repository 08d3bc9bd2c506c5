//! `fileipc stat PATH`: what a path is and its live state.
//!
//! The kind is recognised from what is on disk, without creating or changing anything:
//! a directory with a `control` file is a queue; a file starting with the fileipc header
//! is a mutex or semaphore (kind field, see docs/FORMAT.md); an SQLite file is a
//! SharedData store (the library checks its application id); a file holding one number
//! is a PID file; an empty file is a set event. Only then is the primitive opened.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use fileipc::{MessageQueue, Mutex, PidFile, PidStatus, Semaphore, SharedData};
use serde_json::{Value, json};

const FILEIPC_MAGIC: &[u8; 8] = b"FILEIPC\0";
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

pub(crate) fn stat(path: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let report = inspect(path)?;
    if as_json {
        println!("{report}");
    } else {
        print_text(path, &report);
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(path: &Path) -> anyhow::Result<Value> {
    let p = path.display().to_string();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(json!({"path": p, "kind": "missing", "event_set": false}));
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("stat {p}"))),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .ok();
        return Ok(json!({"path": p, "kind": "symlink", "target": target,
            "note": "fileipc never follows a symbolic link at a state path"}));
    }
    if meta.is_dir() {
        if path.join("control").exists() {
            let q = MessageQueue::open(path)?;
            let s = q.stats()?;
            return Ok(json!({
                "path": p, "kind": "queue", "count": s.count, "sent": s.sent,
                "received": s.received, "head": s.head, "tail": s.tail,
                "segments": s.segments, "segment_size": s.segment_size,
                "bytes_on_disk": s.bytes_on_disk, "waiting_consumers": s.waiting_consumers,
            }));
        }
        return Ok(json!({"path": p, "kind": "directory",
            "note": "not a fileipc queue (no control file)"}));
    }
    if !meta.is_file() {
        return Ok(json!({"path": p, "kind": "other", "note": "not a regular file"}));
    }
    let mut head = Vec::with_capacity(100);
    std::fs::File::open(path)?
        .take(100)
        .read_to_end(&mut head)?;
    if head.starts_with(FILEIPC_MAGIC) && head.len() >= 12 {
        let kind = u32::from_le_bytes(head[8..12].try_into()?);
        return match kind {
            1 => {
                let m = Mutex::open(path)?;
                let holder = m.holder()?;
                Ok(json!({
                    "path": p, "kind": "mutex", "locked": m.is_locked()?,
                    "holder": holder.map(|h| json!({"pid": h.pid, "tid": h.tid,
                        "alive": process_alive(h.pid)})),
                    "waiting": m.waiting(),
                }))
            }
            2 => {
                let s = Semaphore::open(path, 0)?;
                let holders: Vec<Value> = s
                    .holders()?
                    .iter()
                    .map(|h| json!({"pid": h.pid, "permits": h.permits, "alive": h.alive}))
                    .collect();
                Ok(json!({
                    "path": p, "kind": "semaphore", "value": s.value()?,
                    "holders": holders, "waiting": s.waiting(),
                }))
            }
            3 => Ok(json!({"path": p, "kind": "queue-control",
                "note": "the control file of a queue: stat its directory"})),
            k => Ok(
                json!({"path": p, "kind": "other", "note": format!("fileipc file of unknown kind {k}")}),
            ),
        };
    }
    if head.starts_with(SQLITE_MAGIC) {
        let d = SharedData::open(path)?;
        return Ok(json!({"path": p, "kind": "kv", "keys": d.len()?}));
    }
    if head.is_empty() {
        return Ok(json!({"path": p, "kind": "event", "event_set": true}));
    }
    let text = String::from_utf8_lossy(&head);
    if text.trim().parse::<u32>().is_ok() {
        let status = PidFile::open(path)?.status()?;
        let (pid, alive) = match status {
            PidStatus::Running { pid } => (pid, true),
            other => (other.pid(), false),
        };
        return Ok(
            json!({"path": p, "kind": "pidfile", "pid": pid, "alive": alive,
            "stale": !alive}),
        );
    }
    Ok(json!({"path": p, "kind": "other", "event_set": true,
        "note": "not a fileipc file (as an event path, it reads as set)"}))
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn print_text(path: &Path, r: &Value) {
    let title = match r["kind"].as_str().unwrap_or("other") {
        "queue" => "fileipc message queue",
        "mutex" => "fileipc mutex",
        "semaphore" => "fileipc semaphore",
        "kv" => "fileipc shared data (SQLite)",
        "pidfile" => "pid file",
        "event" => "event (set: the file exists)",
        "missing" => "nothing here (an event at this path reads as clear)",
        "directory" => "a directory, not a fileipc queue",
        "symlink" => "a symbolic link (fileipc never follows one)",
        "queue-control" => "the control file of a fileipc queue",
        _ => "not a fileipc file",
    };
    println!("{}: {title}", path.display());
    if let Value::Object(map) = r {
        for (k, v) in map {
            if k == "path" || k == "kind" {
                continue;
            }
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Array(a) if a.is_empty() => "none".to_owned(),
                Value::Null => "none".to_owned(),
                other => other.to_string(),
            };
            println!("  {:<18} {shown}", k.replace('_', " "));
        }
    }
}
