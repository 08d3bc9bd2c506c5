"""Each primitive through the Python API, within one process and across processes."""

from __future__ import annotations

import threading
import time

import pytest

import fileipc
from conftest import PATIENCE


def test_queue_bytes_and_str(tmp_path):
    q = fileipc.MessageQueue(tmp_path / "q")
    assert q.is_empty() and q.count() == 0
    q.send("héllo")
    q.send(b"\x00\xffbin")
    q.send(bytearray(b"ba"))
    assert q.count() == 3 and not q.is_empty()
    assert q.recv() == "héllo".encode()
    assert q.try_recv() == b"\x00\xffbin"
    assert q.recv(timeout=None) == b"ba"
    assert q.try_recv() is None
    with pytest.raises(TypeError):
        q.send(42)
    q.send("x")
    q.clear()
    assert q.is_empty()
    assert q.path == str(tmp_path / "q")


def test_queue_timeout_is_none_not_an_exception(tmp_path):
    q = fileipc.MessageQueue(tmp_path / "q")
    t = time.monotonic()
    assert q.recv(timeout=0.1) is None
    took = time.monotonic() - t
    assert 0.09 <= took < 2.0, took
    assert q.recv(timeout=0) is None
    with pytest.raises(ValueError):
        q.recv(timeout=-1)


def test_queue_destroy(tmp_path):
    q = fileipc.MessageQueue(tmp_path / "q")
    q.send("a")
    q.destroy()
    assert not (tmp_path / "q").exists()
    with pytest.raises(fileipc.Error) as e:
        q.send("b")
    assert e.value.path == str(tmp_path / "q")


def test_queue_across_processes_each_message_once(tmp_path, children):
    path = str(tmp_path / "q")
    n = 300
    producers = [children("""
        import fileipc
        q = fileipc.MessageQueue(ARGS[0])
        for i in range(int(ARGS[2])):
            q.send(f"{ARGS[1]}:{i}")
        print("done", flush=True)
        """, path, str(p), str(n)) for p in range(2)]
    consumers = [children("""
        import fileipc
        q = fileipc.MessageQueue(ARGS[0])
        while (m := q.recv(timeout=1.0)) is not None and m != b"stop":
            print(m.decode(), flush=True)
        print("end", flush=True)
        """, path) for _ in range(2)]
    for p in producers:
        p.expect("done")
    q = fileipc.MessageQueue(path)
    for _ in consumers:
        q.send("stop")
    got = []
    for c in consumers:
        while (line := c.line()) != "end":
            got.append(line)
    assert sorted(got) == sorted(f"{p}:{i}" for p in range(2) for i in range(n))
    # In order per producer, within each consumer's share.
    for c_lines in [got]:
        for p in range(2):
            seq = [int(x.split(":")[1]) for x in c_lines if x.startswith(f"{p}:")]
            assert len(seq) == n


def test_mutex(tmp_path):
    m = fileipc.Mutex(tmp_path / "m")
    other = fileipc.Mutex(tmp_path / "m")
    assert not m.is_locked()
    assert m.lock()
    assert m.is_locked() and other.is_locked()
    assert not other.try_lock()
    assert other.lock(timeout=0.05) is False
    m.unlock()
    with pytest.raises(fileipc.InvalidOperation) as e:
        m.unlock()
    assert e.value.path == str(tmp_path / "m")
    assert isinstance(e.value, ValueError)
    with other:
        assert not m.try_lock()
    assert m.try_lock()
    m.unlock()


def test_mutex_excludes_threads_sharing_a_handle_and_releases_the_gil(tmp_path):
    m = fileipc.Mutex(tmp_path / "m")
    inside = 0
    worst = 0
    counter = 0

    def work():
        nonlocal inside, worst, counter
        for _ in range(200):
            with m:
                inside += 1
                worst = max(worst, inside)
                counter += 1
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    assert worst == 1 and counter == 800


def test_semaphore(tmp_path):
    s = fileipc.Semaphore(tmp_path / "s", 2)
    assert s.value() == 2
    assert s.acquire() and s.try_acquire()
    assert s.value() == 0
    assert s.acquire(timeout=0.05) is False
    s.release()
    with s:
        assert s.value() == 0
    assert s.value() == 1
    s.release()
    assert fileipc.Semaphore(tmp_path / "s").value() == 2  # no initial: the one it has
    assert fileipc.Semaphore(tmp_path / "s", 2).value() == 2
    with pytest.raises(fileipc.InvalidOperation, match="capacity 2, not the 5"):
        fileipc.Semaphore(tmp_path / "s", 5)
    assert fileipc.Semaphore(tmp_path / "t").value() == 1  # created with 1


def test_event(tmp_path):
    e = fileipc.Event(tmp_path / "e")
    assert not e.is_set()
    assert e.wait(timeout=0.05) is False
    e.set()
    assert e.is_set() and e.wait() and e.wait(timeout=None)
    assert (tmp_path / "e").exists()
    e.clear()
    assert not e.is_set()


def test_event_wakes_a_waiting_thread(tmp_path):
    e = fileipc.Event(tmp_path / "e")
    result = []
    t = threading.Thread(target=lambda: result.append(e.wait(timeout=PATIENCE)))
    t.start()
    fileipc.Event(tmp_path / "e").set()
    t.join(PATIENCE)
    assert result == [True]


def test_pidfile(tmp_path, children):
    path = tmp_path / "app.pid"
    p = fileipc.PidFile(path)
    assert p.status() == ("absent", None)
    with p:
        import os
        assert p.read() == os.getpid() and p.is_owner()
        assert p.status() == ("running", os.getpid())
        c = children("""
            import fileipc
            p = fileipc.PidFile(ARGS[0])
            print(p.create(), p.read(), flush=True)
            try:
                with p:
                    pass
            except fileipc.AlreadyRunning as e:
                print("already", e.pid, flush=True)
            """, str(path))
        c.expect(f"False {os.getpid()}")
        c.expect(f"already {os.getpid()}")
        assert c.wait() == 0
    assert not path.exists()
    assert not p.is_owner()


def test_errors_carry_the_path(tmp_path):
    with pytest.raises(fileipc.NotFound) as e:
        fileipc.Mutex(tmp_path / "missing" / "m")
    assert isinstance(e.value, FileNotFoundError)
    assert e.value.path is not None
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not a semaphore" * 10)
    with pytest.raises(fileipc.FormatError) as e:
        fileipc.Semaphore(garbage)
    assert e.value.path == str(garbage)
    with pytest.raises(fileipc.FormatError):
        fileipc.SharedData(garbage)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(fileipc.SymlinkError) as e:
        fileipc.Mutex(tmp_path / "link")
    assert e.value.path == str(tmp_path / "link")


def test_permission_error(tmp_path):
    import os
    if os.geteuid() == 0:
        # root bypasses mode bits: drop to another uid in a child.
        import subprocess, sys
        d = tmp_path / "private"
        d.mkdir(mode=0o700)
        code = (
            "import os, fileipc\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "try:\n fileipc.Mutex(%r)\nexcept fileipc.PermissionDenied as e:\n"
            " print(type(e).__name__, isinstance(e, PermissionError), e.path)\n" % str(d / "m")
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=PATIENCE)
        assert r.stdout.split()[:2] == ["PermissionDenied", "True"], r.stderr
    else:
        d = tmp_path / "private"
        d.mkdir(mode=0o500)
        with pytest.raises(fileipc.PermissionDenied):
            fileipc.Mutex(d / "m")
