//! One conformance suite, written once over a backend factory and run for every engine:
//! `local` (a path) and `redis` (a URL on a private `redis-server`). Assertions that
//! differ by design (how soon a dead holder's lock comes back) ask the backend.
//!
//! The Redis half needs `redis-server` and the `redis` feature; without them each test
//! says so loudly and skips, and fails where `FILEIPC_REQUIRE_REDIS_TESTS` is set.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{PATIENCE, Proc, say};
use fileipc::{
    Error, Event, MessageQueue, Mutex, PidFile, PidStatus, QueueOptions, Semaphore, SharedData,
};

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "hold" => hold(&args),
        "hold-until-lost" => hold_until_lost(&args),
        "count" => count(&args),
        "hold-permits" => hold_permits(&args),
        "permit-cycles" => permit_cycles(&args),
        "increments" => increments(&args),
        "set-event" => set_event(&args),
        "own-pidfile" => own_pidfile(&args),
        "produce" => produce(&args),
        "consume" => consume(&args),
        "claim-and-hold" => claim_and_hold(&args),
        "hold-fenced" => hold_fenced(&args),
        "permit-fenced" => permit_fenced(&args),
        "write-fenced" => write_fenced(&args),
        "own-pidfile-fenced" => own_pidfile_fenced(&args),
        other => panic!("unknown role {other}"),
    });
}

/// Where a test's primitives live.
enum Backend {
    Local(tempfile::TempDir),
    Redis(RedisServer),
}

/// The lease the Redis backend runs its tests with: short, so a dead holder's lock
/// comes back quickly.
const LEASE: Duration = Duration::from_secs(1);

impl Backend {
    /// The name of primitive `n`: a path, or a URL.
    fn name(&self, n: &str) -> String {
        match self {
            Backend::Local(d) => d.path().join(n).display().to_string(),
            Backend::Redis(s) => s.url(n, &format!("lease={}ms", LEASE.as_millis())),
        }
    }

    /// The longest a lock held by a killed process stays taken: at once on the local
    /// engine (the kernel releases it), the lease on Redis.
    fn dead_holder_release(&self) -> Duration {
        match self {
            Backend::Local(_) => Duration::ZERO,
            Backend::Redis(_) => LEASE,
        }
    }
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod local {
            $(
                #[test]
                fn $test() {
                    super::$test(&super::Backend::Local(common_tempdir()));
                }
            )*
            fn common_tempdir() -> tempfile::TempDir {
                super::common::tempdir()
            }
        }
        mod redis {
            $(
                #[test]
                fn $test() {
                    if let Some(s) = super::RedisServer::start(concat!("redis::", stringify!($test))) {
                        super::$test(&super::Backend::Redis(s));
                    }
                }
            )*
        }
    };
}

conformance!(
    open_existing_never_creates,
    mutex_excludes_other_handles,
    mutex_times_out_while_held,
    mutex_unlock_without_holding_is_an_error,
    mutex_of_a_killed_holder_comes_back,
    mutex_excludes_processes,
    semaphore_counts_permits,
    semaphore_release_without_a_permit_signals,
    semaphore_permits_of_a_killed_holder_come_back,
    semaphore_admits_at_most_its_capacity,
    shared_data_reads_what_was_written,
    shared_data_increments_are_exact_across_processes,
    shared_data_transaction_is_all_or_nothing,
    event_set_clear_and_wait,
    event_wakes_a_waiter_in_another_process,
    pidfile_admits_one_owner,
    pidfile_of_a_killed_owner_is_taken_over,
    queue_delivers_in_order,
    queue_counts_messages_around_receives_and_claims,
    queue_waits_and_times_out,
    queue_delivers_each_message_once_across_processes,
    queue_destroyed_refuses_further_use,
    queue_detached_claim_stays_claimed_and_attaches_to_its_queue,
    queue_claims_are_acked_given_back_and_redelivered_first,
    queue_nacked_message_is_invisible_for_its_delay,
    queue_expired_lease_is_lost_and_a_late_ack_says_so,
    queue_max_deliveries_moves_a_message_to_the_dead_letters,
    queue_claim_of_a_killed_claimer_comes_back,
    queue_capacity_counts_claimed_messages_and_try_send_reports_full,
    mutex_regranted_after_a_kill_has_a_higher_fence,
    semaphore_permit_after_a_kill_has_a_higher_fence,
    fences_grow_across_a_destroyed_and_recreated_primitive,
    shared_data_refuses_a_stale_fence,
    pidfile_generation_grows_across_owners_and_files,
);

fn mutex_excludes_other_handles(b: &Backend) {
    let name = b.name("m");
    let a = Mutex::open(&name).unwrap();
    let c = Mutex::open(&name).unwrap();
    assert!(!a.is_locked().unwrap());
    assert!(a.try_lock().unwrap());
    assert!(a.is_locked().unwrap() && c.is_locked().unwrap());
    assert!(!c.try_lock().unwrap());
    assert!(!a.is_lost());
    a.unlock().unwrap();
    assert!(c.try_lock().unwrap());
    assert!(!a.try_lock().unwrap());
    let g = c.try_clone().unwrap();
    assert!(!g.try_lock().unwrap());
    c.unlock().unwrap();
    let guard = g.guard_forever().unwrap();
    assert!(!guard.is_lost());
    assert!(!a.try_lock().unwrap());
    drop(guard);
    assert!(a.try_lock().unwrap());
}

fn mutex_times_out_while_held(b: &Backend) {
    let name = b.name("m");
    let a = Mutex::open(&name).unwrap();
    let c = Mutex::open(&name).unwrap();
    assert!(a.try_lock().unwrap());
    let t = Duration::from_millis(200);
    let start = Instant::now();
    assert!(!c.lock_timeout(t).unwrap());
    let took = start.elapsed();
    assert!(
        took >= t,
        "gave up after {took:?}, before the {t:?} timeout"
    );
    assert!(c.guard_timeout(Duration::ZERO).unwrap().is_none());
}

