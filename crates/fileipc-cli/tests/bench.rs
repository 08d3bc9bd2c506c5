//! `fileipc bench all --quick --json` (and with `--redis`, `--load`, `--repeat`) completes
//! and prints only well-formed result lines; load processes are gone afterwards.
//! (The figures themselves are never asserted: speed is not a test outcome.) Built
//! without the `bench` feature, `fileipc bench` refuses with a usage error instead.

use std::process::Command;

/// Held by each test while its benchmark runs: two benchmarks at once (one of them with a
/// busy load process) would starve each other's time-capped loops on a small machine.
#[cfg(feature = "bench")]
static ONE_BENCH_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(feature = "bench")]
fn one_bench_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_BENCH_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fields every result line carries.
#[cfg(feature = "bench")]
const FIELDS: [&str; 17] = [
    "bench",
    "unit",
    "ours",
    "baseline",
    "baseline_value",
    "ratio",
    "goal",
    "met",
    "cpu_ours_ns",
    "cpu_baseline_ns",
    "load",
    "load_busy",
    "run",
    "summary",
    "ratio_min",
    "ratio_max",
    "runs",
];

/// Runs `fileipc bench ARGS... --dir DIR` in a fresh directory named after `test`; returns
/// its status, stdout and stderr, and the directory's path (already removed).
#[cfg(feature = "bench")]
fn bench(test: &str, args: &[&str]) -> (std::process::ExitStatus, String, String, String) {
    let dir = std::env::temp_dir().join(format!("fileipc-cli-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .arg("bench")
        .args(args)
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("running fileipc bench");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status, stdout, stderr, dir.display().to_string())
}

/// The JSON lines of `stdout`, keyed "BENCH vs BASELINE" (per-run lines of the last run
/// and, separately, summary lines), every line checked for the common fields.
#[cfg(feature = "bench")]
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            for f in FIELDS {
                assert!(v.get(f).is_some(), "missing {f:?} in {line}");
            }
            v
        })
        .collect()
}

#[cfg(feature = "bench")]
fn key(v: &serde_json::Value) -> String {
    format!(
        "{} vs {}",
        v["bench"].as_str().unwrap_or_default(),
        v["baseline"].as_str().unwrap_or_default()
    )
}

/// Processes whose command line mentions `needle` (the run directory of a test's bench,
/// which only that bench's processes carry); each found is killed, so a failing test
/// leaves no busy loop behind.
#[cfg(feature = "bench")]
fn kill_processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            let pid = e.file_name().to_string_lossy().into_owned();
            let _ = Command::new("kill").args(["-9", &pid]).status();
            found.push(format!("{pid}: {cmd}"));
        }
    }
    found
}

