"""Real processes: a SIGKILLed holder, Ctrl-C during a wait, fork and spawn children."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

import fileipc
from conftest import PATIENCE, eventually


def test_sigkilled_mutex_holder_releases_the_lock(tmp_path, children):
    path = str(tmp_path / "m")
    c = children("""
        import fileipc, sys
        m = fileipc.Mutex(ARGS[0])
        assert m.lock()
        print("locked", flush=True)
        sys.stdin.read()
        """, path)
    c.expect("locked")
    m = fileipc.Mutex(path)
    assert not m.try_lock()
    c.proc.kill()
    c.wait()
    t = time.monotonic()
    assert m.lock(timeout=PATIENCE)
    took = time.monotonic() - t
    assert took < 1.0, took
    m.unlock()


def test_sigkilled_semaphore_holder_gives_its_permits_back(tmp_path, children):
    path = str(tmp_path / "s")
    s = fileipc.Semaphore(path, 2)
    c = children("""
        import fileipc, sys
        s = fileipc.Semaphore(ARGS[0])
        assert s.acquire() and s.acquire()
        print("held", flush=True)
        sys.stdin.read()
        """, path)
    c.expect("held")
    assert not s.try_acquire()
    c.proc.kill()
    c.wait()
    assert s.acquire(timeout=PATIENCE) and s.acquire(timeout=PATIENCE)
    s.release()
    s.release()


WAITS = {
    "recv": "fileipc.MessageQueue(ARGS[0] + '.q').recv(timeout=None)",
    "lock": "fileipc.Mutex(ARGS[0] + '.m').lock(timeout=None)",
    "acquire": "fileipc.Semaphore(ARGS[0] + '.s', 0).acquire(timeout=None)",  # created with 0
    "wait": "fileipc.Event(ARGS[0] + '.e').wait(timeout=None)",
    "with": "fileipc.Mutex(ARGS[0] + '.m').__enter__()",
}


@pytest.mark.parametrize("call", sorted(WAITS))
def test_ctrl_c_interrupts_a_wait_without_limit_within_100ms(tmp_path, children, call):
    base = str(tmp_path / "p")
    holder = fileipc.Mutex(base + ".m")
    assert holder.lock()
    delays = []
    for _ in range(5):
        c = children(f"""
            import fileipc, time
            print("ready", flush=True)
            try:
                {WAITS[call]}
                print("returned", flush=True)
            except KeyboardInterrupt:
                print(time.monotonic(), flush=True)
            """, base)
        c.expect("ready")
        # The child is inside the wait once it sleeps (state S) in the kernel.
        eventually("the child to block", lambda: _state(c.proc.pid) == "S")
        time.sleep(0.06)  # past the first slices, so that the wait is well under way
        sent = time.monotonic()
        os.kill(c.proc.pid, signal.SIGINT)
        caught = float(c.line())  # CLOCK_MONOTONIC is one clock for all processes
        assert c.wait() == 0
        delays.append(caught - sent)
    delays.sort()
    median = delays[len(delays) // 2]
    print(f"Ctrl-C to KeyboardInterrupt in {call}(timeout=None): "
          f"median {median * 1000:.1f} ms, worst {delays[-1] * 1000:.1f} ms")
    # The design bound is one slice (25 ms) plus scheduling; on a loaded machine a
    # single round can be descheduled longer, hence the median and a loose worst case.
    assert median < 0.1, [f"{d * 1000:.1f} ms" for d in delays]
    assert delays[-1] < 1.0, [f"{d * 1000:.1f} ms" for d in delays]


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_other_threads_run_while_one_waits(tmp_path):
    import threading
    q = fileipc.MessageQueue(tmp_path / "q")
    got = []
    t = threading.Thread(target=lambda: got.append(q.recv(timeout=PATIENCE)))
    t.start()
    # This thread computes meanwhile (it would not get the GIL back if recv kept it).
    start = time.monotonic()
    n = sum(range(2_000_000))
    assert time.monotonic() - start < PATIENCE
    q.send(str(n))
    t.join(PATIENCE)
    assert got == [str(n).encode()]


# --- fork and spawn -------------------------------------------------------------------

def _child_try_lock(m, out):
    out.put(("try_lock", m.try_lock()))
    out.put(("lock", m.lock(timeout=0)))


def _exit_now(out):
    out.close()
    out.join_thread()  # the message is sent before the process ends
    os._exit(0)  # without unlocking or releasing: they go with the process


def _child_lock_and_die(m, out):
    out.put(("locked", m.lock(timeout=PATIENCE)))
    _exit_now(out)


def _child_semaphore(s, out):
    out.put(("acquired", s.acquire(timeout=PATIENCE)))
    _exit_now(out)


def _child_data(d, q, out):
    for _ in range(50):
        d.increment("n")
    q.send(f"from {os.getpid()}")
    out.put(("done", True))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_child_is_a_distinct_owner(tmp_path, method):
    ctx = multiprocessing.get_context(method)
    out = ctx.Queue()
    m = fileipc.Mutex(tmp_path / "m")
    assert m.lock()
    # The parent holds the lock; the child's handle (inherited or pickled) does not.
    p = ctx.Process(target=_child_try_lock, args=(m, out))
    p.start()
    assert out.get(timeout=PATIENCE) == ("try_lock", False)
    assert out.get(timeout=PATIENCE) == ("lock", False)
    p.join(PATIENCE)
    assert p.exitcode == 0
    assert m.is_locked()
    m.unlock()
    # A child that takes the lock and exits without unlocking releases it.
    p = ctx.Process(target=_child_lock_and_die, args=(m, out))
    p.start()
    assert out.get(timeout=PATIENCE) == ("locked", True)
    p.join(PATIENCE)
    assert m.lock(timeout=PATIENCE)
    m.unlock()
    # Semaphore permits taken by a child come back when it exits.
    s = fileipc.Semaphore(tmp_path / "s", 1)
    p = ctx.Process(target=_child_semaphore, args=(s, out))
    p.start()
    assert out.get(timeout=PATIENCE) == ("acquired", True)
    p.join(PATIENCE)
    assert s.acquire(timeout=PATIENCE)
    s.release()
    # SharedData and queue handles work in children; the parent's keep working.
    d = fileipc.SharedData(tmp_path / "d")
    q = fileipc.MessageQueue(tmp_path / "q")
    d["n"] = 0
    procs = [ctx.Process(target=_child_data, args=(d, q, out)) for _ in range(3)]
    for p in procs:
        p.start()
    for _ in procs:
        assert out.get(timeout=PATIENCE) == ("done", True)
    for p in procs:
        p.join(PATIENCE)
        assert p.exitcode == 0
    assert d["n"] == 150
    assert sorted(q.recv(timeout=PATIENCE) for _ in procs) == sorted(
        f"from {p.pid}".encode() for p in procs)
    d["after"] = 1
    assert d.increment("n") == 151


def test_os_fork_child_cannot_release_the_parents_lock(tmp_path):
    m = fileipc.Mutex(tmp_path / "m")
    assert m.lock()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                m.unlock()
            except fileipc.InvalidOperation:
                code = 0 if not m.try_lock() else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    status = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert status == b"\x00"
    assert m.is_locked()
    m.unlock()


def test_os_fork_child_owns_nothing_of_the_parents_pidfile(tmp_path):
    path = tmp_path / "app.pid"
    p = fileipc.PidFile(path)
    assert p.create()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            owner = p.is_owner()
            try:
                p.remove()  # owns nothing here: refused, the parent's file stays
            except fileipc.InvalidOperation:
                code = 0 if not owner else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    status = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert status == b"\x00"
    assert p.is_owner() and p.read() == os.getpid()
    p.remove()
    assert not path.exists()


def test_threads_sharing_a_queue_handle_get_each_message_once(tmp_path):
    import threading
    q = fileipc.MessageQueue(tmp_path / "q")
    got = [[] for _ in range(4)]

    def consume(mine):
        while (m := q.recv(timeout=PATIENCE)) != b"stop":
            mine.append(m)

    threads = [threading.Thread(target=consume, args=(g,)) for g in got]
    for t in threads:
        t.start()
    for i in range(2000):
        q.send(b"%d" % i)
    for _ in threads:
        q.send(b"stop")
    for t in threads:
        t.join(PATIENCE)
    everything = [m for g in got for m in g]
    assert sorted(everything) == sorted(b"%d" % i for i in range(2000))
