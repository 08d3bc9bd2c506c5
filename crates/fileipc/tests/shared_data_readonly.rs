//! A SharedData store that the caller may not write can still be read: on a read-only
//! mount (root mounts a tmpfs, fills it, remounts it read-only) and without write
//! permission (a child that gives up root for another uid). Every read works in a real
//! process of its own; every write fails with an error naming the path and saying the
//! store is read-only. Needs root (loud skip otherwise, a failure under
//! `FILEIPC_REQUIRE_ROOT_TESTS`).

mod common;

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

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{PATIENCE, Proc, say};
use fileipc::SharedData;
use serde_json::json;

/// The user the permission test's reader becomes (any unused ID does).
const READER: u32 = 61_003;

#[test]
fn child_process_entry() {
    common::child_main(|role, args| {
        let r = match role {
            "reader" => reader(&args),
            other => panic!("unknown role {other}"),
        };
        match r {
            Ok(()) => say("ok"),
            Err(e) => say(format!("error: {e}")),
        }
    });
}

/// Child: `args[0]` the store, `args[1]` the uid to become (0: stay root), `args[2]`
/// the mode to open with, `args[3]` the kind of error writes must fail with. Reads
/// everything, then tries every kind of write.
fn reader(args: &[String]) -> Result<(), String> {
    let uid: u32 = args[1].parse().unwrap();
    if uid != 0 {
        use rustix::process::{Gid, Uid};
        rustix::thread::set_thread_groups(&[]).unwrap();
        let g = Gid::from_raw(uid);
        rustix::thread::set_thread_res_gid(g, g, g).unwrap();
        let u = Uid::from_raw(uid);
        rustix::thread::set_thread_res_uid(u, u, u).unwrap();
    }
    let path = Path::new(&args[0]);
    let mode = u32::from_str_radix(&args[2], 8).unwrap();
    let kind = match args[3].as_str() {
        "rofs" => ErrorKind::ReadOnlyFilesystem,
        _ => ErrorKind::PermissionDenied,
    };
    let d = SharedData::options()
        .mode(mode)
        .open(path)
        .map_err(|e| format!("open: {e}"))?;
    let e = SharedData::options()
        .mode(mode)
        .open_existing(path)
        .map_err(|e| format!("open_existing: {e}"))?;
    for d in [&d, &e] {
        if !d.is_read_only() {
            return Err("not opened read-only".into());
        }
        let got = (
            d.get::<i64>("a").map_err(|e| e.to_string())?,
            d.get::<String>("b").map_err(|e| e.to_string())?,
            d.keys().map_err(|e| e.to_string())?,
            d.len().map_err(|e| e.to_string())?,
            d.contains_key("a").map_err(|e| e.to_string())?,
            d.contains_key("zz").map_err(|e| e.to_string())?,
            d.dump().map_err(|e| e.to_string())?,
        );
        let want = (
            Some(1),
            Some("x".to_owned()),
            vec!["a".to_owned(), "b".to_owned()],
            2,
            true,
            false,
            json!({"a": 1, "b": "x"}).as_object().unwrap().clone(),
        );
        if got != want {
            return Err(format!("read {got:?}, expected {want:?}"));
        }
    }
    let writes: [(&str, fileipc::Result<()>); 7] = [
        ("set", d.set("a", &2)),
        ("delete", d.delete("a").map(drop)),
        ("clear", d.clear()),
        ("increment", d.increment("a", 1).map(drop)),
        ("update", d.update::<i64, _>("a", |v| v).map(drop)),
        (
            "compare_and_swap",
            d.compare_and_swap("a", Some(&1), &2).map(drop),
        ),
        ("transaction", d.transaction(|t| t.set("c", &1))),
    ];
    for (what, r) in writes {
        let err = match r {
            Ok(()) => return Err(format!("{what} succeeded on a read-only store")),
            Err(e) => e,
        };
        let msg = chain(&err);
        if err.io_kind() != Some(kind) || !msg.contains(&args[0]) || !msg.contains("read-only") {
            return Err(format!(
                "{what}: unexpected error {msg:?} ({:?})",
                err.io_kind()
            ));
        }
    }
    if d.get::<i64>("a").map_err(|e| e.to_string())? != Some(1) {
        return Err("a write went through".into());
    }
    Ok(())
}

fn fill(path: &Path, mode: u32) -> SharedData {
    let d = SharedData::options().mode(mode).open(path).unwrap();
    d.set("a", &1).unwrap();
    d.set("b", &"x").unwrap();
    d
}

fn is_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    common::skip(test, "needs root (a second uid)");
    false
}

/// The store on a tmpfs remounted read-only (closed cleanly before: no `-wal`, no
/// `-shm`): a reader process opens it and reads everything; writes fail with `EROFS`.
#[test]
fn a_store_on_a_read_only_mount_can_be_read() {
    let Some(fs) = common::Tmpfs::mount("a_store_on_a_read_only_mount_can_be_read", "8m") else {
        return;
    };
    let path = fs.dir.join("state");
    drop(fill(&path, 0o600));
    // Closed cleanly: SQLite removed its `-wal` and `-shm`, so the reader has no
    // `-shm` to read through (the `immutable` case).
    for side in ["state-wal", "state-shm"] {
        assert!(!fs.dir.join(side).exists(), "{side} left behind");
    }
    let o = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&fs.dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut r = Proc::spawn("reader", &[path.to_str().unwrap(), "0", "600", "rofs"]);
    assert_eq!(r.expect_line(PATIENCE), "ok");
    r.wait_success();
}

/// The store owned by root, mode 0644, in a directory only root may write; a reader of
/// another uid opens it (asking for mode 0644) while root's handle is open, so the
/// `-shm` SQLite reads through exists: reads work, writes fail with `EACCES`.
#[test]
fn a_store_without_write_permission_can_be_read() {
    if !is_root("a_store_without_write_permission_can_be_read") {
        return;
    }
    let dir = common::tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("state");
    let writer = fill(&path, 0o644);
    assert!(dir.path().join("state-shm").exists());
    let uid = READER.to_string();
    let mut r = Proc::spawn("reader", &[path.to_str().unwrap(), &uid, "644", "eacces"]);
    assert_eq!(r.expect_line(PATIENCE), "ok");
    r.wait_success();
    // The writer is unaffected.
    writer.set("c", &3).unwrap();
    assert_eq!(writer.len().unwrap(), 3);
}

/// Without write permission and with no writer open (no `-shm` to read through, none
/// creatable in the directory), opening fails with an error that says why, naming the
/// path; nothing is opened `immutable` under a writer that may come.
#[test]
fn a_store_without_write_permission_and_no_shm_says_why() {
    if !is_root("a_store_without_write_permission_and_no_shm_says_why") {
        return;
    }
    let dir = common::tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("state");
    drop(fill(&path, 0o644));
    let uid = READER.to_string();
    let mut r = Proc::spawn("reader", &[path.to_str().unwrap(), &uid, "644", "eacces"]);
    let line = r.expect_line(PATIENCE);
    assert!(
        line.contains("open:") && line.contains(path.to_str().unwrap()) && line.contains("-shm"),
        "{line}"
    );
    r.wait_success();
}
