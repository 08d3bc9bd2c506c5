//! `open_existing` on every primitive that `open` can create: on a missing path it fails
//! with `NotFound` naming the path and creates nothing (no file, no directory); on an
//! existing primitive it opens it as `open` does.

use std::io::ErrorKind;
use std::path::Path;

use fileipc::{Event, MessageQueue, Mutex, Semaphore, SharedData};

mod common;

/// Every entry under `dir`, recursively.
fn entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// The error and its sources, as `anyhow`'s `{:#}` prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[test]
fn open_existing_never_creates() {
    let dir = common::tempdir();
    for rel in ["x", "a/b/x"] {
        let p = dir.path().join(rel);
        let errors = [
            ("mutex", Mutex::open_existing(&p).map(drop)),
            ("semaphore", Semaphore::open_existing(&p).map(drop)),
            ("queue", MessageQueue::open_existing(&p).map(drop)),
            ("shared data", SharedData::open_existing(&p).map(drop)),
        ];
        for (what, r) in errors {
            let e = r.expect_err(what);
            assert_eq!(e.io_kind(), Some(ErrorKind::NotFound), "{what}: {e}");
            assert_eq!(e.path(), p, "{what}: {e}");
            let chain = chain(&e);
            assert!(chain.contains("not found"), "{what}: {chain}");
            assert!(
                entries(dir.path()).is_empty(),
                "{what}: {:?}",
                entries(dir.path())
            );
        }
    }
    // An event's file exists only while it is set: a missing directory is the error.
    let e = Event::open_existing(dir.path().join("a/b/x")).unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::NotFound), "{e}");
    assert!(
        !Event::open_existing(dir.path().join("x"))
            .unwrap()
            .is_set()
            .unwrap()
    );
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn open_existing_opens_what_exists() {
    let dir = common::tempdir();
    let p = |n: &str| dir.path().join(n);
    Mutex::open(p("m")).unwrap();
    Semaphore::open(p("s"), 5).unwrap();
    MessageQueue::open(p("q")).unwrap().send("hi").unwrap();
    SharedData::open(p("d")).unwrap().set("k", &1).unwrap();
    assert!(!Mutex::open_existing(p("m")).unwrap().is_locked().unwrap());
    let s = Semaphore::open_existing(p("s")).unwrap();
    assert_eq!((s.capacity(), s.value().unwrap()), (5, 5));
    assert_eq!(
        MessageQueue::open_existing(p("q"))
            .unwrap()
            .count()
            .unwrap(),
        1
    );
    let d = SharedData::open_existing(p("d")).unwrap();
    assert_eq!(d.get::<i64>("k").unwrap(), Some(1));
    // The store's own lock file and board are recreated beside an existing store.
    std::fs::remove_file(p("d-board")).unwrap();
    drop(d);
    assert_eq!(
        SharedData::open_existing(p("d"))
            .unwrap()
            .get::<i64>("k")
            .unwrap(),
        Some(1)
    );
    // A directory without a queue is not a queue: not found, and it stays empty.
    std::fs::create_dir(p("empty")).unwrap();
    let e = MessageQueue::open_existing(p("empty")).unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::NotFound), "{e}");
    assert!(entries(&p("empty")).is_empty());
}