fn open_existing_never_creates(b: &Backend) {
    let nf = Some(std::io::ErrorKind::NotFound);
    assert_eq!(Mutex::open_existing(b.name("m")).unwrap_err().io_kind(), nf);
    assert_eq!(
        MessageQueue::open_existing(b.name("q"))
            .unwrap_err()
            .io_kind(),
        nf
    );
    assert_eq!(
        SharedData::open_existing(b.name("kv"))
            .unwrap_err()
            .io_kind(),
        nf
    );
    assert_eq!(
        Semaphore::open_existing(b.name("s")).unwrap_err().io_kind(),
        nf
    );
    assert_eq!(
        fileipc::inspect(b.name("m")).unwrap().kind,
        fileipc::FileKind::Missing
    );
    drop(Mutex::open(b.name("m")).unwrap());
    Mutex::open_existing(b.name("m")).unwrap();
}

fn mutex_unlock_without_holding_is_an_error(b: &Backend) {
    let name = b.name("m");
    let a = Mutex::open(&name).unwrap();
    let e = a.unlock().unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains('m'), "{e}");
}

/// Child: takes the lock, says "locked", and waits to be killed.
fn hold(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    assert!(m.lock_timeout(PATIENCE).unwrap());
    say("locked");
    std::thread::park_timeout(PATIENCE * 2);
}

fn mutex_of_a_killed_holder_comes_back(b: &Backend) {
    let name = b.name("m");
    let mut holder = Proc::spawn("hold", &[&name]);
    holder.expect("locked");
    let m = Mutex::open(&name).unwrap();
    assert!(!m.try_lock().unwrap());
    holder.kill_and_reap();
    let start = Instant::now();
    assert!(m.lock_timeout(PATIENCE).unwrap());
    let took = start.elapsed();
    // Generous slack for a loaded machine; the figure is printed for the record.
    let bound = b.dead_holder_release() + Duration::from_millis(1500);
    eprintln!("lock of a killed holder back after {took:?} (bound {bound:?})");
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
}

/// Child: `n` cycles of lock, read-increment-write of a counter file, unlock.
fn count(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    let file = Path::new(&args[1]);
    let n: u32 = args[2].parse().unwrap();
    for _ in 0..n {
        let g = m
            .guard_timeout(PATIENCE)
            .unwrap()
            .expect("lock within PATIENCE");
        let v: u64 = std::fs::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::fs::write(file, format!("{}\n", v + 1)).unwrap();
        assert!(!g.is_lost());
        g.unlock().unwrap();
    }
}

fn mutex_excludes_processes(b: &Backend) {
    let name = b.name("m");
    let dir = common::tempdir();
    let file = dir.path().join("counter");
    std::fs::write(&file, "0\n").unwrap();
    let f = file.display().to_string();
    let (procs, cycles) = (4, 150);
    let mut kids: Vec<Proc> = (0..procs)
        .map(|_| Proc::spawn("count", &[&name, &f, &cycles.to_string()]))
        .collect();
    for k in &mut kids {
        k.wait_success();
    }
    let v: u64 = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(v, procs * cycles, "lost updates: mutual exclusion broken");
}

fn semaphore_counts_permits(b: &Backend) {
    let name = b.name("s");
    let s = Semaphore::open(&name, 3).unwrap();
    let e = Semaphore::open(&name, 10).unwrap_err();
    assert!(
        e.to_string().contains("10") && e.to_string().contains('3'),
        "{e}"
    );
    let other = Semaphore::open_existing(&name).unwrap();
    assert_eq!((other.value().unwrap(), other.capacity()), (3, 3));
    assert!(s.acquire_timeout(PATIENCE).unwrap());
    assert!(s.try_acquire().unwrap());
    let p = other.try_permit().unwrap().expect("third permit");
    assert_eq!((s.value().unwrap(), s.held().unwrap()), (0, 3));
    assert!(!s.try_acquire().unwrap());
    let t = Duration::from_millis(100);
    let start = Instant::now();
    assert!(!s.acquire_timeout(t).unwrap());
    assert!(start.elapsed() >= t);
    drop(p);
    assert_eq!(s.value().unwrap(), 1);
    s.release().unwrap();
    s.release().unwrap();
    assert_eq!((s.value().unwrap(), s.held().unwrap()), (3, 0));
    assert!(s.try_acquire().unwrap());
    assert!(s.detach().unwrap());
    assert_eq!((s.value().unwrap(), s.held().unwrap()), (2, 0));
    assert!(!s.detach().unwrap());
    s.release().unwrap();
    assert_eq!(s.value().unwrap(), 3);
}

fn semaphore_release_without_a_permit_signals(b: &Backend) {
    assert_eq!(
        Semaphore::open_existing(b.name("s")).unwrap_err().io_kind(),
        Some(std::io::ErrorKind::NotFound)
    );
    let s = Semaphore::open(b.name("s"), 0).unwrap();
    assert!(!s.try_acquire().unwrap());
    s.release().unwrap();
    assert_eq!((s.value().unwrap(), s.capacity()), (1, 1));
    assert!(s.try_acquire().unwrap());
}

/// Child: takes `args[1]` permits, says "held", waits to be killed.
fn hold_permits(args: &[String]) {
    let s = Semaphore::open_existing(&args[0]).unwrap();
    for _ in 0..args[1].parse::<u32>().unwrap() {
        assert!(s.acquire_timeout(PATIENCE).unwrap());
    }
    say("held");
    std::thread::park_timeout(PATIENCE * 2);
}

fn semaphore_permits_of_a_killed_holder_come_back(b: &Backend) {
    let name = b.name("s");
    let s = Semaphore::open(&name, 2).unwrap();
    let mut holder = Proc::spawn("hold-permits", &[&name, "2"]);
    holder.expect("held");
    assert_eq!(s.value().unwrap(), 0);
    holder.kill_and_reap();
    let start = Instant::now();
    assert!(s.acquire_timeout(PATIENCE).unwrap());
    assert!(s.acquire_timeout(PATIENCE).unwrap());
    let took = start.elapsed();
    let bound = b.dead_holder_release() + Duration::from_millis(1500);
    eprintln!("permits of a killed holder back after {took:?} (bound {bound:?})");
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
    assert_eq!((s.value().unwrap(), s.held().unwrap()), (0, 2));
}