#[cfg(feature = "bench")]
#[test]
fn quick_bench_prints_json_lines() {
    let _serial = one_bench_at_a_time();
    let dir = std::env::temp_dir().join(format!("fileipc-cli-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(["bench", "all", "--quick", "--json", "--dir"])
        .arg(&dir)
        .output()
        .expect("running fileipc bench");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fileipc bench failed: {}\nstderr:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(!lines.is_empty(), "no result line; stderr:\n{stderr}");
    let mut benches = std::collections::BTreeSet::new();
    let mut lines_by_key = std::collections::BTreeMap::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        for f in FIELDS {
            assert!(obj.contains_key(f), "missing {f:?} in {line}");
        }
        assert!(
            obj["bench"].is_string() && obj["unit"].is_string(),
            "{line}"
        );
        assert!(obj["baseline"].is_string(), "{line}");
        for f in ["ours", "baseline_value", "ratio"] {
            assert!(obj[f].is_number() || obj[f].is_null(), "{f} in {line}");
        }
        assert!(obj["goal"].is_string() || obj["goal"].is_null(), "{line}");
        assert!(obj["met"].is_boolean() || obj["met"].is_null(), "{line}");
        assert_eq!(obj["load"], 0, "{line}");
        assert!(obj["load_busy"].is_null(), "{line}");
        assert_eq!(obj["run"], 1, "{line}");
        assert_eq!(obj["summary"], false, "{line}");
        benches.insert(obj["bench"].as_str().unwrap_or_default().to_owned());
        lines_by_key.insert(key(&v), v.clone());
    }
    // The lines of issue 18, with their goals and the CPU per operation of both sides.
    for (want, goal) in [
        ("mutex.uncontended vs pthread_robust", "<= 2"),
        ("mutex.contended4 vs pthread_robust", ""),
        ("mutex.contended4 vs flock", ">= 0.5"),
        ("mutex.contended4.fairness vs flock", ">= 0.8"),
        ("mutex.contended4.wait_max vs flock", "<= 1"),
        ("queue.1p1c.4KiB vs posix_mq", ">= 1.5"),
        ("queue.4p4c.4KiB vs pipe", ">= 1"),
        ("queue.1p1c.64KiB vs posix_mq", ">= 1"),
        ("queue.1p1c.64KiB vs pipe", ">= 1"),
        ("queue.4p4c.64KiB vs pipe+flock", ">= 1"),
        ("queue.4p4c.64KiB vs posix_mq", ">= 1"),
        ("queue.4p4c.64B vs ours:queue.1p1c.64B", ">= 1.2"),
        ("semaphore.uncontended vs posix_sem", "<= 4"),
        ("kv.incr4 vs sqlite", ">= 2.5"),
        ("kv.incr4.p99 vs sqlite", "<= 1 ms"),
    ] {
        // POSIX mq carries 64 KiB in parts, with locks in 4P/4C, unless msgsize_max allows
        // 64 KiB messages.
        let want = match want {
            "queue.4p4c.64KiB vs posix_mq" if !lines_by_key.contains_key(want) => {
                "queue.4p4c.64KiB vs posix_mq+flock"
            }
            w => w,
        };
        let v = lines_by_key
            .get(want)
            .unwrap_or_else(|| panic!("no line {want:?} in {:?}", lines_by_key.keys()));
        if goal.is_empty() {
            assert!(v["goal"].is_null(), "{v}");
        } else {
            assert_eq!(v["goal"], goal, "{v}");
            assert!(v["met"].is_boolean(), "{v}");
        }
        if !want.contains(".fairness") && !want.contains(".wait_") && !want.contains(".p99") {
            assert!(v["cpu_ours_ns"].as_f64().is_some_and(|x| x > 0.0), "{v}");
            assert!(
                v["cpu_baseline_ns"].as_f64().is_some_and(|x| x > 0.0),
                "{v}"
            );
        }
    }
    // Every family of workloads reported something.
    for family in ["queue.", "mutex.", "semaphore.", "kv.", "event."] {
        assert!(
            benches.iter().any(|b| b.starts_with(family)),
            "no {family}* line in {benches:?}"
        );
    }
}

/// `--load 1 --repeat 2`: the load process ran beside the contenders (it got CPU, the share
/// is on every line), the goals decided are those of a loaded machine, each run's lines
/// carry their run number, summary lines give the median and range of the runs' ratios;
/// afterwards no load process is left.
#[cfg(feature = "bench")]
#[test]
fn quick_bench_under_load_repeated() {
    let _serial = one_bench_at_a_time();
    let (status, stdout, stderr, dir) = bench(
        "bench-load",
        &["kv", "--quick", "--json", "--load", "1", "--repeat", "2"],
    );
    assert!(
        status.success(),
        "fileipc bench failed: {status}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("load: 1 CPU-bound processes"),
        "stderr:\n{stderr}"
    );
    let left = kill_processes_mentioning(&dir);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let lines = json_lines(&stdout);
    let (summaries, per_run): (Vec<_>, Vec<_>) = lines.iter().partition(|v| v["summary"] == true);
    assert!(!summaries.is_empty(), "no summary line in\n{stdout}");
    assert_eq!(per_run.len(), 2 * summaries.len(), "{stdout}");
    for v in &lines {
        assert_eq!(v["load"], 1, "{v}");
        assert!(v["load_busy"].as_f64().is_some_and(|b| b > 0.0), "{v}");
    }
    let run_numbers: std::collections::BTreeSet<u64> =
        per_run.iter().filter_map(|v| v["run"].as_u64()).collect();
    assert_eq!(run_numbers, [1, 2].into(), "{stdout}");
    for v in &per_run {
        match key(v).as_str() {
            "kv.incr4 vs sqlite" => {
                assert_eq!(v["goal"], ">= 1.5 under load", "{v}");
                assert!(v["met"].is_boolean(), "{v}");
            }
            // A goal of a quiet machine only.
            "kv.incr4.p99 vs sqlite" => assert!(v["goal"].is_null(), "{v}"),
            _ => {}
        }
    }
    for v in &summaries {
        assert!(v["run"].is_null(), "{v}");
        assert_eq!(v["runs"], 2, "{v}");
        let (lo, mid, hi) = (
            v["ratio_min"].as_f64(),
            v["ratio"].as_f64(),
            v["ratio_max"].as_f64(),
        );
        let (lo, mid, hi) = (lo.unwrap(), mid.unwrap(), hi.unwrap());
        assert!(lo <= mid && mid <= hi, "{v}");
        if key(v) == "kv.incr4 vs sqlite" {
            assert_eq!(v["goal"], ">= 1.5 under load", "{v}");
            assert!(v["met"].is_boolean(), "{v}");
        }
    }
    assert!(
        summaries.iter().any(|v| key(v) == "kv.incr4 vs sqlite"),
        "{stdout}"
    );
}

/// Whether `redis-server` can run here; if not, says so loudly, and fails when
/// `FILEIPC_REQUIRE_REDIS_TESTS` is set (as CI does).
#[cfg(feature = "bench")]
fn redis_server_available(test: &str) -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("FILEIPC_REQUIRE_REDIS_TESTS").is_none(),
            "{test} could not run (no redis-server), and FILEIPC_REQUIRE_REDIS_TESTS is set"
        );
        eprintln!("SKIPPED {test}: no redis-server; install it: apt-get install redis-server");
    }
    found
}

