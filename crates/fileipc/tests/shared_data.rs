//! SharedData across real processes: values, contention, SIGKILL, refusals, the example.

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/shared_state.rs"]
mod shared_state_example;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, say};
use fileipc::{Error, SharedData};
use serde_json::{Value, json};

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "check_values" => check_values(&args[0]),
        "increment" => increment(&args[0], args[1].parse().unwrap()),
        "update" => update(&args[0], args[1].parse().unwrap()),
        "reader" => reader(&args[0], args[1].parse().unwrap()),
        "killed_in_tx" => killed_in_tx(&args[0]),
        "tx_loop" => tx_loop(&args[0]),
        "inc_forever" => inc_forever(&args[0]),
        "inc_key_forever" => inc_key_forever(&args[0], &args[1]),
        "inc_once" => {
            // Opening takes the writers' lock briefly: open first, then wait for the
            // parent's go (a file) while it holds the lock.
            let d = SharedData::open(&args[0]).unwrap();
            say("opened");
            let go = PathBuf::from(format!("{}-go", args[0]));
            common::eventually(PATIENCE, "go file", || go.exists());
            say("publishing");
            say(d.increment("counter", 1).unwrap());
        }
        "example" => example(&args[0], args[1].parse().unwrap(), args[2].parse().unwrap()),
        other => panic!("unknown role {other}"),
    });
}

