//! `fileipc queue recv` loses nothing when its output fails, `queue claim -- CMD` acks or
//! gives back by the command's exit status, `queue dead` lists and drains dead letters:
//! each through the real binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use fileipc::MessageQueue;

const BIN: &str = env!("CARGO_BIN_EXE_fileipc");

fn fileipc(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn shell(script: &str) -> Output {
    Command::new("sh")
        .args(["-c", script])
        .env("FILEIPC", BIN)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fileipc-cli-")
        .tempdir()
        .unwrap()
}

#[test]
fn recv_all_into_head_takes_only_what_head_read() {
    let d = tmp();
    let q = d.path().join("q");
    let qs = q.to_str().unwrap();
    let mut send = Command::new(BIN)
        .args(["queue", "send", qs])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = send.stdin.take().unwrap();
        for i in 1..=100_000 {
            writeln!(input, "{i}").unwrap();
        }
    }
    assert!(send.wait().unwrap().success());
    let out = ok(shell(&format!(
        "\"$FILEIPC\" queue recv '{qs}' --all | head -n 1"
    )));
    assert_eq!(out, "1\n");
    let q = MessageQueue::open(&q).unwrap();
    assert_eq!(q.count().unwrap(), 99_999);
    let next = q.try_claim().unwrap().unwrap();
    assert_eq!(next.bytes(), b"2", "given back first, in order");
}

#[test]
fn recv_into_a_full_device_loses_nothing() {
    let d = tmp();
    let qs = d.path().to_str().unwrap();
    ok(fileipc(&["queue", "send", qs, "a", "b", "c"]));
    let o = shell(&format!("\"$FILEIPC\" queue recv '{qs}' -n 3 > /dev/full"));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No space left"),
        "{o:?}"
    );
    assert_eq!(ok(fileipc(&["queue", "count", qs])), "3\n");
    assert_eq!(ok(fileipc(&["queue", "recv", qs, "-n", "3"])), "a\nb\nc\n");
}

#[test]
fn claim_runs_the_command_and_acks_or_gives_back_by_its_status() {
    let d = tmp();
    let qs = d.path().to_str().unwrap();
    ok(fileipc(&["queue", "send", qs, "good", "bad"]));
    let script = "read m; echo \"$m $FILEIPC_ATTEMPT\"; [ \"$m\" = good ]";
    let o = ok(fileipc(&["queue", "claim", qs, "--", "sh", "-c", script]));
    assert_eq!(o, "good 1\n");
    for attempt in 1..=2 {
        let o = fileipc(&[
            "queue",
            "claim",
            qs,
            "--max-deliveries",
            "2",
            "--",
            "sh",
            "-c",
            script,
        ]);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("bad {attempt}\n")
        );
    }
    // Two failed deliveries: a dead letter now, not delivered again.
    let o = fileipc(&["queue", "claim", qs, "--timeout", "0", "--", "cat"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stdout.is_empty());
    assert_eq!(ok(fileipc(&["queue", "count", qs])), "0\n");
    assert_eq!(ok(fileipc(&["queue", "dead", qs])), "2\tbad\n");
    assert_eq!(
        ok(fileipc(&["queue", "dead", qs])),
        "2\tbad\n",
        "listing keeps"
    );
    assert_eq!(ok(fileipc(&["queue", "dead", qs, "--drain"])), "2\tbad\n");
    assert_eq!(ok(fileipc(&["queue", "dead", qs])), "");
}

#[test]
fn stat_shows_ready_and_in_flight() {
    let d = tmp();
    let qs = d.path().to_str().unwrap();
    let q = MessageQueue::open(d.path()).unwrap();
    q.send_all(["a", "b"]).unwrap();
    let held = q.try_claim().unwrap().unwrap();
    let out = ok(fileipc(&["stat", qs, "--json"]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (&v["count"], &v["ready"], &v["in_flight"]),
        (&2.into(), &1.into(), &1.into()),
        "{v}"
    );
    held.ack().unwrap();
}