/// `fileipc bench --redis --quick --json` starts its own redis-server and prints a line
/// per Redis workload beside its redis-rs baseline, with the two goals of the Redis
/// engine decided (met true or false, never missing).
#[cfg(feature = "bench")]
#[test]
fn quick_redis_bench_prints_json_lines() {
    if !redis_server_available("quick_redis_bench_prints_json_lines") {
        return;
    }
    let _serial = one_bench_at_a_time();
    let dir = std::env::temp_dir().join(format!("fileipc-cli-rbench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(["bench", "--quick", "--json", "--dir"])
        .arg(&dir)
        .arg("--redis")
        .output()
        .expect("running fileipc bench --redis");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fileipc bench --redis failed: {}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stderr.contains("redis: private redis-server"), "{stderr}");
    let mut lines = std::collections::BTreeMap::new();
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for f in FIELDS {
            assert!(v.get(f).is_some(), "missing {f:?} in {line}");
        }
        assert_eq!(v["fs"], "redis", "{line}");
        let key = format!(
            "{} vs {}",
            v["bench"].as_str().unwrap(),
            v["baseline"].as_str().unwrap()
        );
        lines.insert(key, v);
    }
    for want in [
        "redis.mutex.uncontended vs redis_set_nx_px+lua",
        "redis.queue.1p1c.64B vs redis_lpush_brpop",
        "redis.semaphore.uncontended vs redis_incr_script+decr",
        "redis.kv.incr4 vs redis_hincrby",
        "redis.event.wake vs redis_pubsub",
    ] {
        let v = lines
            .get(want)
            .unwrap_or_else(|| panic!("no line {want:?} in {:?}", lines.keys()));
        assert!(
            v["ours"].is_number() && v["baseline_value"].is_number(),
            "{v}"
        );
        assert!(v["ratio"].is_number(), "{v}");
    }
    for (want, goal) in [
        ("redis.mutex.uncontended vs redis_set_nx_px+lua", "<= 1.5"),
        ("redis.queue.1p1c.64B vs redis_lpush_brpop", ">= 1/1.5"),
    ] {
        assert_eq!(lines[want]["goal"], goal, "{want}");
        assert!(lines[want]["met"].is_boolean(), "{want}: {}", lines[want]);
    }
}

/// `--redis` takes a server URL; a workload name after it is refused with a hint.
#[cfg(feature = "bench")]
#[test]
fn redis_bench_refuses_what_is_not_a_url() {
    let out = Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(["bench", "--quick", "--redis", "mutex"])
        .output()
        .expect("running fileipc bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stderr:\n{stderr}");
    assert!(stderr.contains("not a Redis URL"), "stderr:\n{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(["bench", "--quick", "--redis", "redis://127.0.0.1:6379/jobs"])
        .output()
        .expect("running fileipc bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stderr:\n{stderr}");
    assert!(
        stderr.contains("the benchmark chooses the names"),
        "stderr:\n{stderr}"
    );
}

#[cfg(not(feature = "bench"))]
#[test]
fn bench_without_the_feature_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(["bench", "all", "--quick", "--json"])
        .output()
        .expect("running fileipc bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("without benchmarks"), "stderr:\n{stderr}");
    assert!(out.stdout.is_empty());
}