/// Child: `args[2]` cycles of acquire, append `+` to the log, append `-`, release.
fn permit_cycles(args: &[String]) {
    use std::io::Write;
    let s = Semaphore::open_existing(&args[0]).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&args[1])
        .unwrap();
    for _ in 0..args[2].parse::<u32>().unwrap() {
        let p = s
            .permit_timeout(PATIENCE)
            .unwrap()
            .expect("a permit within PATIENCE");
        log.write_all(b"+").unwrap();
        log.write_all(b"-").unwrap();
        p.release().unwrap();
    }
}

fn semaphore_admits_at_most_its_capacity(b: &Backend) {
    let name = b.name("s");
    let _s = Semaphore::open(&name, 2).unwrap();
    let dir = common::tempdir();
    let log = dir.path().join("log");
    std::fs::write(&log, "").unwrap();
    let l = log.display().to_string();
    let mut kids: Vec<Proc> = (0..4)
        .map(|_| Proc::spawn("permit-cycles", &[&name, &l, "100"]))
        .collect();
    for k in &mut kids {
        k.wait_success();
    }
    // Each `+` is written after an acquire returned and each `-` before its release,
    // so at any point of the log the open `+` are at most the permits held.
    let (mut inside, mut most) = (0i32, 0i32);
    for c in std::fs::read(&log).unwrap() {
        inside += if c == b'+' { 1 } else { -1 };
        most = most.max(inside);
    }
    assert_eq!(inside, 0);
    assert!(most <= 2, "{most} holders at once with 2 permits");
    assert_eq!(Semaphore::open_existing(&name).unwrap().value().unwrap(), 2);
}

fn shared_data_reads_what_was_written(b: &Backend) {
    let name = b.name("kv");
    let d = SharedData::open(&name).unwrap();
    assert!(d.is_empty().unwrap());
    d.set("n", &41).unwrap();
    d.set("s", "text").unwrap();
    d.set("f", &0.9856906946328695f64).unwrap();
    assert_eq!(d.get::<i64>("n").unwrap(), Some(41));
    assert_eq!(d.get::<f64>("f").unwrap(), Some(0.9856906946328695));
    assert_eq!(d.get_json("s").unwrap().as_deref(), Some("\"text\""));
    assert!(matches!(d.get::<i64>("s"), Err(Error::Value { .. })));
    assert_eq!(d.keys().unwrap(), ["f", "n", "s"]);
    assert_eq!((d.len().unwrap(), d.contains_key("n").unwrap()), (3, true));
    assert_eq!(d.increment("n", 1).unwrap(), 42);
    assert_eq!(d.increment("big", i64::MAX - 1).unwrap(), i64::MAX - 1);
    assert_eq!(
        d.increment("big", 1).unwrap(),
        i64::MAX,
        "exact for every i64"
    );
    assert!(matches!(d.increment("big", 1), Err(Error::Value { .. })));
    assert!(d.compare_and_swap("n", Some(&42), &43).unwrap());
    assert!(!d.compare_and_swap("n", Some(&42), &44).unwrap());
    assert!(d.compare_and_swap("new", None::<&i32>, &1).unwrap());
    assert_eq!(
        d.update("n", |v: Option<i64>| v.map(|x| x * 2)).unwrap(),
        Some(86)
    );
    assert_eq!(d.update("n", |_: Option<i64>| None).unwrap(), None);
    assert!(!d.contains_key("n").unwrap());
    assert!(d.delete("s").unwrap());
    assert!(!d.delete("s").unwrap());
    assert!(d.set("nan", &f64::NAN).is_err());
    assert!(d.get::<i64>("").is_err());
    let other = SharedData::open(&name).unwrap();
    assert_eq!(other.dump().unwrap().len(), d.len().unwrap());
    d.clear().unwrap();
    assert!(other.is_empty().unwrap());
}

/// Child: `args[1]` increments of key "c".
fn increments(args: &[String]) {
    let d = SharedData::open(&args[0]).unwrap();
    for _ in 0..args[1].parse::<u32>().unwrap() {
        d.increment("c", 1).unwrap();
    }
    d.transaction(|tx| tx.increment("t", 1)).unwrap();
}

fn shared_data_increments_are_exact_across_processes(b: &Backend) {
    let name = b.name("kv");
    let d = SharedData::open(&name).unwrap();
    let mut kids: Vec<Proc> = (0..4)
        .map(|_| Proc::spawn("increments", &[&name, "200"]))
        .collect();
    for k in &mut kids {
        k.wait_success();
    }
    assert_eq!(d.get::<i64>("c").unwrap(), Some(800));
    assert_eq!(d.get::<i64>("t").unwrap(), Some(4));
}

fn shared_data_transaction_is_all_or_nothing(b: &Backend) {
    let d = SharedData::open(b.name("kv")).unwrap();
    d.set("a", &1).unwrap();
    let n = d
        .transaction(|tx| {
            tx.set("b", &2)?;
            assert_eq!(
                tx.get::<i64>("b")?,
                Some(2),
                "reads see the transaction's writes"
            );
            assert!(tx.delete("a")?);
            assert_eq!(tx.keys()?, ["b"]);
            tx.len()
        })
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(d.keys().unwrap(), ["b"]);
    let r: fileipc::Result<()> = d.transaction(|tx| {
        tx.set("c", &3)?;
        tx.clear()?;
        Err(Error::Invalid {
            path: "x".into(),
            detail: "abandoned".into(),
        })
    });
    assert!(r.is_err());
    assert_eq!(
        d.keys().unwrap(),
        ["b"],
        "an abandoned transaction writes nothing"
    );
    d.transaction(|tx| {
        tx.clear()?;
        tx.set("z", &26)
    })
    .unwrap();
    assert_eq!(d.keys().unwrap(), ["z"]);
}

