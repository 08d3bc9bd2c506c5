//! `fileipc stat PATH`: what a path is and its live state.
//!
//! The kind comes from the library ([`fileipc::inspect`]), which recognises every fileipc
//! file from what is on disk without creating or changing anything. Only then, for the
//! kinds that have live figures (queue, mutex, semaphore, shared data store, PID file), is
//! the primitive opened to read them, with `open_existing`: `stat` never creates anything.

use std::path::Path;
use std::process::ExitCode;

use fileipc::{
    FileKind, Inspection, MessageQueue, Mutex, PidFile, PidStatus, Semaphore, SharedData,
};
use serde_json::{Value, json};

pub(crate) fn stat(path: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let report = report(path)?;
    if as_json {
        println!("{report}");
    } else {
        print_text(path, &report);
    }
    // Nothing at the path: reported (as an event it reads as clear), and exit 1 as
    // every query that finds nothing.
    if report["kind"] == "missing" {
        eprintln!("fileipc: {}: not found", path.display());
        return Ok(crate::NO);
    }
    Ok(ExitCode::SUCCESS)
}

fn report(path: &Path) -> anyhow::Result<Value> {
    let Inspection {
        kind,
        version,
        details,
        ..
    } = fileipc::inspect(path)?;
    let p = path.display().to_string();
    let mut report = match kind {
        FileKind::Missing => json!({"path": p, "kind": "missing", "event_set": false}),
        FileKind::Symlink { target } => json!({"path": p, "kind": "symlink",
            "target": target.display().to_string(),
            "note": "fileipc never follows a symbolic link at a state path"}),
        FileKind::Directory => json!({"path": p, "kind": "directory",
            "note": "not a fileipc queue (no control file)"}),
        FileKind::Queue => {
            let q = MessageQueue::open_existing(path)?;
            let s = q.stats()?;
            json!({
                "path": p, "kind": "queue", "count": s.count, "sent": s.sent,
                "received": s.received, "head": s.head, "tail": s.tail,
                "segments": s.segments, "spare_segments": s.spare_segments,
                "segment_size": s.segment_size,
                "bytes_on_disk": s.bytes_on_disk, "waiting_consumers": s.waiting_consumers,
                "ready": s.ready, "in_flight": s.in_flight,
            })
        }
        FileKind::QueueControl => json!({"path": p, "kind": "queue-control",
            "note": "the control file of a queue: stat its directory"}),
        FileKind::QueueSegment => json!({"path": p, "kind": "queue-segment",
            "note": "a segment file of a queue: stat its directory"}),
        FileKind::Mutex => {
            let m = Mutex::open_existing(path)?;
            let holder = m.holder()?;
            json!({
                "path": p, "kind": "mutex", "locked": m.is_locked()?,
                "holder": holder.map(|h| json!({"pid": h.pid, "tid": h.tid,
                    "alive": process_alive(h.pid)})),
                "waiting": m.waiting(), "fence": m.last_granted_fence()?,
                "flock_compatible": m.is_flock_compatible(),
            })
        }
        FileKind::Semaphore => {
            let s = Semaphore::open_existing(path)?;
            let holders: Vec<Value> = s
                .holders()?
                .iter()
                .map(|h| json!({"pid": h.pid, "permits": h.permits, "alive": h.alive}))
                .collect();
            json!({
                "path": p, "kind": "semaphore", "value": s.value()?,
                "capacity": s.capacity(),
                "holders": holders, "waiting": s.waiting(),
                "fence": s.last_granted_fence()?,
            })
        }
        FileKind::SharedData => {
            let d = SharedData::open_existing(path)?;
            json!({"path": p, "kind": "kv", "keys": d.len()?})
        }
        FileKind::SharedDataLock => json!({"path": p, "kind": "kv-lock",
            "note": "the writers' lock file of a shared data store: stat the store"}),
        FileKind::SharedDataBoard => json!({"path": p, "kind": "kv-board",
            "note": "the request board of a shared data store: stat the store"}),
        FileKind::PidFile { .. } => {
            let pf = PidFile::open(path)?;
            let status = pf.status()?;
            let (pid, alive) = match status {
                PidStatus::Running { pid } => (pid, true),
                other => (other.pid(), false),
            };
            let stale = matches!(status, PidStatus::Stale { .. });
            json!({"path": p, "kind": "pidfile", "pid": pid, "alive": alive,
                "stale": stale, "generation": pf.last_generation()?})
        }
        FileKind::Event if crate::is_remote(path) => json!({"path": p, "kind": "event",
            "event_set": fileipc::Event::open(path)?.is_set()?}),
        FileKind::Event => json!({"path": p, "kind": "event", "event_set": true}),
        FileKind::UnknownState { code } => json!({"path": p, "kind": "other",
            "note": format!("fileipc file of unknown kind {code}")}),
        FileKind::Sqlite { application_id } => json!({"path": p, "kind": "other",
            "note": format!("an SQLite database of another application \
                (application_id {application_id:#x})")}),
        FileKind::Other(what) => json!({"path": p, "kind": "other", "event_set": true,
            "note": format!("{what} (as an event path, it reads as set)")}),
        other => json!({"path": p, "kind": "other", "note": format!("{other:?}")}),
    };
    if let Value::Object(map) = &mut report {
        if let Some(v) = version {
            map.insert("version".to_owned(), json!(v));
        }
        // Figures the engine keeps beside the state (a Redis name's leases, fences,
        // backlog).
        for (k, v) in details {
            let v = v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n));
            map.entry(k).or_insert(v);
        }
    }
    Ok(report)
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
        "queue-segment" => "a segment file of a fileipc queue",
        "kv-lock" => "the writers' lock file of a fileipc shared data store",
        "kv-board" => "the request board of a fileipc shared data store",
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
