//! SharedData integrity (issue 19): values round-trip exactly, values JSON cannot hold are
//! refused.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::{PATIENCE, Proc, say};
use fileipc::{Error, SharedData};

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "incrementer" => incrementer(&args[0], args[1].parse().unwrap()),
        other => panic!("unknown role {other}"),
    });
}

/// Opens the store, increments once (claiming a board slot), says "ready", waits for
/// the parent's go file, then increments `n` more times; says every result.
fn incrementer(path: &str, n: usize) {
    let d = SharedData::open(path).unwrap();
    say(d.increment("counter", 1).unwrap());
    say("ready");
    let go = PathBuf::from(format!("{path}-go"));
    common::eventually(PATIENCE, "go file", || go.exists());
    for _ in 0..n {
        say(d.increment("counter", 1).unwrap());
    }
    say("done");
}

/// xorshift64*: deterministic doubles without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // 53 random bits: a uniform double in [0, 1).
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn random_doubles_round_trip_exactly() {
    let dir = common::tempdir();
    let d = SharedData::open(dir.path().join("floats")).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut wrong_get, mut failed_cas) = (0, 0);
    let mut first_bad = None;
    for _ in 0..10_000 {
        let x = rng.next_f64();
        d.set("f", &x).unwrap();
        let back: f64 = d.get("f").unwrap().unwrap();
        if back.to_bits() != x.to_bits() {
            wrong_get += 1;
            first_bad.get_or_insert((x, back));
        }
        if !d.compare_and_swap("f", Some(&x), &0.5).unwrap() {
            failed_cas += 1;
        }
    }
    assert_eq!(
        (wrong_get, failed_cas),
        (0, 0),
        "of 10000 doubles, {wrong_get} read back different and {failed_cas} compare_and_swap \
         failed (first: {first_bad:?})"
    );
}

#[test]
fn non_finite_floats_are_refused() {
    let dir = common::tempdir();
    let path = dir.path().join("nan");
    let d = SharedData::open(&path).unwrap();
    d.set("f", &1.5).unwrap();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        match d.set("f", &bad) {
            Err(Error::Value { key, detail, .. }) => {
                assert_eq!(key, "f");
                assert!(detail.contains("finite"), "{detail}");
            }
            other => panic!("set({bad}) gave {other:?}"),
        }
        assert!(d.set("g", &vec![1.0, bad]).is_err(), "nested {bad}");
        assert!(
            d.update("f", |_: Option<f64>| Some(bad)).is_err(),
            "update to {bad}"
        );
        assert!(
            d.compare_and_swap("f", Some(&1.5), &bad).is_err(),
            "CAS to {bad}"
        );
        assert!(
            d.compare_and_swap("f", Some(&bad), &2.0).is_err(),
            "CAS from {bad}"
        );
        assert!(
            d.transaction(|tx| tx.set("f", &bad)).is_err(),
            "transaction set {bad}"
        );
        assert_eq!(d.get::<f64>("f").unwrap(), Some(1.5), "after {bad}");
        assert_eq!(d.get::<f64>("g").unwrap(), None);
    }
    // null itself is still a value.
    d.set("n", &None::<f64>).unwrap();
    d.set("u", &()).unwrap();
    assert_eq!(d.get::<Option<f64>>("n").unwrap(), Some(None));
}

