"""Shared helpers of the fileipc Python tests: real child processes, bounded waits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from typing import Callable, List, Optional

import pytest

# Every wait in these tests is bounded by this (a hung test fails, it does not hang).
PATIENCE = 10.0


def eventually(what: str, pred: Callable[[], bool], timeout: float = PATIENCE) -> None:
    """Polls `pred` until it holds; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


class Child:
    """A Python child process running `code` (with `ARGS` = its arguments), its stdout
    read line by line."""

    def __init__(self, code: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys\nARGS = sys.argv[1:]\n" + textwrap.dedent(code), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def line(self) -> str:
        """The next line the child prints (fails if it exits first)."""
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(PATIENCE)
            pytest.fail(f"child exited ({self.proc.returncode}): {self.proc.stderr.read()}")
        return line.strip()

    def expect(self, want: str) -> None:
        got = self.line()
        assert got == want, f"child said {got!r}, expected {want!r}"

    def wait(self) -> int:
        return self.proc.wait(PATIENCE)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(PATIENCE)

    def stderr(self) -> str:
        return self.proc.stderr.read()


@pytest.fixture
def children():
    """Starts `Child`ren and kills whatever is left at the end of the test."""
    started: List[Child] = []

    def start(code: str, *args: str) -> Child:
        c = Child(code, *args)
        started.append(c)
        return c

    yield start
    for c in started:
        c.kill()
        for f in (c.proc.stdin, c.proc.stdout, c.proc.stderr):
            f.close()


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """Runs the `fileipc` binary named by FILEIPC_BIN (set by crates/fileipc-cli/tests/python.rs).
    Without it the test skips, or fails when FILEIPC_REQUIRE_PYTHON_TESTS is set."""
    binary: Optional[str] = os.environ.get("FILEIPC_BIN")
    if not binary:
        if os.environ.get("FILEIPC_REQUIRE_PYTHON_TESTS"):
            pytest.fail("FILEIPC_BIN is not set (the fileipc CLI binary)")
        pytest.skip("FILEIPC_BIN is not set: no CLI interop (run through `cargo test`)")

    def run(*args: str, input: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([binary, *map(str, args)], input=input, capture_output=True,
                           text=True, timeout=PATIENCE)
        if check and r.returncode != 0:
            pytest.fail(f"fileipc {' '.join(map(str, args))}: exit {r.returncode}: {r.stderr}")
        return r

    return run