fn event_set_clear_and_wait(b: &Backend) {
    let e = Event::open(b.name("ev")).unwrap();
    assert!(!e.is_set().unwrap());
    let t = Duration::from_millis(100);
    let start = Instant::now();
    assert!(!e.wait_timeout(t).unwrap());
    assert!(start.elapsed() >= t);
    e.set().unwrap();
    assert!(e.is_set().unwrap() && e.try_wait().unwrap());
    assert!(e.wait_timeout(Duration::ZERO).unwrap());
    e.clear().unwrap();
    assert!(!e.is_set().unwrap());
    e.clear().unwrap();
}

/// Child: opens the event, says "ready", sets it.
fn set_event(args: &[String]) {
    let e = Event::open(&args[0]).unwrap();
    say("ready");
    e.set().unwrap();
}

fn event_wakes_a_waiter_in_another_process(b: &Backend) {
    let name = b.name("ev");
    let e = Event::open(&name).unwrap();
    let mut setter = Proc::spawn("set-event", &[&name]);
    setter.expect("ready");
    assert!(e.wait_timeout(PATIENCE).unwrap());
    setter.wait_success();
}

fn pidfile_admits_one_owner(b: &Backend) {
    let name = b.name("app.pid");
    let mut a = PidFile::open(&name).unwrap();
    let mut c = PidFile::open(&name).unwrap();
    assert_eq!(a.status().unwrap(), PidStatus::Absent);
    assert_eq!(a.read().unwrap(), None);
    assert!(a.create().unwrap());
    assert!(a.is_owner().unwrap());
    assert!(!c.create().unwrap());
    assert!(!c.is_owner().unwrap());
    assert_eq!(c.read().unwrap(), Some(std::process::id()));
    assert!(c.status().unwrap().is_running());
    assert!(
        c.remove().is_err(),
        "a handle that does not own it cannot remove it"
    );
    a.remove().unwrap();
    assert_eq!(c.read().unwrap(), None);
    assert!(c.create().unwrap());
    drop(c);
    assert_eq!(a.read().unwrap(), None, "dropping the owner removes it");
}

/// Child: creates the PID file, says "owner", waits to be killed.
fn own_pidfile(args: &[String]) {
    let mut p = PidFile::open(&args[0]).unwrap();
    assert!(p.create().unwrap());
    say("owner");
    std::thread::park_timeout(PATIENCE * 2);
}

fn pidfile_of_a_killed_owner_is_taken_over(b: &Backend) {
    let name = b.name("app.pid");
    let mut owner = Proc::spawn("own-pidfile", &[&name]);
    owner.expect("owner");
    let mut p = PidFile::open(&name).unwrap();
    assert!(!p.create().unwrap());
    assert_eq!(p.read().unwrap(), Some(owner.pid));
    owner.kill_and_reap();
    let start = Instant::now();
    common::eventually(PATIENCE, "the dead owner's PID file is taken over", || {
        p.create().unwrap()
    });
    let took = start.elapsed();
    let bound = b.dead_holder_release() + Duration::from_millis(1500);
    eprintln!("PID file of a killed owner taken over after {took:?} (bound {bound:?})");
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
    assert_eq!(p.read().unwrap(), Some(std::process::id()));
}

fn queue_delivers_in_order(b: &Backend) {
    let name = b.name("q");
    let q = MessageQueue::open(&name).unwrap();
    assert!(q.is_empty().unwrap());
    assert!(q.try_recv().unwrap().is_none());
    q.send("one").unwrap();
    q.send(b"two\0\n\xff").unwrap();
    assert_eq!(q.send_all(["3", "4", "5"]).unwrap(), 3);
    assert_eq!(q.count().unwrap(), 5);
    let other = MessageQueue::open(&name).unwrap();
    assert_eq!(&*other.try_recv().unwrap().unwrap(), b"one");
    assert_eq!(&*q.recv_timeout(PATIENCE).unwrap().unwrap(), b"two\0\n\xff");
    let many = q.recv_many(10, PATIENCE).unwrap();
    let got: Vec<&[u8]> = many.iter().map(|m| &**m).collect();
    assert_eq!(got, [b"3", b"4", b"5"]);
    assert_eq!(q.count().unwrap(), 0);
    q.send("x").unwrap();
    q.clear().unwrap();
    assert!(q.is_empty().unwrap() && q.try_recv().unwrap().is_none());
    let st = q.stats().unwrap();
    assert_eq!(
        (st.sent, st.received, st.count),
        (6, 6, 0),
        "cleared messages count as received"
    );
    let big = vec![7u8; fileipc::DEFAULT_MAX_MESSAGE_SIZE + 1];
    assert!(matches!(q.send(&big), Err(Error::Invalid { .. })));
}

/// Counts and stats are of messages, whatever a receive leaves behind in the engine (on
/// Redis, plain receives leave their entries in the stream until a trim): checked past
/// several trims, with a claim pending among receives, and from a second handle.
fn queue_counts_messages_around_receives_and_claims(b: &Backend) {
    let name = b.name("q");
    let q = MessageQueue::open(&name).unwrap();
    let other = MessageQueue::open(&name).unwrap();
    q.send_all((0..300).map(|i| i.to_string())).unwrap();
    for i in 0..150 {
        assert_eq!(q.try_recv().unwrap().unwrap(), *i.to_string());
    }
    assert_eq!((q.count().unwrap(), other.count().unwrap()), (150, 150));
    let claim = other.try_claim().unwrap().unwrap();
    assert_eq!((claim.bytes(), claim.seq()), (&b"150"[..], 150));
    for i in 151..251 {
        assert_eq!(q.recv_timeout(PATIENCE).unwrap().unwrap(), *i.to_string());
    }
    assert_eq!(q.count().unwrap(), 50, "49 ready and 1 claimed");
    let st = other.stats().unwrap();
    assert_eq!(
        (st.sent, st.count, st.ready, st.in_flight),
        (300, 50, 49, 1)
    );
    claim.ack().unwrap();
    let st = q.stats().unwrap();
    assert_eq!((st.sent, st.received, st.count), (300, 251, 49));
    assert_eq!(q.recv_many(100, PATIENCE).unwrap().len(), 49);
    assert!(other.is_empty().unwrap() && q.try_recv().unwrap().is_none());
    q.send("last").unwrap();
    assert_eq!(other.count().unwrap(), 1);
    assert_eq!(other.recv_timeout(PATIENCE).unwrap().unwrap(), "last");
}

