//! `fileipc::inspect`: every kind made through the public API is recognised, with its
//! format version, and inspecting creates, changes and locks nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fileipc::{Event, FileKind, MessageQueue, Mutex, PidFile, Semaphore, SharedData, inspect};

/// Every entry under `dir` (recursively, links not followed) with its type, length and
/// modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path.clone());
            }
            let ty = format!("{:?}", meta.file_type());
            out.insert(path, (ty, meta.len(), meta.modified().unwrap()));
        }
    }
    out
}

fn kind(path: &Path) -> (FileKind, Option<u32>) {
    let found = inspect(path).unwrap();
    assert_eq!(found.path, path);
    (found.kind, found.version)
}

#[test]
fn recognises_every_kind_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let q = d.join("q");
    let queue = MessageQueue::open(&q).unwrap();
    queue.send("x").unwrap();
    let m = d.join("m");
    let _mutex = Mutex::open(&m).unwrap();
    let sem = d.join("sem");
    let _sem = Semaphore::open(&sem, 3).unwrap();
    let kv = d.join("kv");
    let store = SharedData::open(&kv).unwrap();
    store.set("a", &1).unwrap();
    store.increment("n", 1).unwrap();
    let pid = d.join("pid");
    let mut pidfile = PidFile::open(&pid).unwrap();
    assert!(pidfile.create().unwrap());
    let ev = d.join("ev");
    Event::open(&ev).unwrap().set().unwrap();
    let text = d.join("text");
    std::fs::write(&text, "just a file\n").unwrap();
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let link = d.join("link");
    std::os::unix::fs::symlink(&m, &link).unwrap();
    let fifo = d.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let future = d.join("future");
    let mut header = b"FILEIPC\0".to_vec();
    header.extend_from_slice(&99u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    header.resize(64, 0);
    std::fs::write(&future, &header).unwrap();
    let foreign = d.join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("PRAGMA application_id = 7; CREATE TABLE t (x)")
        .unwrap();

    let segment = std::fs::read_dir(&q)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .expect("a segment file after a send");

    let before = snapshot(d);
    let expected = [
        (q.clone(), FileKind::Queue, Some(5)),
        (q.join("control"), FileKind::QueueControl, Some(5)),
        (segment, FileKind::QueueSegment, None),
        (m.clone(), FileKind::Mutex, Some(4)),
        (sem.clone(), FileKind::Semaphore, Some(5)),
        (kv.clone(), FileKind::SharedData, Some(2)),
        (d.join("kv-lock"), FileKind::SharedDataLock, None),
        (d.join("kv-board"), FileKind::SharedDataBoard, Some(3)),
        (
            pid.clone(),
            FileKind::PidFile {
                pid: std::process::id(),
            },
            None,
        ),
        (ev, FileKind::Event, None),
        (sub, FileKind::Directory, None),
        (link, FileKind::Symlink { target: m.clone() }, None),
        (future, FileKind::UnknownState { code: 99 }, Some(1)),
        (foreign, FileKind::Sqlite { application_id: 7 }, None),
        (d.join("missing"), FileKind::Missing, None),
    ];
    for (path, want, version) in expected {
        assert_eq!(kind(&path), (want, version), "{}", path.display());
    }
    assert!(
        matches!(kind(&text).0, FileKind::Other(_)),
        "{:?}",
        kind(&text)
    );
    assert!(
        matches!(kind(&fifo).0, FileKind::Other(_)),
        "{:?}",
        kind(&fifo)
    );
    assert_eq!(snapshot(d), before, "inspect changed the directory");

    // Inspecting did not take the PID file's lock or the mutex: both still work.
    assert!(matches!(
        pidfile.status().unwrap(),
        fileipc::PidStatus::Running { .. }
    ));
    assert!(Mutex::open(&m).unwrap().try_lock().unwrap());
    pidfile.remove().unwrap();
}

#[test]
fn a_missing_path_or_a_text_file_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a fileipc file\n").unwrap();
    let missing = dir.path().join("nothing");
    let in_missing_dir = dir.path().join("no-dir").join("x");
    let sidecar_less = dir.path().join("notes.txt-lock");

    let before = snapshot(dir.path());
    assert_eq!(kind(&missing), (FileKind::Missing, None));
    assert_eq!(kind(&in_missing_dir), (FileKind::Missing, None));
    assert_eq!(kind(&sidecar_less), (FileKind::Missing, None));
    match kind(&text) {
        (FileKind::Other(what), None) => assert!(what.contains("not a fileipc file"), "{what}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(std::fs::read(&text).unwrap(), b"not a fileipc file\n");
}

#[test]
fn tells_damaged_and_look_alike_files_apart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An empty `X-lock` with no store beside it is an event.
    let lock = d.join("x-lock");
    std::fs::write(&lock, "").unwrap();
    assert_eq!(kind(&lock), (FileKind::Event, None));
    // A PID file's format, not just any number.
    for (content, is_pid) in [
        ("1234\n", true),
        ("1234", true),
        (" 1234\n", false),
        ("0\n", false),
        ("12 34\n", false),
    ] {
        let p = d.join("p");
        std::fs::write(&p, content).unwrap();
        let found = kind(&p).0;
        assert_eq!(
            matches!(found, FileKind::PidFile { pid: 1234 }),
            is_pid,
            "{content:?}: {found:?}"
        );
    }
    // A header cut short is reported, not taken for a state file.
    let short = d.join("short");
    std::fs::write(&short, b"FILEIPC\0\x01").unwrap();
    assert!(
        matches!(kind(&short).0, FileKind::Other(_)),
        "{:?}",
        kind(&short)
    );
    // A directory with something named `control` is a queue whose version is unknown.
    let q = d.join("q");
    std::fs::create_dir(&q).unwrap();
    std::fs::write(q.join("control"), "garbage").unwrap();
    assert_eq!(kind(&q), (FileKind::Queue, None));
    // A file named like a segment outside a queue is just a file.
    let seg = d.join("seg-0000000000000000.log");
    std::fs::write(&seg, "x").unwrap();
    assert!(
        matches!(kind(&seg).0, FileKind::Other(_)),
        "{:?}",
        kind(&seg)
    );
}
