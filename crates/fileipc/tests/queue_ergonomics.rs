//! Iterating over a queue and messages as JSON.

mod common;

use std::time::Duration;

use fileipc::{Error, MessageQueue, QueueOptions};

#[test]
fn try_iter_takes_what_is_there_and_iter_ends_at_destroy() {
    let d = common::tempdir();
    let q = MessageQueue::open(d.path().join("q")).unwrap();
    q.send_all(["a", "b", "c"]).unwrap();
    let got: Vec<_> = q.try_iter().map(|m| m.unwrap().into_bytes()).collect();
    assert_eq!(got, [b"a", b"b", b"c"]);
    assert!(q.try_iter().next().is_none());

    let path = d.path().join("q");
    let sender = std::thread::spawn(move || {
        let q = MessageQueue::open(&path).unwrap();
        for m in ["x", "y"] {
            q.send(m).unwrap();
        }
        // Destroyed only once both were received.
        common::eventually(common::PATIENCE, "the messages received", || {
            q.is_empty().unwrap()
        });
        q.destroy().unwrap();
    });
    let mut got = Vec::new();
    for m in &q {
        match m {
            Ok(m) => got.push(m.into_string().unwrap()),
            Err(Error::Destroyed { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    sender.join().unwrap();
    assert_eq!(got, ["x", "y"]);
}

#[test]
fn json_round_trips_and_a_bad_message_is_an_error_naming_the_queue() {
    let d = common::tempdir();
    let q = MessageQueue::open(d.path()).unwrap();
    q.send_json(&serde_json::json!({"id": 7})).unwrap();
    let v: serde_json::Value = q.recv_json().unwrap().unwrap();
    assert_eq!(v["id"], 7);
    q.send("not json").unwrap();
    let e = q.recv_json::<u32>().unwrap_err();
    assert!(matches!(e, Error::Value { .. }), "{e}");
    assert!(
        e.to_string().contains(&d.path().display().to_string()),
        "{e}"
    );
    // A claimed message that does not decode is given back, not lost.
    q.send("[1, 2]").unwrap();
    assert!(q.claim_json::<String>().is_err());
    let (v, c): (Vec<u8>, _) = q.claim_json().unwrap().unwrap();
    assert_eq!((v, c.attempt()), (vec![1, 2], 2));
    c.ack().unwrap();
    assert!(q.recv_timeout(Duration::ZERO).unwrap().is_none());
}

// --- capacity --------------------------------------------------------------------------

#[test]
fn child_process_entry() {
    common::child_main(|role, args| {
        let dir = std::path::PathBuf::from(&args[0]);
        let n: u64 = args[1].parse().unwrap();
        match role {
            "bounded_producer" => {
                let q = QueueOptions::new().capacity(CAPACITY).open(&dir).unwrap();
                for i in 0..n {
                    q.send(i.to_string()).unwrap();
                }
                common::say("sent");
            }
            "slow_consumer" => {
                let q = MessageQueue::open(&dir).unwrap();
                common::say("ready");
                for i in 0..n {
                    let m = q.recv_timeout(common::PATIENCE).unwrap().unwrap();
                    assert_eq!(m.to_str().unwrap(), i.to_string());
                    // A consumer about ten times slower than the producer.
                    std::thread::sleep(Duration::from_micros(50));
                }
                common::say("received");
            }
            other => panic!("unknown role {other}"),
        }
    });
}

const CAPACITY: u64 = 1000;

#[test]
fn try_send_reports_a_full_queue() {
    let d = common::tempdir();
    let q = QueueOptions::new().capacity(3).open(d.path()).unwrap();
    assert_eq!(q.send_all(["a", "b"]).unwrap(), 2);
    let c = q.try_claim().unwrap().unwrap();
    assert!(q.try_send("c").unwrap());
    assert!(
        !q.try_send("d").unwrap(),
        "a claimed message holds its place"
    );
    assert!(!q.send_timeout("d", Duration::from_millis(20)).unwrap());
    c.ack().unwrap();
    assert!(q.try_send("d").unwrap());
    assert!(QueueOptions::new().capacity(0).open(d.path()).is_err());
}

#[test]
fn a_fast_producer_never_holds_more_than_the_capacity() {
    let d = common::tempdir();
    let dir = d.path().to_str().unwrap();
    let n = 10_000u64;
    let q = QueueOptions::new()
        .capacity(CAPACITY)
        .open(d.path())
        .unwrap();
    let mut consumer = common::Proc::spawn("slow_consumer", &[dir, &n.to_string()]);
    consumer.expect("ready");
    let mut producer = common::Proc::spawn("bounded_producer", &[dir, &n.to_string()]);
    // Stop the consumer once the queue filled up: the producer must stop at the
    // capacity exactly, and a send finds the queue full.
    common::eventually(common::PATIENCE, "the queue full", || {
        q.count().unwrap() >= CAPACITY - 10
    });
    common::signal(consumer.pid, rustix::process::Signal::STOP);
    // (One less if the consumer was stopped between taking a message and raising
    // `received`: producers then count that message a moment longer.)
    // Blocked: the count stays put (an unblocked producer sends every few microseconds,
    // so a count seen twice 20 ms apart is one it cannot raise).
    common::eventually(common::PATIENCE, "the producer blocked", || {
        let before = q.count().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        before >= CAPACITY - 1 && q.count().unwrap() == before
    });
    assert!(!q.try_send("extra").unwrap());
    assert_eq!(
        producer.line_within(Duration::from_millis(200)),
        None,
        "the producer must wait"
    );
    let held = q.count().unwrap();
    assert!(
        (CAPACITY - 1..=CAPACITY).contains(&held),
        "held {held}, capacity {CAPACITY}"
    );
    common::signal(consumer.pid, rustix::process::Signal::CONT);
    // While both run: `sent` read first, `received` after, so a consumer's progress in
    // between can only make the figure smaller than what the queue held when `sent` was
    // read (no consumer dies here, so `received` is exact).
    let mut most = 0;
    while producer.try_wait().is_none() {
        let sent = q.stats().unwrap().sent;
        let received = q.stats().unwrap().received;
        most = most.max(sent.saturating_sub(received));
        if producer.try_line().is_some() {
            break;
        }
    }
    assert!(most <= CAPACITY, "held {most}");
    eprintln!("at most {most} messages held (capacity {CAPACITY})");
    producer.wait_success();
    consumer.expect("received");
    consumer.wait_success();
    assert_eq!(q.count().unwrap(), 0);
}
