//! The CLI's shell conventions, through the real binary: waits without limit unless
//! `--timeout` (a bare number is seconds), `--mode` on every creating command, `kv get
//! --raw` and `kv set KEY -`, and `queue send/recv` with `-0` and `--framed` so that any
//! bytes round-trip, with a too-large message refused saying how many were sent.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fileipc::{DEFAULT_MAX_MESSAGE_SIZE, Event, MessageQueue, QueueOptions, SharedData};

const PATIENCE: Duration = Duration::from_secs(30);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fileipc"))
}

fn fileipc(args: &[&str]) -> Output {
    bin().args(args).stdin(Stdio::null()).output().unwrap()
}

fn fileipc_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from a thread: the command may stop reading (and exit) before the end.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> Vec<u8> {
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    o.stdout
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fileipc-shell-")
        .tempdir()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(start.elapsed() < PATIENCE, "child still running");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn waits_have_no_limit_unless_timeout_is_given() {
    let d = tmp();
    let ev = d.path().join("ready");
    let q = d.path().join("q");
    let mut waiter = bin().args(["event", "wait", s(&ev)]).spawn().unwrap();
    let mut receiver = bin()
        .args(["queue", "recv", s(&q)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // What is measured is that nothing ends: both must outlive the library's default
    // timeout (5 s), which the CLI used to apply.
    let until = Instant::now() + fileipc::DEFAULT_TIMEOUT + Duration::from_secs(1);
    while Instant::now() < until {
        assert!(waiter.try_wait().unwrap().is_none(), "event wait gave up");
        assert!(receiver.try_wait().unwrap().is_none(), "queue recv gave up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Event::open(&ev).unwrap().set().unwrap();
    MessageQueue::open(&q).unwrap().send("late").unwrap();
    assert!(wait_exit(&mut waiter).success());
    assert!(wait_exit(&mut receiver).success());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut receiver.stdout.take().unwrap(), &mut text).unwrap();
    assert_eq!(text, "late\n");
}

#[test]
fn a_bare_timeout_is_seconds_and_units_combine() {
    let d = tmp();
    let ev = d.path().join("ev");
    let start = Instant::now();
    let o = fileipc(&["event", "wait", s(&ev), "--timeout", "1"]);
    let took = start.elapsed();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        took >= Duration::from_secs(1),
        "--timeout 1 gave up after {took:?}"
    );
    let o = fileipc(&["queue", "recv", s(&d.path().join("q")), "-t", "300ms"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));

    Event::open(&ev).unwrap().set().unwrap();
    for t in ["1h30m", "2m30s", "1.5s", "250ms", "0"] {
        assert_eq!(
            code(&fileipc(&["event", "wait", s(&ev), "--timeout", t])),
            0,
            "{t}"
        );
    }
    // `--forever` stays accepted: it is the default.
    assert_eq!(code(&fileipc(&["event", "wait", s(&ev), "--forever"])), 0);
    for bad in ["1m30", "5 parsecs", "-1", "soon"] {
        let o = fileipc(&["event", "wait", s(&ev), "--timeout", bad]);
        assert_eq!(code(&o), 2, "{bad}: {}", stderr(&o));
    }
}

#[test]
fn help_texts_state_the_defaults() {
    for sub in [
        &["event", "wait"][..],
        &["queue", "recv"],
        &["sem", "acquire"],
        &["sem", "run"],
        &["mutex", "run"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let text = String::from_utf8(ok(fileipc(&args))).unwrap();
        assert!(
            text.contains("default: wait without limit"),
            "{sub:?}:\n{text}"
        );
    }
    for sub in [
        &["queue", "send"][..],
        &["queue", "recv"],
        &["sem", "acquire"],
        &["sem", "release"],
        &["sem", "run"],
        &["mutex", "run"],
        &["kv", "set"],
        &["kv", "incr"],
        &["pidfile", "run"],
        &["event", "set"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let text = String::from_utf8(ok(fileipc(&args))).unwrap();
        assert!(
            text.contains("--mode") && text.contains("default 600"),
            "{sub:?}:\n{text}"
        );
    }
}

#[test]
fn mode_applies_to_what_each_creating_command_creates() {
    let d = tmp();
    let p = |name: &str| d.path().join(name);

    ok(fileipc(&[
        "queue",
        "send",
        s(&p("q")),
        "--mode",
        "660",
        "x",
    ]));
    assert_eq!(mode_of(&p("q").join("control")), 0o660);
    assert_eq!(mode_of(&p("q")), 0o770);
    let q2 = p("q2");
    let empty = fileipc(&["queue", "recv", s(&q2), "--mode", "0640", "-t", "0"]);
    assert_eq!(code(&empty), 1, "{}", stderr(&empty));
    assert_eq!(mode_of(&q2.join("control")), 0o640);

    ok(fileipc(&["sem", "acquire", s(&p("sem")), "--mode", "660"]));
    assert_eq!(mode_of(&p("sem")), 0o660);
    ok(fileipc(&["sem", "release", s(&p("sem2")), "--mode", "640"]));
    assert_eq!(mode_of(&p("sem2")), 0o640);
    ok(fileipc(&[
        "sem",
        "run",
        s(&p("sem3")),
        "--mode",
        "664",
        "--",
        "true",
    ]));
    assert_eq!(mode_of(&p("sem3")), 0o664);
    ok(fileipc(&[
        "mutex",
        "run",
        s(&p("m")),
        "--mode",
        "660",
        "--",
        "true",
    ]));
    assert_eq!(mode_of(&p("m")), 0o660);
    ok(fileipc(&[
        "kv",
        "set",
        s(&p("kv")),
        "k",
        "1",
        "--mode",
        "660",
    ]));
    assert_eq!(mode_of(&p("kv")), 0o660);
    ok(fileipc(&[
        "kv",
        "incr",
        s(&p("kv2")),
        "k",
        "--mode",
        "640",
        "--durable",
    ]));
    assert_eq!(mode_of(&p("kv2")), 0o640);
    ok(fileipc(&["event", "set", s(&p("ev")), "--mode", "644"]));
    assert_eq!(mode_of(&p("ev")), 0o644);
    // The PID file exists while the command runs: the command reports its mode.
    let pid = p("pid");
    let out = ok(fileipc(&[
        "pidfile",
        "run",
        s(&pid),
        "--mode",
        "644",
        "--",
        "stat",
        "-c",
        "%a",
        s(&pid),
    ]));
    assert_eq!(String::from_utf8(out).unwrap(), "644\n");

    for bad in ["888", "1777", "rw-r--r--", ""] {
        let o = fileipc(&["event", "set", s(&p("ev2")), "--mode", bad]);
        assert_eq!(code(&o), 2, "{bad:?}: {}", stderr(&o));
        assert!(!p("ev2").exists());
    }
}

/// Every byte value, NUL and newline included, and the empty message.
fn awkward_messages() -> Vec<Vec<u8>> {
    vec![
        b"plain".to_vec(),
        Vec::new(),
        b"\0".to_vec(),
        b"line one\nline two\n".to_vec(),
        b"crlf\r\n".to_vec(),
        (0..=255u8).collect(),
        vec![0xff; 100_000],
    ]
}

fn framed(msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

#[test]
fn framed_messages_round_trip_any_bytes() {
    let d = tmp();
    let q = d.path().join("q");
    let msgs = awkward_messages();
    ok(fileipc_stdin(
        &["queue", "send", s(&q), "--framed", "--durable"],
        &framed(&msgs),
    ));
    // The library sees the same messages...
    let lib = MessageQueue::open(&q).unwrap();
    assert_eq!(lib.count().unwrap(), msgs.len() as u64);
    let first = lib.recv_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!(&first[..], &msgs[0][..]);
    lib.send(&msgs[0]).unwrap();
    // ...and `recv --framed` gives back exactly what was sent (the first one last now).
    let out = ok(fileipc(&["queue", "recv", s(&q), "--all", "--framed"]));
    let mut expected = msgs[1..].to_vec();
    expected.push(msgs[0].clone());
    assert_eq!(out, framed(&expected));
}

#[test]
fn nul_separated_messages_round_trip_newlines() {
    let d = tmp();
    let q = d.path().join("q");
    let msgs: Vec<Vec<u8>> = awkward_messages()
        .into_iter()
        .filter(|m| !m.contains(&0))
        .collect();
    let mut input = Vec::new();
    for m in &msgs {
        input.extend_from_slice(m);
        input.push(0);
    }
    ok(fileipc_stdin(&["queue", "send", s(&q), "-0"], &input));
    let lib = MessageQueue::open(&q).unwrap();
    assert_eq!(lib.count().unwrap(), msgs.len() as u64);
    let out = ok(fileipc(&["queue", "recv", s(&q), "--all", "--null"]));
    assert_eq!(out, input);
    // Without the last terminator, the last message still counts.
    ok(fileipc_stdin(&["queue", "send", s(&q), "-0"], b"a\nb\0c"));
    let out = ok(fileipc(&["queue", "recv", s(&q), "-n", "2", "-0"]));
    assert_eq!(out, b"a\nb\0c\0");
}

#[test]
fn a_too_large_message_is_refused_saying_how_many_were_sent() {
    let d = tmp();
    let q = d.path().join("q");
    let mut input = b"one\ntwo\n".to_vec();
    input.resize(input.len() + DEFAULT_MAX_MESSAGE_SIZE + 1, b'x');
    input.extend_from_slice(b"\nthree\n");
    let o = fileipc_stdin(&["queue", "send", s(&q)], &input);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("message 3 of standard input not sent; the 2 before it were"),
        "{err}"
    );
    let lib = QueueOptions::new().open(&q).unwrap();
    assert_eq!(
        lib.count().unwrap(),
        2,
        "the messages before it, and only those"
    );
    assert_eq!(&lib.try_recv().unwrap().unwrap()[..], b"one");
    assert_eq!(&lib.try_recv().unwrap().unwrap()[..], b"two");

    // A frame's length is checked before its bytes are read: nothing follows it here.
    let mut input = framed(&[b"ok".to_vec()]);
    input.extend_from_slice(&(DEFAULT_MAX_MESSAGE_SIZE as u32 + 1).to_be_bytes());
    let o = fileipc_stdin(&["queue", "send", s(&q), "--framed"], &input);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the 1 before it were"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("bytes, more than a queue message may be"),
        "{}",
        stderr(&o)
    );
    // A frame cut short is an error too, after the complete ones.
    let mut input = framed(&[b"ok".to_vec()]);
    input.extend_from_slice(&[0, 0, 0, 9, b'x']);
    let o = fileipc_stdin(&["queue", "send", s(&q), "--framed"], &input);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ended inside a frame"),
        "{}",
        stderr(&o)
    );
    assert_eq!(lib.count().unwrap(), 2);
}

#[test]
fn kv_raw_values_and_values_from_stdin() {
    let d = tmp();
    let kv = d.path().join("kv");
    let text = "line 1\n\"quoted\" \\ tab\t\n";
    ok(fileipc_stdin(
        &["kv", "set", s(&kv), "motd", "--raw", "-"],
        text.as_bytes(),
    ));
    let lib = SharedData::open(&kv).unwrap();
    assert_eq!(lib.get::<String>("motd").unwrap().unwrap(), text);
    let raw = ok(fileipc(&["kv", "get", s(&kv), "motd", "--raw"]));
    assert_eq!(String::from_utf8(raw).unwrap(), format!("{text}\n"));
    let json = ok(fileipc(&["kv", "get", s(&kv), "motd"]));
    let v: String = serde_json::from_slice(&json).unwrap();
    assert_eq!(v, text);

    ok(fileipc(&[
        "kv",
        "set",
        s(&kv),
        "word",
        "--raw",
        "no quotes needed",
    ]));
    assert_eq!(
        ok(fileipc(&["kv", "get", s(&kv), "word", "--raw"])),
        b"no quotes needed\n"
    );

    ok(fileipc_stdin(
        &["kv", "set", s(&kv), "config", "-"],
        b"{\"workers\": 4, \"name\": \"x\"}\n",
    ));
    let v: serde_json::Value = lib.get("config").unwrap().unwrap();
    assert_eq!(v, serde_json::json!({"workers": 4, "name": "x"}));
    // A value that is not a string prints as JSON with --raw too.
    assert_eq!(
        ok(fileipc(&["kv", "get", s(&kv), "config", "--raw"])),
        b"{\"name\":\"x\",\"workers\":4}\n"
    );

    let o = fileipc_stdin(&["kv", "set", s(&kv), "bin", "--raw", "-"], b"\xff\xfe");
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = fileipc_stdin(&["kv", "set", s(&kv), "bad", "-"], b"not json");
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(lib.get::<String>("bin").unwrap(), None);
}
