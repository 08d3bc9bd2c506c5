"""SharedData as a MutableMapping of JSON values, and its atomic updates across processes."""

from __future__ import annotations

import collections.abc
import math
import pickle

import pytest

import fileipc


def test_mapping(tmp_path):
    d = fileipc.SharedData(tmp_path / "s")
    assert isinstance(d, collections.abc.MutableMapping)
    assert len(d) == 0 and dict(d) == {}
    value = {"a": [1, 2.5, None, True, "x"], "b": {"c": -(2**63)}, "big": 2**64 - 1}
    d["k"] = value
    d["t"] = (1, 2)
    assert d["k"] == value
    assert d["t"] == [1, 2]
    assert d.get("missing") is None and d.get("missing", 7) == 7
    assert "k" in d and "missing" not in d and 3 not in d
    assert sorted(d) == ["k", "t"] and len(d) == 2
    assert d.to_dict() == {"k": value, "t": [1, 2]}
    del d["t"]
    with pytest.raises(KeyError):
        del d["t"]
    with pytest.raises(KeyError):
        d["t"]
    d.update({"x": 1}, y=2)
    d.setdefault("z", 3)
    assert d.pop("z") == 3
    assert {k: d[k] for k in ("x", "y")} == {"x": 1, "y": 2}
    x = 0.1 + 0.2
    d["f"] = x
    assert d["f"] == x  # floats round-trip exactly
    d.clear()
    assert len(d) == 0


@pytest.mark.parametrize("bad, exc", [
    (float("nan"), ValueError), (math.inf, ValueError), (2**64, ValueError),
    (object(), TypeError), ({1: 2}, TypeError), ({"s"}, TypeError),
])
def test_refuses_what_json_cannot_hold(tmp_path, bad, exc):
    d = fileipc.SharedData(tmp_path / "s")
    with pytest.raises(exc):
        d["k"] = bad
    assert "k" not in d


def test_recursive_value_is_refused(tmp_path):
    d = fileipc.SharedData(tmp_path / "s")
    a = []
    a.append(a)
    with pytest.raises(ValueError):
        d["k"] = a


def test_increment_update_compare_and_swap(tmp_path):
    d = fileipc.SharedData(tmp_path / "s")
    assert d.increment("n") == 1 and d.increment("n", 10) == 11
    d["s"] = "text"
    with pytest.raises(fileipc.DataError) as e:
        d.increment("s")
    assert e.value.key == "s" and e.value.path == str(tmp_path / "s")
    assert d.update("list", lambda v: (v or []) + ["a"]) == ["a"]
    assert d.update("list", lambda v: v + ["b"]) == ["a", "b"]

    def boom(v):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        d.update("list", boom)
    assert d["list"] == ["a", "b"]
    assert d.update("list", lambda v: None) is None
    assert "list" not in d
    assert d.compare_and_swap("st", None, "idle")
    assert not d.compare_and_swap("st", None, "idle")
    assert d.compare_and_swap("st", "idle", "running")
    assert not d.compare_and_swap("st", "idle", "x")
    assert d["st"] == "running"


def test_pickles_by_path(tmp_path):
    d = fileipc.SharedData(tmp_path / "s")
    d["a"] = 1
    assert pickle.loads(pickle.dumps(d))["a"] == 1


def test_concurrent_increments_and_updates_are_exact(tmp_path, children):
    path = str(tmp_path / "s")
    n = 100
    procs = [children("""
        import fileipc
        d = fileipc.SharedData(ARGS[0])
        for i in range(int(ARGS[1])):
            d.increment("n")
            d.update("u", lambda v: (v or 0) + 1)
        print("done", flush=True)
        """, path, str(n)) for _ in range(4)]
    for p in procs:
        p.expect("done")
        assert p.wait() == 0
    d = fileipc.SharedData(path)
    assert d["n"] == 4 * n and d["u"] == 4 * n


def test_transaction_commits_all_or_nothing(tmp_path):
    d = fileipc.SharedData(tmp_path / "bank")
    d["alice"] = 100

    def move(tx):
        a = tx["alice"]
        tx["alice"] = a - 30
        assert tx.increment("bob", 30) == 30
        assert "bob" in tx and len(tx) == 2 and sorted(tx.keys()) == ["alice", "bob"]
        assert tx.get("carol") is None and tx.get("carol", 5) == 5
        return tx.to_dict()

    assert d.transaction(move) == {"alice": 70, "bob": 30}
    assert d.to_dict() == {"alice": 70, "bob": 30}
    kept = []

    def fails(tx):
        tx["alice"] = 0
        del tx["bob"]
        assert tx.compare_and_swap("carol", None, 1)
        kept.append(tx)
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        d.transaction(fails)
    assert d.to_dict() == {"alice": 70, "bob": 30}  # rolled back
    with pytest.raises(fileipc.InvalidOperation, match="transaction is over"):
        kept[0]["x"] = 1
    with pytest.raises(KeyError):
        d.transaction(lambda tx: tx["missing"])
    with pytest.raises(fileipc.DataError):
        d.transaction(lambda tx: tx.increment("bob", 2**63 - 1))
    assert d.to_dict() == {"alice": 70, "bob": 30}


def test_concurrent_transactions_keep_the_invariant(tmp_path, children):
    # Each transaction reads two keys and writes both back: without isolation, updates
    # of concurrent processes are lost and the sum drifts.
    path = str(tmp_path / "s")
    d = fileipc.SharedData(path)
    d["a"], d["b"] = 0, 0
    n = 100
    procs = [children("""
        import fileipc
        d = fileipc.SharedData(ARGS[0])
        def move(tx):
            a, b = tx["a"], tx["b"]
            tx["a"], tx["b"] = a - 1, b + 1
        for i in range(int(ARGS[1])):
            d.transaction(move)
        print("done", flush=True)
        """, path, str(n)) for _ in range(3)]
    for p in procs:
        p.expect("done")
        assert p.wait() == 0
    assert (d["a"], d["b"]) == (-3 * n, 3 * n)
