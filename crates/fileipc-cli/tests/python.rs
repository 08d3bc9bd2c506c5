//! The Python package's test suite (crates/fileipc-py/tests, pytest), run by
//! `cargo test` against the `fileipc` binary of this build (`FILEIPC_BIN`), with the
//! Python named by `FILEIPC_PYTHON` (one where the package is installed:
//! `pip install ./crates/fileipc-py pytest`, as `.ci/run` does). Without
//! `FILEIPC_PYTHON` the test skips loudly; with `FILEIPC_REQUIRE_PYTHON_TESTS` set
//! (CI) that skip is a failure.

use std::path::Path;
use std::process::Command;

#[test]
fn python_package_suite() {
    let Some(python) = std::env::var_os("FILEIPC_PYTHON") else {
        assert!(
            std::env::var_os("FILEIPC_REQUIRE_PYTHON_TESTS").is_none(),
            "FILEIPC_REQUIRE_PYTHON_TESTS is set but FILEIPC_PYTHON (a Python with the \
             fileipc package and pytest installed) is not"
        );
        eprintln!(
            "SKIPPED python_package_suite: FILEIPC_PYTHON is not set (a Python with \
             `pip install ./crates/fileipc-py pytest`; see .ci/run)"
        );
        return;
    };
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fileipc-py/tests");
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-s"])
        .arg(&tests)
        .env("FILEIPC_BIN", env!("CARGO_BIN_EXE_fileipc"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", Path::new(&python).display()));
    assert!(status.success(), "pytest {}: {status}", tests.display());
}