fn queue_waits_and_times_out(b: &Backend) {
    let q = MessageQueue::open(b.name("q")).unwrap();
    let t = Duration::from_millis(150);
    let start = Instant::now();
    assert!(q.recv_timeout(t).unwrap().is_none());
    assert!(start.elapsed() >= t);
    let mut p = Proc::spawn("produce", &[&b.name("q"), "1", "after-ready"]);
    p.expect("ready");
    assert_eq!(&*q.recv_timeout(PATIENCE).unwrap().unwrap(), b"0");
    p.wait_success();
}

/// Child: sends `args[1]` messages numbered from 0 (says "ready" first if asked).
fn produce(args: &[String]) {
    let q = MessageQueue::open(&args[0]).unwrap();
    if args.get(2).is_some() {
        say("ready");
    }
    for i in 0..args[1].parse::<u32>().unwrap() {
        q.send(i.to_string()).unwrap();
    }
}

/// Child: receives until it gets "stop", saying each message.
fn consume(args: &[String]) {
    let q = MessageQueue::open(&args[0]).unwrap();
    let mut got = Vec::new();
    loop {
        let m = q
            .recv_timeout(PATIENCE)
            .unwrap()
            .expect("a message within PATIENCE");
        if &*m == b"stop" {
            break;
        }
        got.push(m.into_string().unwrap());
    }
    say(got.join(","));
}

fn queue_delivers_each_message_once_across_processes(b: &Backend) {
    let name = b.name("q");
    let q = MessageQueue::open(&name).unwrap();
    let mut consumers: Vec<Proc> = (0..3).map(|_| Proc::spawn("consume", &[&name])).collect();
    let mut producers: Vec<Proc> = (0..2)
        .map(|_| Proc::spawn("produce", &[&name, "300"]))
        .collect();
    for p in &mut producers {
        p.wait_success();
    }
    for _ in &consumers {
        q.send("stop").unwrap();
    }
    let mut all: Vec<u32> = Vec::new();
    for c in &mut consumers {
        let line = c.expect_line(PATIENCE);
        all.extend(
            line.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u32>().unwrap()),
        );
        c.wait_success();
    }
    all.sort_unstable();
    let want: Vec<u32> = (0..300).flat_map(|i| [i, i]).collect();
    assert_eq!(all, want, "every message delivered exactly once");
    assert_eq!(q.count().unwrap(), 0);
}

fn queue_destroyed_refuses_further_use(b: &Backend) {
    let name = b.name("q");
    let q = MessageQueue::open(&name).unwrap();
    let other = MessageQueue::open(&name).unwrap();
    q.send("x").unwrap();
    q.destroy().unwrap();
    assert!(
        matches!(other.send("y"), Err(Error::Destroyed { .. })),
        "{:?}",
        other.send("y")
    );
    assert!(
        matches!(other.try_recv(), Err(Error::Destroyed { .. })),
        "{:?}",
        other.try_recv()
    );
    assert!(
        matches!(other.try_claim(), Err(Error::Destroyed { .. })),
        "{:?}",
        other.try_claim()
    );
}

fn queue_claims_are_acked_given_back_and_redelivered_first(b: &Backend) {
    let q = MessageQueue::open(b.name("q")).unwrap();
    q.send_all(["a", "b", "c"]).unwrap();
    let a = q.claim_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!((a.bytes(), a.attempt()), (&b"a"[..], 1));
    assert_eq!(
        q.count().unwrap(),
        3,
        "an unacknowledged claim still counts"
    );
    let st = q.stats().unwrap();
    assert_eq!((st.count, st.ready, st.in_flight), (3, 2, 1));
    let first_b = q.try_claim().unwrap().unwrap();
    assert_eq!(first_b.bytes(), b"b");
    assert!(first_b.fence() > a.fence(), "fences grow");
    drop(first_b); // given back at once
    let again = q.try_claim().unwrap().unwrap();
    assert_eq!(
        (again.bytes(), again.attempt()),
        (&b"b"[..], 2),
        "a redelivery comes before newer messages"
    );
    again.nack(Duration::ZERO).unwrap();
    let st = q.stats().unwrap();
    assert_eq!((st.count, st.ready, st.in_flight), (3, 2, 1));
    // Plain receivers never see a message given back for redelivery.
    assert_eq!(q.try_recv().unwrap().unwrap(), "c");
    assert!(q.try_recv().unwrap().is_none());
    a.ack().unwrap();
    let third = q.try_claim().unwrap().unwrap();
    assert_eq!((third.bytes(), third.attempt()), (&b"b"[..], 3));
    third.ack().unwrap();
    assert_eq!(q.count().unwrap(), 0);
    assert!(q.try_claim().unwrap().is_none());
    let st = q.stats().unwrap();
    assert_eq!((st.count, st.ready, st.in_flight), (0, 0, 0));
}

fn queue_nacked_message_is_invisible_for_its_delay(b: &Backend) {
    let q = MessageQueue::open(b.name("q")).unwrap();
    q.send("later").unwrap();
    let delay = Duration::from_millis(300);
    let t = Instant::now();
    q.try_claim().unwrap().unwrap().nack(delay).unwrap();
    assert!(q.try_claim().unwrap().is_none(), "still within its delay");
    let m = q.claim_timeout(PATIENCE).unwrap().unwrap();
    assert!(t.elapsed() >= delay, "came back after {:?}", t.elapsed());
    assert_eq!(m.attempt(), 2);
    m.ack().unwrap();
}

