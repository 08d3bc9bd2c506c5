//! Any bytes as the state file of every primitive: opening and operating gives a
//! result or an error, never a panic (hangs are caught by libFuzzer's -timeout).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("m"), data).unwrap();
    if let Ok(m) = fileipc::Mutex::open(p("m")) {
        let _ = m.holder();
        if m.lock_timeout(Duration::from_millis(50)).unwrap_or(false) {
            let _ = m.unlock();
        }
    }
    std::fs::write(p("s"), data).unwrap();
    if let Ok(s) = fileipc::Semaphore::open_existing(p("s")) {
        let _ = s.value();
        if s.try_acquire().unwrap_or(false) {
            let _ = s.release();
        }
    }
    std::fs::create_dir(p("q")).unwrap();
    std::fs::write(p("q").join("control"), data).unwrap();
    if let Ok(q) = fileipc::MessageQueue::open(p("q")) {
        let _ = q.try_recv();
        let _ = q.send("x");
        let _ = q.count();
    }
    std::fs::write(p("app.pid"), data).unwrap();
    if let Ok(mut pf) = fileipc::PidFile::open(p("app.pid")) {
        let _ = pf.read();
        let _ = pf.status();
        let _ = pf.create();
    }
    std::fs::write(p("kv"), data).unwrap();
    if let Ok(kv) = fileipc::SharedData::open(p("kv")) {
        let _ = kv.dump();
        let _ = kv.set("k", &1);
    }
});
