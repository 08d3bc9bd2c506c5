//! `fileipc bench all --quick --json` (and with `--redis`) completes and prints only
//! well-formed result lines.
//! (The figures themselves are never asserted: speed is not a test outcome.) Built
//! without the `bench` feature, `fileipc bench` refuses with a usage error instead.

use std::process::Command;

/// The fields every result line carries.
#[cfg(feature = "bench")]
const FIELDS: [&str; 8] = [
    "bench",
    "unit",
    "ours",
    "baseline",
    "baseline_value",
    "ratio",
    "goal",
    "met",
];

#[cfg(feature = "bench")]
#[test]
fn quick_bench_prints_json_lines() {
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
        benches.insert(obj["bench"].as_str().unwrap_or_default().to_owned());
    }
    // Every family of workloads reported something.
    for family in ["queue.", "mutex.", "semaphore.", "kv.", "event."] {
        assert!(
            benches.iter().any(|b| b.starts_with(family)),
            "no {family}* line in {benches:?}"
        );
    }
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