fn queue_expired_lease_is_lost_and_a_late_ack_says_so(b: &Backend) {
    let name = b.name("q");
    let q = QueueOptions::new()
        .lease(Duration::from_millis(200))
        .open(&name)
        .unwrap();
    q.send("job").unwrap();
    let mut slow = q.try_claim().unwrap().unwrap();
    slow.extend(Duration::from_millis(400)).unwrap();
    let t = Instant::now();
    let fast = q.claim_timeout(PATIENCE).unwrap().unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "the extension held only {:?}",
        t.elapsed()
    );
    assert_eq!((fast.bytes(), fast.attempt()), (&b"job"[..], 2));
    assert!(fast.fence() > slow.fence());
    let e = slow.extend(Duration::from_secs(1)).unwrap_err();
    assert!(e.to_string().contains("lost lease"), "{e}");
    fast.ack().unwrap();
    let e = slow.ack().unwrap_err();
    assert!(e.to_string().contains("lost lease"), "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    assert_eq!(q.count().unwrap(), 0);
}

fn queue_max_deliveries_moves_a_message_to_the_dead_letters(b: &Backend) {
    let q = QueueOptions::new()
        .max_deliveries(3)
        .open(b.name("q"))
        .unwrap();
    q.send_all(["poison", "fine"]).unwrap();
    for attempt in 1..=3 {
        let m = q.try_claim().unwrap().unwrap();
        assert_eq!((m.bytes(), m.attempt()), (&b"poison"[..], attempt));
        m.nack(Duration::ZERO).unwrap();
    }
    let m = q.try_claim().unwrap().unwrap();
    assert_eq!(m.bytes(), b"fine");
    m.ack().unwrap();
    assert!(q.try_claim().unwrap().is_none());
    assert!(q.try_recv().unwrap().is_none());
    assert_eq!(q.count().unwrap(), 0);
    let dead = q.dead_letters().unwrap();
    assert_eq!(dead.count().unwrap(), 1);
    let m = dead.try_claim().unwrap().unwrap();
    assert_eq!((m.bytes(), m.dead_letter_attempts()), (&b"poison"[..], 3));
    m.ack().unwrap();
    assert!(dead.try_recv().unwrap().is_none());
    assert!(dead.try_claim().unwrap().is_none());
    q.destroy().unwrap();
    assert!(
        MessageQueue::open_existing(b.name("q")).is_err(),
        "destroyed"
    );
}

/// Child: claims a message of queue `args[0]` with a lease of `args[1]` ms, says
/// "claimed ATTEMPT", and holds it until killed.
fn claim_and_hold(args: &[String]) {
    let q = QueueOptions::new()
        .lease(Duration::from_millis(args[1].parse().unwrap()))
        .open(&args[0])
        .unwrap();
    let m = q.claim_timeout(PATIENCE).unwrap().unwrap();
    say(format!("claimed {}", m.attempt()));
    loop {
        std::thread::park();
    }
}

fn queue_claim_of_a_killed_claimer_comes_back(b: &Backend) {
    let name = b.name("q");
    let q = QueueOptions::new().lease(LEASE).open(&name).unwrap();
    q.send("job").unwrap();
    let mut p = Proc::spawn("claim-and-hold", &[&name, &LEASE.as_millis().to_string()]);
    p.expect("claimed 1");
    assert!(q.try_claim().unwrap().is_none(), "claimed by the child");
    p.kill_and_reap();
    let start = Instant::now();
    let m = q
        .claim_timeout(PATIENCE)
        .unwrap()
        .expect("the dead claimer's message");
    let took = start.elapsed();
    let bound = b.dead_holder_release() + Duration::from_millis(500);
    eprintln!("a killed claimer's message came back after {took:?} (bound {bound:?})");
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
    assert_eq!((m.bytes(), m.attempt()), (&b"job"[..], 2));
    m.ack().unwrap();
    assert_eq!(q.count().unwrap(), 0);
}

fn queue_capacity_counts_claimed_messages_and_try_send_reports_full(b: &Backend) {
    let name = b.name("q");
    let q = QueueOptions::new().capacity(3).open(&name).unwrap();
    assert_eq!(q.send_all(["a", "b"]).unwrap(), 2);
    let c = q.try_claim().unwrap().unwrap();
    assert!(q.try_send("c").unwrap());
    assert!(
        !q.try_send("d").unwrap(),
        "a claimed message holds its place"
    );
    let t = Instant::now();
    assert!(!q.send_timeout("d", Duration::from_millis(50)).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(50));
    c.ack().unwrap();
    assert!(q.try_send("d").unwrap());
    assert_eq!(q.count().unwrap(), 3);
    assert!(QueueOptions::new().capacity(0).open(&name).is_err());
    // A sender waiting for room gets it when a message is received.
    let other = q.try_clone().unwrap();
    let sender = std::thread::spawn(move || other.send_timeout("e", PATIENCE).unwrap());
    assert_eq!(q.recv_timeout(PATIENCE).unwrap().unwrap(), "b");
    assert!(sender.join().unwrap(), "the waiting send went through");
    assert_eq!(q.count().unwrap(), 3);
}

fn queue_detached_claim_stays_claimed_and_attaches_to_its_queue(b: &Backend) {
    let q = MessageQueue::open(b.name("q")).unwrap();
    let other = MessageQueue::open(b.name("q2")).unwrap();
    q.send("job").unwrap();
    let token = q.try_claim().unwrap().expect("a job").detach();
    assert!(
        q.try_claim().unwrap().is_none(),
        "still claimed while detached"
    );
    assert!(q.try_recv().unwrap().is_none());
    let e = token.attach(&other).unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    q.send("second").unwrap();
    let token = q.try_claim().unwrap().expect("the second job").detach();
    let job = token
        .attach(&q.try_clone().unwrap())
        .map(|j| (j.bytes().to_vec(), j.ack()));
    let (bytes, acked) = job.unwrap();
    assert_eq!(bytes, b"second");
    acked.unwrap();
}

