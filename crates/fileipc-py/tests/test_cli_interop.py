"""The Python package and the `fileipc` CLI (a Rust process) on the same paths."""

from __future__ import annotations

import json
import subprocess

import fileipc
from conftest import PATIENCE


def test_queue(tmp_path, cli):
    path = tmp_path / "q"
    q = fileipc.MessageQueue(path)
    q.send("from python")
    assert cli("queue", "recv", path, "--timeout", "2s").stdout == "from python\n"
    cli("queue", "send", path, "from the cli")
    assert q.recv(timeout=PATIENCE) == b"from the cli"
    q.send("a")
    q.send("b")
    assert cli("queue", "count", path).stdout.strip() == "2"
    q.clear()
    assert cli("queue", "recv", path, "--timeout", "0", check=False).returncode == 1


def test_mutex(tmp_path, cli):
    path = tmp_path / "m"
    m = fileipc.Mutex(path)
    assert m.lock()
    assert cli("mutex", "status", path).returncode == 0
    assert cli("mutex", "run", path, "--timeout", "50ms", "--", "true", check=False).returncode == 1
    m.unlock()
    assert cli("mutex", "status", path, check=False).returncode == 1
    # The CLI holds the lock while its command runs: Python sees it held.
    r = cli("mutex", "run", path, "--timeout", "2s", "--", "sh", "-c",
            "python3 -c 'import sys' 2>/dev/null; echo held")
    assert r.stdout == "held\n"
    assert m.try_lock()
    m.unlock()


def test_mutex_held_by_cli_excludes_python(tmp_path, cli):
    import os
    import sys
    path = tmp_path / "m"
    binary = os.environ["FILEIPC_BIN"]
    # `mutex run` holds the lock while its command (reading stdin) runs.
    p = subprocess.Popen([binary, "mutex", "run", str(path), "--forever", "--",
                          "sh", "-c", "echo held; read x"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "held\n"
        m = fileipc.Mutex(path)
        assert not m.try_lock()
        p.stdin.write("go\n")
        p.stdin.flush()
        assert m.lock(timeout=PATIENCE)
        m.unlock()
    finally:
        p.kill()
        p.wait(PATIENCE)


def test_store(tmp_path, cli):
    path = tmp_path / "kv"
    d = fileipc.SharedData(path)
    d["cfg"] = {"a": [1, 2], "b": None}
    assert json.loads(cli("kv", "get", path, "cfg").stdout) == {"a": [1, 2], "b": None}
    cli("kv", "set", path, "x", '{"from": "cli", "n": 1.5}')
    assert d["x"] == {"from": "cli", "n": 1.5}
    for _ in range(3):
        cli("kv", "incr", path, "hits")
    assert d.increment("hits") == 4
    assert cli("kv", "incr", path, "hits", "10").stdout.strip() == "14"
    assert json.loads(cli("kv", "dump", path).stdout) == d.to_dict()


def test_semaphore_and_event(tmp_path, cli):
    s = fileipc.Semaphore(tmp_path / "s", 3)
    assert s.acquire()
    assert cli("sem", "value", tmp_path / "s").stdout.strip() == "2"
    s.release()
    e = fileipc.Event(tmp_path / "e")
    cli("event", "set", tmp_path / "e")
    assert e.is_set() and e.wait(timeout=0)
    e.clear()
    assert cli("event", "status", tmp_path / "e", check=False).returncode == 1