fn store_path(dir: &tempfile::TempDir) -> String {
    dir.path().join("store").to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// 1. Values round-trip

/// Every value kind, under keys of every kind of Unicode.
fn sample() -> Vec<(String, Value)> {
    let keys = [
        "null",
        "true",
        "false",
        "i64::MIN",
        "i64::MAX",
        "u64::MAX",
        "float",
        "tiny",
        "huge",
        "empty string",
        "unicode string",
        "array",
        "nested",
        "ключ",
        "鍵🔑",
        "a\u{0}b",
        "\"quoted\" \\ 'key'",
        " ",
        "e\u{301}",
    ];
    let values = [
        json!(null),
        json!(true),
        json!(false),
        json!(i64::MIN),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(-1234.5678e-9),
        json!(f64::MIN_POSITIVE),
        json!(f64::MAX),
        json!(""),
        json!("héllo wörld — 你好 🦀 \u{0} \u{202e}rtl \u{feff} \"q\" \\ \n\t"),
        json!([1, "two", 3.5, null, [], {}]),
        json!({"a": {"b": {"c": [1, {"d": "deep"}]}}, "": "empty key inside"}),
        json!("cyrillic key"),
        json!("cjk + emoji key"),
        json!("nul in key"),
        json!("quotes in key"),
        json!("space key"),
        json!("combining accent key"),
    ];
    keys.iter().map(|k| k.to_string()).zip(values).collect()
}

fn check_values(path: &str) {
    let d = SharedData::open(path).unwrap();
    for (k, v) in sample() {
        assert_eq!(d.get::<Value>(&k).unwrap(), Some(v), "key {k:?}");
    }
    // Typed reads of the same data.
    assert_eq!(d.get::<i64>("i64::MIN").unwrap(), Some(i64::MIN));
    assert_eq!(d.get::<i64>("i64::MAX").unwrap(), Some(i64::MAX));
    assert_eq!(d.get::<u64>("u64::MAX").unwrap(), Some(u64::MAX));
    assert_eq!(d.get::<f64>("huge").unwrap(), Some(f64::MAX));
    assert_eq!(d.get::<f64>("tiny").unwrap(), Some(f64::MIN_POSITIVE));
    assert_eq!(d.get::<Option<i32>>("null").unwrap(), Some(None));
    assert_eq!(d.get::<bool>("true").unwrap(), Some(true));
    say("ok");
}

#[test]
fn values_round_trip_between_processes() {
    let dir = common::tempdir();
    let path = store_path(&dir);
    let d = SharedData::open(&path).unwrap();
    for (k, v) in sample() {
        d.set(&k, &v).unwrap();
    }
    assert_eq!(d.len().unwrap(), sample().len());
    let mut want: Vec<String> = sample().into_iter().map(|(k, _)| k).collect();
    want.sort();
    assert_eq!(d.keys().unwrap(), want, "keys in byte order");
    let dump = d.dump().unwrap();
    assert_eq!(dump.len(), sample().len());
    for (k, v) in sample() {
        assert_eq!(dump.get(&k), Some(&v), "dump of {k:?}");
    }

    let mut child = Proc::spawn("check_values", &[&path]);
    child.expect("ok");
    child.wait_success();

    // Typed structs, tuples and maps round-trip too.
    let mut m = BTreeMap::new();
    m.insert("x".to_string(), vec![1u8, 2]);
    d.set("map", &m).unwrap();
    assert_eq!(d.get::<BTreeMap<String, Vec<u8>>>("map").unwrap(), Some(m));
    assert_eq!(
        d.get_json("i64::MIN").unwrap().as_deref(),
        Some("-9223372036854775808")
    );

    // Empty keys are refused everywhere.
    for r in [
        d.set("", &1).map(drop),
        d.get::<i32>("").map(drop),
        d.delete("").map(drop),
        d.increment("", 1).map(drop),
        d.contains_key("").map(drop),
    ] {
        assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
    }
}

#[test]
fn python_style_reader_sees_json_text() {
    // What `sqlite3 PATH 'select * from kv'` or Python's sqlite3 module sees.
    let dir = common::tempdir();
    let path = store_path(&dir);
    let d = SharedData::open(&path).unwrap();
    d.set("config", &json!({"workers": 4})).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (k, v): (String, String) = conn
        .query_row("SELECT key, value FROM kv", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((k.as_str(), v.as_str()), ("config", r#"{"workers":4}"#));
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(&app.to_be_bytes(), b"FIPC");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

// ---------------------------------------------------------------------------------------
// 2. Contention: exact totals, no busy errors

const PER_CHILD: i64 = 5_000;

fn increment(path: &str, n: i64) {
    let d = SharedData::open(path).unwrap();
    say("ready");
    let mut last = 0;
    for _ in 0..n {
        let v = d.increment("counter", 1).expect("increment failed");
        assert!(v > last, "counter went from {last} to {v}");
        last = v;
    }
    say("done");
}

fn update(path: &str, n: i64) {
    let d = SharedData::open(path).unwrap();
    say("ready");
    for _ in 0..n {
        d.update("counter", |v: Option<i64>| Some(v.unwrap_or(0) + 1))
            .expect("update failed");
    }
    say("done");
}

/// Reads the counter while writers run: it never goes back and no read fails.
fn reader(path: &str, until: i64) {
    let d = SharedData::open(path).unwrap();
    say("ready");
    let mut last = 0;
    let mut reads = 0u64;
    while last < until {
        let v = d.get::<i64>("counter").expect("get failed").unwrap_or(0);
        assert!(v >= last, "counter went back from {last} to {v}");
        last = v;
        reads += 1;
    }
    say(format!("read {reads}"));
}

/// Four writers (and a reader) on one store. The store does not exist before: the
/// children race to create it.
fn contend(role: &str) {
    let dir = common::tempdir();
    let path = store_path(&dir);
    let n = PER_CHILD.to_string();
    let total = (4 * PER_CHILD).to_string();
    let mut kids: Vec<Proc> = (0..4).map(|_| Proc::spawn(role, &[&path, &n])).collect();
    let mut watcher = Proc::spawn("reader", &[&path, &total]);
    for k in &mut kids {
        k.expect("ready");
    }
    watcher.expect("ready");
    for k in &mut kids {
        k.expect("done");
        k.wait_success();
    }
    let reads = watcher.expect_line(PATIENCE);
    assert!(reads.starts_with("read "), "{reads}");
    watcher.wait_success();
    let d = SharedData::open(&path).unwrap();
    assert_eq!(d.get::<i64>("counter").unwrap(), Some(4 * PER_CHILD));
}

#[test]
fn four_processes_increment_exactly() {
    contend("increment");
}

#[test]
fn four_processes_update_exactly() {
    contend("update");
}

// ---------------------------------------------------------------------------------------
// 3. SIGKILL in the middle of a transaction

const TX_KEYS: usize = 200;

fn killed_in_tx(path: &str) {
    let d = SharedData::open(path).unwrap();
    d.transaction(|tx| {
        for i in 0..TX_KEYS {
            tx.set(&format!("tx{i}"), &i)?;
            if i == TX_KEYS / 2 {
                tx.set("before", &"overwritten")?;
                say("midway");
                // Hold the transaction (and the writers' lock) until killed.
                loop {
                    std::thread::park();
                }
            }
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn sigkill_mid_transaction_leaves_store_consistent_and_unlocked() {
    let dir = common::tempdir();
    let path = store_path(&dir);
    let d = SharedData::open(&path).unwrap();
    d.set("before", &"kept").unwrap();

    let mut child = Proc::spawn("killed_in_tx", &[&path]);
    child.expect("midway");
    child.kill_and_reap();

    // Unlocked: the next writer gets through at once. The bound is generous (the
    // hand-off itself takes microseconds) but a leaked lock would hit it.
    let t = Instant::now();
    d.set("after", &1).unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "next write took {took:?}");

    // Wholly absent: none of the killed transaction's writes are visible.
    assert_eq!(d.get::<String>("before").unwrap().as_deref(), Some("kept"));
    for i in 0..TX_KEYS {
        assert!(!d.contains_key(&format!("tx{i}")).unwrap(), "tx{i} leaked");
    }
    // The next open (a fresh handle and connection) works and agrees.
    drop(d);
    let d = SharedData::open(&path).unwrap();
    assert_eq!(d.keys().unwrap(), ["after", "before"]);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

const LOOP_KEYS: usize = 50;

/// Commits transactions that set `LOOP_KEYS` keys to the same number, forever.
fn tx_loop(path: &str) {
    let d = SharedData::open(path).unwrap();
    for n in 1u64.. {
        d.transaction(|tx| {
            for i in 0..LOOP_KEYS {
                tx.set(&format!("k{i}"), &n)?;
            }
            Ok(())
        })
        .unwrap();
        say(n);
    }
}

#[test]
fn sigkill_at_random_points_keeps_transactions_whole() {
    let dir = common::tempdir();
    let path = store_path(&dir);
    for round in 0..3 {
        let mut child = Proc::spawn("tx_loop", &[&path]);
        // Let it commit a few (it is somewhere inside its next transaction or commit
        // when the kill lands).
        let mut announced = 0u64;
        for _ in 0..(5 + round * 7) {
            announced = child.expect_line(PATIENCE).parse().unwrap();
        }
        child.kill_and_reap();
        let d = SharedData::open(&path).unwrap();
        let values: Vec<u64> = (0..LOOP_KEYS)
            .map(|i| d.get::<u64>(&format!("k{i}")).unwrap().unwrap())
            .collect();
        assert!(
            values.iter().all(|&v| v == values[0]),
            "round {round}: torn transaction {values:?}"
        );
        assert!(
            values[0] >= announced,
            "round {round}: lost commit {announced}"
        );
        // Unlocked for the next one.
        d.set("round", &round).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Combining under SIGKILL: exactly once per acknowledged increment

/// Increments forever, announcing every acknowledged result.
fn inc_forever(path: &str) {
    let d = SharedData::open(path).unwrap();
    say("ready");
    loop {
        let v = d.increment("counter", 1).expect("increment failed");
        say(v);
    }
}

fn inc_key_forever(path: &str, key: &str) {
    let d = SharedData::open(path).unwrap();
    say("ready");
    loop {
        say(d.increment(key, 1).expect("increment failed"));
    }
}

/// Four processes increment one key while the test SIGKILLs them one at a time, at
/// random moments (most land inside a combiner's transaction, or while a requester
/// waits for a combiner), replacing each. Every acknowledged increment must be in the
/// total exactly once: the acknowledged results are distinct, and the total is at least
/// their number and at most that plus one per killed process (its one unacknowledged
/// request, which may have been applied).
#[test]
fn kill_storm_keeps_acknowledged_increments_exactly_once() {
    let dir = common::tempdir();
    let path = store_path(&dir);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    eprintln!("kill storm seed {seed}");
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut acked: Vec<i64> = Vec::new();
    let record = |lines: Vec<String>, acked: &mut Vec<i64>| {
        acked.extend(lines.iter().map(|l| l.parse::<i64>().unwrap()));
    };
    let spawn = || {
        let mut p = Proc::spawn("inc_forever", &[&path]);
        p.expect("ready");
        p
    };
    let mut kids: Vec<Proc> = (0..4).map(|_| spawn()).collect();
    let kills = 40;
    for _ in 0..kills {
        let victim = next(4) as usize;
        // Let everyone make progress: the victim must acknowledge a few more (so it is
        // in the middle of its loop), bounded by PATIENCE through expect_line.
        let want = 1 + next(200);
        for _ in 0..want {
            let l = kids[victim].expect_line(PATIENCE);
            acked.push(l.parse().unwrap());
        }
        let mut dead = std::mem::replace(&mut kids[victim], spawn());
        dead.kill_and_reap();
        // Lines said before the kill are still in the pipe.
        record(dead.remaining_lines(PATIENCE), &mut acked);
    }
    for mut k in kids {
        k.kill_and_reap();
        record(k.remaining_lines(PATIENCE), &mut acked);
    }
    let killed = kills + 4;

    // A request of a killed process may still be pending on the board: the next
    // combiner (this increment of 0) applies it.
    let d = SharedData::open(&path).unwrap();
    let total = d.increment("counter", 0).unwrap();
    assert_eq!(d.get::<i64>("counter").unwrap(), Some(total));
    let n = acked.len() as i64;
    eprintln!("kill storm: {n} acknowledged, total {total}, {killed} killed");
    let mut sorted = acked.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        acked.len(),
        "an acknowledged result was handed out twice"
    );
    assert!(
        n <= total && total <= n + killed as i64,
        "total {total}, acknowledged {n}, killed {killed} (seed {seed})"
    );
    assert!(*sorted.last().unwrap() <= total && sorted[0] >= 1);
    // The store is whole and the writers' lock free.
    d.set("after", &1).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

/// The batch in doubt noted on the request board `board` (8 bytes at offset 72;
/// docs/FORMAT.md, "SharedData request board"), 0 if none.
fn board_in_doubt(board: &std::fs::File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    board.read_exact_at(&mut b, 72).unwrap();
    u64::from_le_bytes(b)
}

/// Four processes increment a key each; as soon as the test sees a batch noted in doubt
/// on the board it SIGKILLs all four (the combiner among them): before its commit,
/// inside it, or after it, before its marking ended. The next writer is then a
/// transaction that deletes each key's row (taking the batch's mark with it) and writes
/// the value back: it must settle the batch first, or a committed batch would look
/// uncommitted and be applied again. Each key's total must be its process's
/// acknowledged increments plus at most its one unacknowledged request, per round.
#[test]
fn combiners_killed_in_doubt_then_a_rewrite_keep_increments_exactly_once() {
    let dir = common::tempdir();
    let path = store_path(&dir);
    let d = SharedData::open(&path).unwrap();
    let keys = ["c0", "c1", "c2", "c3"];
    let board = std::fs::File::open(format!("{path}-board")).unwrap();
    let rounds = 60;
    let mut left_in_doubt = 0;
    for round in 0..rounds {
        let before: Vec<i64> = keys
            .iter()
            .map(|k| d.get::<i64>(k).unwrap().unwrap_or(0))
            .collect();
        let mut kids: Vec<Proc> = keys
            .iter()
            .map(|k| {
                let mut p = Proc::spawn("inc_key_forever", &[&path, k]);
                p.expect("ready");
                p
            })
            .collect();
        let deadline = Instant::now() + PATIENCE;
        while board_in_doubt(&board) == 0 {
            assert!(
                Instant::now() < deadline,
                "no batch was ever noted in doubt"
            );
        }
        for k in &kids {
            common::signal(k.pid, rustix::process::Signal::KILL);
        }
        let mut last = Vec::new();
        for (i, k) in kids.iter_mut().enumerate() {
            k.kill_and_reap();
            let said: Vec<i64> = k
                .remaining_lines(PATIENCE)
                .iter()
                .map(|l| l.parse().unwrap())
                .collect();
            // Results of one process's increments of its own key: consecutive.
            for (j, v) in said.iter().enumerate() {
                assert_eq!(
                    *v,
                    before[i] + 1 + j as i64,
                    "key {} round {round}",
                    keys[i]
                );
            }
            last.push(before[i] + said.len() as i64);
        }
        if board_in_doubt(&board) != 0 {
            left_in_doubt += 1;
        }
        d.transaction(|tx| {
            for k in keys {
                if let Some(v) = tx.get::<i64>(k)? {
                    tx.delete(k)?;
                    tx.set(k, &v)?;
                }
            }
            Ok(())
        })
        .unwrap();
        // A killed process's unacknowledged request may still be pending: apply it.
        for (i, k) in keys.iter().enumerate() {
            let total = d.increment(k, 0).unwrap();
            assert!(
                last[i] <= total && total <= last[i] + 1,
                "key {k} round {round}: total {total}, acknowledged up to {}",
                last[i]
            );
        }
    }
    eprintln!("{left_in_doubt} of {rounds} rounds left a batch in doubt");
}

/// Whether the request board of the store at `path` has a pending request (slot state
/// words at 128 + 256 * i, state in bits 0-1, 1 = pending; see docs/FORMAT.md).
fn board_has_pending(path: &str) -> bool {
    let b = std::fs::read(format!("{path}-board")).unwrap_or_default();
    (0..64).any(|i| {
        let at = 128 + 256 * i;
        b.get(at..at + 4)
            .is_some_and(|w| u32::from_le_bytes(w.try_into().unwrap()) & 3 == 1)
    })
}

/// A process killed while its increment waits on the board: the request is applied by
/// the next combiner (at most once), and nobody waits for the dead owner.
#[test]
fn requester_killed_while_waiting_is_applied_and_blocks_nobody() {
    let dir = common::tempdir();
    let path = store_path(&dir);
    let d = std::sync::Arc::new(SharedData::open(&path).unwrap());
    d.set("counter", &0).unwrap();
    let mut child = Proc::spawn("inc_once", &[&path]);
    child.expect("opened");
    // Hold the writers' lock in a transaction, so the child's request must wait.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let d = d.clone();
        std::thread::spawn(move || {
            d.transaction(|tx| {
                tx.set("held", &true)?;
                held_tx.send(()).unwrap();
                let _ = go_rx.recv_timeout(PATIENCE);
                Ok(())
            })
            .unwrap();
        })
    };
    held_rx.recv_timeout(PATIENCE).unwrap();
    std::fs::write(format!("{path}-go"), b"").unwrap();
    child.expect("publishing");
    common::eventually(PATIENCE, "the child's request on the board", || {
        board_has_pending(&path)
    });
    assert!(
        child.try_line().is_none(),
        "the increment cannot be done yet"
    );
    child.kill_and_reap();
    assert!(child.remaining_lines(PATIENCE).is_empty());
    go_tx.send(()).unwrap();
    holder.join().unwrap();

    // The next increment combines the dead process's request with its own. Bounded:
    // it must not wait for the dead owner (a generous bound; the slice is 10 ms).
    let other = SharedData::open(&path).unwrap();
    let t = Instant::now();
    let v = other.increment("counter", 10).unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert!(v == 10 || v == 11, "{v}");
    assert_eq!(other.get::<i64>("counter").unwrap(), Some(11));
    assert!(!board_has_pending(&path));
    // Applied once: more increments do not apply it again.
    assert_eq!(other.increment("counter", 1).unwrap(), 12);
}

// ---------------------------------------------------------------------------------------
// 4. Errors: type mismatch, foreign files

#[test]
fn type_mismatch_names_key_and_type() {
    let dir = common::tempdir();
    let d = SharedData::open(store_path(&dir)).unwrap();
    d.set("name", &"ann").unwrap();
    let err = d.get::<i64>("name").unwrap_err();
    match &err {
        Error::Value { key, detail, .. } => {
            assert_eq!(key, "name");
            assert!(detail.contains("i64"), "{detail}");
        }
        other => panic!("expected Error::Value, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("\"name\"") && msg.contains("i64"), "{msg}");
    assert!(msg.contains(&*store_path(&dir)), "{msg}");

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Point {
        x: i32,
    }
    let msg = d.get::<Point>("name").unwrap_err().to_string();
    assert!(msg.contains("Point"), "{msg}");

    // increment and update refuse to overwrite a value of another type.
    assert!(matches!(d.increment("name", 1), Err(Error::Value { .. })));
    assert!(matches!(
        d.update("name", |v: Option<i64>| v),
        Err(Error::Value { .. })
    ));
    assert_eq!(d.get::<String>("name").unwrap().as_deref(), Some("ann"));
    d.set("big", &i64::MAX).unwrap();
    assert!(matches!(d.increment("big", 1), Err(Error::Value { .. })));
    assert_eq!(d.get::<i64>("big").unwrap(), Some(i64::MAX));
    assert_eq!(d.increment("big", -1).unwrap(), i64::MAX - 1);
    d.set("small", &i64::MIN).unwrap();
    assert!(matches!(d.increment("small", -1), Err(Error::Value { .. })));
    assert_eq!(d.increment("small", 1).unwrap(), i64::MIN + 1);
    d.set("float", &5.0).unwrap();
    assert!(matches!(d.increment("float", 1), Err(Error::Value { .. })));
    d.set("u64", &u64::MAX).unwrap();
    assert!(matches!(d.increment("u64", 1), Err(Error::Value { .. })));
    // Integer text another program wrote in a non-canonical way still counts.
    let conn = rusqlite::Connection::open(d.path()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute("INSERT INTO kv (key, value) VALUES ('odd', ' 7 ')", [])
        .unwrap();
    assert_eq!(d.increment("odd", 2).unwrap(), 9);
    assert_eq!(d.get_json("odd").unwrap().as_deref(), Some("9"));
}

/// The directory's entries and their contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect()
}

fn assert_refused(dir: &Path, path: &Path, what: &str) {
    let before = snapshot(dir);
    let err = SharedData::open(path).unwrap_err();
    assert!(
        matches!(&err, Error::Format { path: p, .. } if p == path),
        "{what}: expected Error::Format naming the path, got {err:?}"
    );
    assert!(err.to_string().contains("shared data store"), "{err}");
    assert_eq!(snapshot(dir), before, "{what}: files changed");
}

#[test]
fn foreign_files_are_refused_and_left_untouched() {
    let dir = common::tempdir();
    let path = dir.path().join("x");

    std::fs::write(&path, b"just some text, certainly not a database\n").unwrap();
    assert_refused(dir.path(), &path, "text file");

    std::fs::write(&path, vec![0xa5u8; 10_000]).unwrap();
    assert_refused(dir.path(), &path, "garbage");

    std::fs::write(&path, b"SQLite format 3\0short").unwrap();
    assert_refused(dir.path(), &path, "truncated sqlite header");

    // Another fileipc primitive's state file.
    let mut state = b"FILEIPC\0".to_vec();
    state.extend_from_slice(&1u32.to_le_bytes());
    state.resize(4096, 0);
    std::fs::write(&path, &state).unwrap();
    assert_refused(dir.path(), &path, "fileipc mutex file");
    std::fs::remove_file(&path).unwrap();

    // An SQLite database of another application, even with the same table name.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT);
             INSERT INTO kv VALUES ('a', '1');",
        )
        .unwrap();
    }
    assert_refused(dir.path(), &path, "other application's database");
    std::fs::remove_file(&path).unwrap();

    // A fileipc store of a newer format version.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA application_id = 1179209795; PRAGMA user_version = 3;
             CREATE TABLE kv2 (k);",
        )
        .unwrap();
    }
    let err = SharedData::open(&path).unwrap_err();
    assert!(err.to_string().contains("version 3"), "{err}");
    assert_refused(dir.path(), &path, "newer version");

    // A directory.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert!(matches!(SharedData::open(&sub), Err(Error::Format { .. })));
}

#[test]
fn missing_or_empty_file_is_initialised_and_symlinks_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::tempdir();
    let path = dir.path().join("new");
    let d = SharedData::open(&path).unwrap();
    d.set("a", &1).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("new-lock")), 0o600);

    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let e = SharedData::open(&empty).unwrap();
    assert!(e.is_empty().unwrap());
    e.set("b", &2).unwrap();
    assert_eq!(e.get::<i32>("b").unwrap(), Some(2));

    let shared = dir.path().join("group");
    let g = SharedData::options().mode(0o660).open(&shared).unwrap();
    g.set("x", &1).unwrap();
    assert_eq!(mode(&shared), 0o660);

    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(matches!(
        SharedData::open(&link),
        Err(Error::Symlink { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Transactions, CAS, re-entry, threads

#[test]
fn transaction_rolls_back_on_error_and_panic() {
    let dir = common::tempdir();
    let d = SharedData::open(store_path(&dir)).unwrap();
    d.set("a", &1).unwrap();
    let r: fileipc::Result<()> = d.transaction(|tx| {
        tx.set("a", &2)?;
        tx.set("b", &2)?;
        assert_eq!(tx.get::<i32>("a")?, Some(2), "reads see own writes");
        tx.get::<String>("a").map(drop) // type error aborts
    });
    assert!(matches!(r, Err(Error::Value { .. })));
    assert_eq!(
        d.dump().unwrap(),
        json!({"a": 1}).as_object().unwrap().clone()
    );

    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.transaction(|tx| -> fileipc::Result<()> {
            tx.set("a", &3)?;
            panic!("boom");
        })
    }));
    assert!(r.is_err());
    assert_eq!(d.get::<i32>("a").unwrap(), Some(1));
    // Still usable, and the writers' lock was released.
    let other = SharedData::open(d.path()).unwrap();
    other.set("c", &3).unwrap();
    assert_eq!(d.len().unwrap(), 2);
}

#[test]
fn compare_and_swap_and_reentry() {
    let dir = common::tempdir();
    let d = SharedData::open(store_path(&dir)).unwrap();
    assert!(d.compare_and_swap("status", None, &"idle").unwrap());
    assert!(!d.compare_and_swap("status", None, &"idle").unwrap());
    assert!(
        d.compare_and_swap("status", Some(&"idle"), &"running")
            .unwrap()
    );
    assert!(
        !d.compare_and_swap("status", Some(&"idle"), &"stopped")
            .unwrap()
    );
    d.set("obj", &json!({"a": 1, "b": [true]})).unwrap();
    assert!(
        d.compare_and_swap("obj", Some(&json!({"b": [true], "a": 1})), &json!(0))
            .unwrap(),
        "compared as JSON, not text"
    );

    // Using the store from inside its own write is refused, not a deadlock.
    let other = SharedData::open(d.path()).unwrap();
    let r = d.transaction(|_tx| other.set("x", &1));
    assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
    let r = d.transaction(|_tx| d.get::<i32>("x"));
    assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
    let r = d.transaction(|_tx| SharedData::open(d.path()).map(drop));
    assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
    d.set("x", &2).unwrap();
}

#[test]
fn threads_share_one_handle_and_many_handles() {
    let dir = common::tempdir();
    let path = store_path(&dir);
    let d = std::sync::Arc::new(SharedData::open(&path).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let d = d.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                // Half share the handle, half open their own.
                let own;
                let h: &SharedData = if i % 2 == 0 {
                    &d
                } else {
                    own = SharedData::open(&path).unwrap();
                    &own
                };
                for _ in 0..500 {
                    h.increment("n", 1).unwrap();
                    h.get::<i64>("n").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(d.get::<i64>("n").unwrap(), Some(2000));
}

// ---------------------------------------------------------------------------------------
// 5. The seed's example, from 3 processes

fn example(path: &str, processes: i64, updates: i64) {
    match shared_state_example::run(path, processes, updates).unwrap() {
        Some((counter, expected)) => say(format!("last {counter} {expected}")),
        None => say("not last"),
    }
}

#[test]
fn shared_state_example_from_three_processes() {
    let dir = common::tempdir();
    let path = store_path(&dir);
    for _run in 0..2 {
        let mut kids: Vec<Proc> = (0..3)
            .map(|_| Proc::spawn("example", &[&path, "3", "200"]))
            .collect();
        let lines: Vec<String> = kids.iter_mut().map(|k| k.expect_line(PATIENCE)).collect();
        for k in &mut kids {
            k.wait_success();
        }
        let last: Vec<&String> = lines.iter().filter(|l| l.starts_with("last")).collect();
        assert_eq!(last.len(), 1, "exactly one last process: {lines:?}");
        assert_eq!(last[0], "last 600 600");
        // The last one reset the store, so the example can run again.
        assert!(SharedData::open(&path).unwrap().is_empty().unwrap());
    }
}

/// Makes at `path` a store as a library of schema version 1 left it: `kv` without the
/// `batch` column, the record table `fileipc_applied` of its combiners, the fence table
/// if `fences`, key "n" = 41 and "s" = "text", and beside it a request board of
/// format version 2 (the common header, then zeros).
fn make_version_1_store(path: &Path, fences: bool) {
    use std::os::unix::fs::PermissionsExt;
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA application_id = 1179209795; PRAGMA user_version = 1;
         CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
         CREATE TABLE fileipc_applied (id INTEGER PRIMARY KEY, slots BLOB NOT NULL);
         INSERT INTO kv VALUES ('n', '41'), ('s', '\"text\"');
         PRAGMA journal_mode = WAL;",
    )
    .unwrap();
    if fences {
        c.execute_batch(
            "CREATE TABLE fileipc_fences (key TEXT PRIMARY KEY NOT NULL, \
             fence INTEGER NOT NULL) WITHOUT ROWID",
        )
        .unwrap();
    }
    let mut board = vec![0u8; 16512];
    board[..8].copy_from_slice(b"FILEIPC\0");
    board[8..12].copy_from_slice(&4u32.to_le_bytes());
    board[12..16].copy_from_slice(&2u32.to_le_bytes());
    board[16..20].copy_from_slice(&16512u32.to_le_bytes());
    let board_path = format!("{}-board", path.display());
    std::fs::write(&board_path, &board).unwrap();
    std::fs::set_permissions(&board_path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The format version in the common header of `path`-board.
fn board_version(path: &Path) -> u32 {
    let b = std::fs::read(format!("{}-board", path.display())).unwrap();
    u32::from_le_bytes(b[12..16].try_into().unwrap())
}

/// A version-1 store is upgraded in place by the first writer that opens it (FORMAT.md,
/// "SharedData store"): user version 2, the column `batch`, a board of version 3 in
/// place of the version-2 one; the data stays, and combined increments from several
/// processes count exactly.
#[test]
fn a_version_1_store_is_upgraded_in_place_on_open() {
    let dir = common::tempdir();
    let path = dir.path().join("s");
    make_version_1_store(&path, true);
    assert_eq!(board_version(&path), 2);
    let d = SharedData::open(&path).unwrap();
    assert_eq!(d.get::<i64>("n").unwrap(), Some(41));
    assert_eq!(d.get::<String>("s").unwrap().as_deref(), Some("text"));
    assert_eq!(board_version(&path), 3);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        let v: i32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
        let cols: Vec<String> = c
            .prepare("SELECT name FROM pragma_table_info('kv') ORDER BY cid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(cols, ["key", "value", "batch"]);
    }
    assert_eq!(d.increment("n", 1).unwrap(), 42);
    drop(d);
    // Opened again: version 2 as it is, the board kept.
    let d = SharedData::open(&path).unwrap();
    assert_eq!(board_version(&path), 3);
    let p = path.to_str().unwrap();
    let mut kids: Vec<_> = (0..4)
        .map(|_| Proc::spawn("increment", &[p, "500"]))
        .collect();
    for k in &mut kids {
        k.wait_success();
    }
    assert_eq!(d.get::<i64>("counter").unwrap(), Some(4 * 500));
    assert_eq!(d.get::<i64>("n").unwrap(), Some(42));
}

/// A version-1 store made before fenced writes (no `fileipc_fences` table) gets the
/// table when a writer opens it, and keeps its data; fences are stored as SQLite reads
/// them (`sqlite3 PATH 'select * from fileipc_fences'`).
#[test]
fn a_store_without_the_fence_table_gets_it_on_open() {
    let dir = common::tempdir();
    let path = dir.path().join("s");
    make_version_1_store(&path, false);
    let d = SharedData::open(&path).unwrap();
    assert_eq!(d.get::<i64>("n").unwrap(), Some(41));
    assert!(d.set_fenced("n", &2, 7).unwrap());
    assert!(!d.set_fenced("n", &3, 6).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    let f: i64 = c
        .query_row(
            "SELECT fence FROM fileipc_fences WHERE key = 'n'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(f, 7);
}