/// Child: takes the lock with a guard, says its fence, and waits to be killed.
fn hold_fenced(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    let g = m.guard_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!(m.fence(), Some(g.fence()));
    say(format!("fence {}", g.fence()));
    std::thread::park_timeout(PATIENCE * 2);
}

/// The fence a child said ("fence N").
fn said_fence(p: &mut Proc) -> u64 {
    let l = p.expect_line(PATIENCE);
    l.strip_prefix("fence ")
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("child said {l:?}, expected a fence"))
}

fn mutex_regranted_after_a_kill_has_a_higher_fence(b: &Backend) {
    let name = b.name("m");
    let m = Mutex::open(&name).unwrap();
    assert_eq!(m.fence(), None);
    let mut holder = Proc::spawn("hold-fenced", &[&name]);
    let killed = said_fence(&mut holder);
    assert!(!m.try_lock().unwrap());
    holder.kill_and_reap();
    let g = m
        .guard_timeout(PATIENCE)
        .unwrap()
        .expect("the lock comes back");
    eprintln!(
        "fence of the killed holder {killed}, of its successor {}",
        g.fence()
    );
    assert!(g.fence() > killed);
    assert_eq!(m.fence(), Some(g.fence()));
    let f = g.fence();
    g.unlock().unwrap();
    assert_eq!(m.fence(), None);
    // The bool API: the next grant's fence, while held.
    assert!(m.try_lock().unwrap());
    assert!(m.fence().unwrap() > f);
    m.unlock().unwrap();
}

/// Child: takes one permit with a guard, says its fence, and waits to be killed.
fn permit_fenced(args: &[String]) {
    let s = Semaphore::open_existing(&args[0]).unwrap();
    let p = s.permit_timeout(PATIENCE).unwrap().unwrap();
    say(format!("fence {}", p.fence()));
    std::thread::park_timeout(PATIENCE * 2);
}

fn semaphore_permit_after_a_kill_has_a_higher_fence(b: &Backend) {
    let name = b.name("s");
    let s = Semaphore::open(&name, 1).unwrap();
    assert_eq!(s.last_fence(), None);
    let mut holder = Proc::spawn("permit-fenced", &[&name]);
    let killed = said_fence(&mut holder);
    assert!(!s.try_acquire().unwrap());
    holder.kill_and_reap();
    let p = s
        .permit_timeout(PATIENCE)
        .unwrap()
        .expect("the permit comes back");
    eprintln!(
        "fence of the killed holder {killed}, of its successor {}",
        p.fence()
    );
    assert!(p.fence() > killed);
    assert_eq!(s.last_fence(), Some(p.fence()));
    let f = p.fence();
    p.release().unwrap();
    assert!(s.acquire_timeout(PATIENCE).unwrap());
    assert!(s.last_fence().unwrap() > f);
    s.release().unwrap();
}

fn fences_grow_across_a_destroyed_and_recreated_primitive(b: &Backend) {
    let (m_name, s_name) = (b.name("m"), b.name("s"));
    let m = Mutex::open(&m_name).unwrap();
    let s = Semaphore::open(&s_name, 1).unwrap();
    let mf = m.guard_forever().unwrap().fence();
    let sf = s.permit_forever().unwrap().fence();
    m.destroy().unwrap();
    s.destroy().unwrap();
    drop((m, s));
    let m = Mutex::open(&m_name).unwrap();
    let s = Semaphore::open(&s_name, 1).unwrap();
    let (mf2, sf2) = (
        m.guard_forever().unwrap().fence(),
        s.permit_forever().unwrap().fence(),
    );
    eprintln!("mutex fence {mf} then {mf2}; semaphore fence {sf} then {sf2}");
    assert!(mf2 > mf && sf2 > sf);
}

/// Child: `set_fenced(args[1], args[2], args[3])` on store `args[0]`, then a fenced
/// compare-and-swap from that value to `args[2] + "!"`; says both results.
fn write_fenced(args: &[String]) {
    let d = SharedData::open(&args[0]).unwrap();
    let fence: u64 = args[3].parse().unwrap();
    let set = d.set_fenced(&args[1], &args[2], fence).unwrap();
    let cas = d
        .compare_and_swap_fenced(&args[1], Some(&args[2]), &format!("{}!", args[2]), fence)
        .unwrap();
    say(format!("set {set} cas {cas}"));
}

fn shared_data_refuses_a_stale_fence(b: &Backend) {
    let (m_name, d_name) = (b.name("m"), b.name("d"));
    let m = Mutex::open(&m_name).unwrap();
    let d = SharedData::open(&d_name).unwrap();
    let mut holder = Proc::spawn("hold-fenced", &[&m_name]);
    let stale = said_fence(&mut holder);
    holder.kill_and_reap();
    let g = m
        .guard_timeout(PATIENCE)
        .unwrap()
        .expect("the lock comes back");
    assert!(d.set_fenced("k", &"new", g.fence()).unwrap());
    // The killed holder's token, written by another process: both writes refused.
    let mut late = Proc::spawn("write-fenced", &[&d_name, "k", "old", &stale.to_string()]);
    late.expect("set false cas false");
    late.wait_success();
    assert_eq!(d.get::<String>("k").unwrap().as_deref(), Some("new"));
    // A newer grant's token is accepted, by another process too.
    g.unlock().unwrap();
    let newer = m.guard_forever().unwrap().fence();
    let mut next = Proc::spawn("write-fenced", &[&d_name, "k", "newer", &newer.to_string()]);
    next.expect("set true cas true");
    next.wait_success();
    assert_eq!(d.get::<String>("k").unwrap().as_deref(), Some("newer!"));
    // The highest fence outlives the value, and the same fence is accepted again.
    assert!(d.delete("k").unwrap());
    assert!(!d.set_fenced("k", &"x", newer - 1).unwrap());
    assert!(!d.contains_key("k").unwrap());
    assert!(d.set_fenced("k", &"y", newer).unwrap());
    // Fences are per key; a CAS on a wrong value writes nothing and records nothing.
    assert!(d.set_fenced("other", &1, stale).unwrap());
    assert!(
        !d.compare_and_swap_fenced("k2", Some(&1), &2, u64::MAX >> 1)
            .unwrap()
    );
    assert!(d.set_fenced("k2", &3, 5).unwrap());
    // Fences are compared exactly, also above 2^53 (doubles would round them).
    let big = (1u64 << 60) + 1;
    assert!(d.set_fenced("big", &1, big).unwrap());
    assert!(!d.set_fenced("big", &2, big - 1).unwrap());
    assert_eq!(d.get::<i64>("big").unwrap(), Some(1));
}

