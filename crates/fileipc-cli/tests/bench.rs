//! `fileipc bench all --quick --json` completes and prints only well-formed result lines.
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