/// Issue 19.3: `PATH-board` deleted while handles are open. The old handles go on
/// combining on the unlinked board, new handles on a new one; slot *i* of both must not
/// share a record entry (before the fix: a lost increment and a duplicate result, when
/// a request of one board had the sequence number the other board's slot had recorded).
/// Every acknowledged increment is counted exactly once and every result is distinct.
#[test]
fn a_recreated_board_keeps_increments_exactly_once() {
    const ROUNDS: usize = 20;
    const EACH: usize = 1000;
    let mut bad = Vec::new();
    for round in 0..ROUNDS {
        let dir = common::tempdir();
        let path = dir.path().join("store");
        let p = path.to_str().unwrap();
        let spawn_ready = |procs: &mut Vec<(Proc, Vec<i64>)>| {
            for _ in 0..2 {
                let mut c = Proc::spawn("incrementer", &[p, &EACH.to_string()]);
                let first = c.expect_line(PATIENCE).parse().unwrap();
                c.expect("ready");
                procs.push((c, vec![first]));
            }
        };
        let mut procs = Vec::new();
        spawn_ready(&mut procs);
        // The old handles hold slots 0 and 1 of the first board; the new ones get
        // slots 0 and 1 of a new board.
        std::fs::remove_file(format!("{p}-board")).unwrap();
        spawn_ready(&mut procs);
        std::fs::write(format!("{p}-go"), b"").unwrap();
        for (c, results) in &mut procs {
            loop {
                let l = c.expect_line(PATIENCE);
                if l == "done" {
                    break;
                }
                results.push(l.parse().unwrap());
            }
            c.wait_success();
        }
        let all: Vec<i64> = procs.iter().flat_map(|(_, r)| r.iter().copied()).collect();
        let distinct: BTreeSet<i64> = all.iter().copied().collect();
        let stored: i64 = SharedData::open(&path)
            .unwrap()
            .get("counter")
            .unwrap()
            .unwrap();
        if stored != all.len() as i64 || distinct.len() != all.len() {
            bad.push(format!(
                "round {round}: {} acknowledged, stored {stored}, {} distinct results",
                all.len(),
                distinct.len()
            ));
        }
    }
    assert!(bad.is_empty(), "{} of {ROUNDS} rounds: {bad:?}", bad.len());
}

/// Every kind of write through `old`, each expected to fail naming `path`.
fn every_write_fails(old: &SharedData, path: &std::path::Path, what: &str) {
    let results: Vec<(&str, Result<(), Error>)> = vec![
        ("set", old.set("k", &9)),
        ("delete", old.delete("k").map(drop)),
        (
            "update",
            old.update("k", |_: Option<i64>| Some(9)).map(drop),
        ),
        (
            "compare_and_swap",
            old.compare_and_swap("k", None, &9).map(drop),
        ),
        ("increment", old.increment("n", 1).map(drop)),
        ("transaction", old.transaction(|tx| tx.set("k", &9))),
        ("clear", old.clear()),
    ];
    let shown = path.display().to_string();
    let wrong: Vec<String> = results
        .into_iter()
        .filter_map(|(op, r)| match r {
            Err(e) if e.to_string().contains(&shown) && e.to_string().contains(what) => None,
            other => Some(format!("{op}: {other:?}")),
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "writes through a handle whose store was {what}: {wrong:?}"
    );
}

/// Issue 19.5: a store deleted, or replaced by another file, while a handle is open:
/// the handle's writes would go to a file no one else sees (the store split in two);
/// they fail with an error naming the path instead, and the store now at the path is
/// untouched.
#[test]
fn writes_to_a_deleted_or_replaced_store_fail_naming_the_path() {
    let dir = common::tempdir();
    let path = dir.path().join("store");
    let old = SharedData::open(&path).unwrap();
    old.set("k", &1).unwrap();
    old.increment("n", 1).unwrap();
    std::fs::remove_file(&path).unwrap();
    every_write_fails(&old, &path, "deleted");

    let new = SharedData::open(&path).unwrap();
    new.set("k", &2).unwrap();
    every_write_fails(&old, &path, "replaced");
    assert_eq!(new.get::<i64>("k").unwrap(), Some(2));
    assert_eq!(new.get::<i64>("n").unwrap(), None);

    // Replaced by renaming another store over it: the file now at the path is left
    // byte for byte as it was. (Not opened here: SQLite finds a WAL by name, and the
    // displaced store's WAL is `store-wal` while connections to it are open.)
    let other = dir.path().join("other");
    SharedData::open(&other).unwrap().set("k", &3).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    every_write_fails(&new, &path, "replaced");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