/// Child: creates the PID file, says its generation ("fence N"), waits to be killed.
fn own_pidfile_fenced(args: &[String]) {
    let mut p = PidFile::open(&args[0]).unwrap();
    assert!(p.create().unwrap());
    say(format!("fence {}", p.generation().unwrap()));
    std::thread::park_timeout(PATIENCE * 2);
}

fn pidfile_generation_grows_across_owners_and_files(b: &Backend) {
    let name = b.name("app.pid");
    let mut p = PidFile::open(&name).unwrap();
    assert_eq!(p.last_generation().unwrap(), None);
    let mut owner = Proc::spawn("own-pidfile-fenced", &[&name]);
    let killed = said_fence(&mut owner);
    assert_eq!(p.generation(), None);
    assert_eq!(p.last_generation().unwrap(), Some(killed));
    owner.kill_and_reap();
    common::eventually(PATIENCE, "the dead owner's PID file is taken over", || {
        p.create().unwrap()
    });
    let taken = p.generation().unwrap();
    eprintln!("generation of the killed owner {killed}, of its successor {taken}");
    assert!(taken > killed);
    assert_eq!(p.last_generation().unwrap(), Some(taken));
    // Created again after a removal: higher still.
    p.remove().unwrap();
    assert_eq!(p.generation(), None);
    assert!(p.create().unwrap());
    assert!(p.generation().unwrap() > taken);
}

// ---- Redis only: what differs by design ----

/// Child: takes the lock, says "locked", waits until its lease is lost (it is stopped
/// meanwhile), then reports what `is_lost` and `unlock` say.
fn hold_until_lost(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    let g = m.guard_timeout(PATIENCE).unwrap().unwrap();
    say(format!("fence {}", g.fence()));
    say("locked");
    let start = Instant::now();
    while !g.is_lost() {
        assert!(start.elapsed() < PATIENCE, "lease never reported lost");
        std::thread::park_timeout(Duration::from_millis(5));
    }
    match g.unlock() {
        Err(Error::LeaseLost { .. }) => say("lost unlock-refused"),
        other => say(format!("lost unlock-gave {other:?}")),
    }
}

#[test]
fn redis_stopped_holder_loses_its_lease_and_its_unlock_errs() {
    let Some(s) = RedisServer::start("redis_stopped_holder_loses_its_lease_and_its_unlock_errs")
    else {
        return;
    };
    let name = s.url("m", "lease=1s");
    let mut holder = Proc::spawn("hold-until-lost", &[&name]);
    let stale = said_fence(&mut holder);
    holder.expect("locked");
    common::signal(holder.pid, rustix::process::Signal::STOP);
    let m = Mutex::open(&name).unwrap();
    let start = Instant::now();
    let g = m
        .guard_timeout(PATIENCE)
        .unwrap()
        .expect("the lease expires");
    eprintln!(
        "successor got the lock {:?} after the holder stopped",
        start.elapsed()
    );
    // The stopped holder's fence is lower than its successor's.
    assert!(g.fence() > stale, "{} <= {stale}", g.fence());
    common::signal(holder.pid, rustix::process::Signal::CONT);
    holder.expect("lost unlock-refused");
    // The late unlock did not release the successor's lock.
    assert!(!g.is_lost());
    assert!(Mutex::open(&name).unwrap().is_locked().unwrap());
    g.unlock().unwrap();
}

/// A handle kept across a `destroy` and a re-creation of its queue receives what is
/// sent to the new queue at once: it must not wait for an entry after the last one it
/// saw of the old queue (Redis stream ids of the new queue are higher).
#[test]
fn redis_queue_handle_receives_across_destroy_and_recreate() {
    let Some(s) = RedisServer::start("redis_queue_handle_receives_across_destroy_and_recreate")
    else {
        return;
    };
    let url = s.url("q", "");
    let old = MessageQueue::open(&url).unwrap();
    old.send_all(["a", "b"]).unwrap();
    assert_eq!(old.recv_timeout(PATIENCE).unwrap().unwrap(), "a");
    assert_eq!(old.recv_timeout(PATIENCE).unwrap().unwrap(), "b");
    MessageQueue::open(&url).unwrap().destroy().unwrap();
    let new = MessageQueue::open(&url).unwrap();
    new.send("c").unwrap();
    let start = Instant::now();
    assert_eq!(old.recv_timeout(PATIENCE).unwrap().unwrap(), "c");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn redis_name_of_another_kind_is_refused_naming_the_url() {
    let Some(s) = RedisServer::start("redis_name_of_another_kind_is_refused_naming_the_url") else {
        return;
    };
    s.cli(&["HSET", "fileipc:q:meta", "kind", "queue", "version", "1"]);
    let url = s.url("q", "");
    let e = Mutex::open(&url).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("redis+unix://") && text.contains("queue"),
        "{text}"
    );
}

#[test]
fn redis_unreachable_server_fails_at_open_naming_the_url() {
    let dir = common::tempdir();
    let url = format!("redis+unix://{}/none.sock?name=x", dir.path().display());
    if !cfg!(feature = "redis") {
        let e = Mutex::open(&url).unwrap_err();
        assert!(e.to_string().contains("feature"), "{e}");
        return;
    }
    let e = Mutex::open(&url).unwrap_err();
    assert!(matches!(e, Error::Redis { .. }), "{e:?}");
    assert!(e.to_string().contains("none.sock"), "{e}");
}
