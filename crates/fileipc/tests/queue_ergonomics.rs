//! Iterating over a queue and messages as JSON.

mod common;

use std::time::Duration;

use fileipc::{Error, MessageQueue};

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
