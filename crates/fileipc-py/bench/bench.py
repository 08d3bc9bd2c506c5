"""fileipc beside the Python libraries people use for the same jobs, in one run on one
machine, each library with its defaults and its documented blocking API (or a polling
loop where it has none), and every result validated.

    python crates/fileipc-py/bench/bench.py            # the full run
    python crates/fileipc-py/bench/bench.py --quick    # a smoke run (small counts)

Needs: pip install ./crates/fileipc-py filelock portalocker fasteners persist-queue
diskcache sqlitedict posix_ipc (a missing peer is reported and skipped).

Every worker is a separate process started with the `spawn` method: it shares nothing
with the others but the paths (multiprocessing.Queue and multiprocessing.Event, which
only work between a parent and its children, get their objects from the parent).
Times are from time.monotonic(), one clock for all processes on Linux.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import fileipc

SPAWN = mp.get_context("spawn")
PATIENCE = 120.0


# --- locks: hand-off latency ----------------------------------------------------------
#
# The parent holds the lock while the child blocks in the library's acquire; the parent
# notes the time and releases; the child notes when its acquire returned. The hand-off
# is the difference. Validation: every hand-off happened, and a counter file updated
# under the lock by both sides reads exactly what was added.

def make_lock(lib: str, path: str) -> Any:
    if lib == "fileipc":
        m = fileipc.Mutex(path)
        return (lambda: m.lock(timeout=None)), m.unlock
    if lib == "filelock":
        import filelock
        fl = filelock.FileLock(path)
        return fl.acquire, fl.release
    if lib == "portalocker":
        import portalocker
        pl = portalocker.Lock(path, timeout=PATIENCE)
        return pl.acquire, pl.release
    if lib == "fasteners":
        import fasteners
        fa = fasteners.InterProcessLock(path)
        return fa.acquire, fa.release
    if lib == "flock":  # the kernel's blocking flock: the floor
        import fcntl
        f = open(path, "a")
        return (lambda: fcntl.flock(f, fcntl.LOCK_EX)), (lambda: fcntl.flock(f, fcntl.LOCK_UN))
    raise ValueError(lib)


def _bump(counter: str) -> None:
    with open(counter, "r+") as f:
        n = int(f.read() or 0)
        f.seek(0)
        f.write(str(n + 1))
        f.truncate()


def lock_child(lib: str, path: str, counter: str, rounds: int, go, times) -> None:
    acquire, release = make_lock(lib, path)
    times.put(None)  # started: the first round does not time the child's start-up
    for _ in range(rounds):
        go.get(timeout=PATIENCE)  # the parent holds the lock again
        acquire()
        t = time.monotonic()
        _bump(counter)
        release()
        times.put(t)


def bench_lock(lib: str, d: str, rounds: int) -> Dict[str, Any]:
    path, counter = os.path.join(d, f"{lib}.lock"), os.path.join(d, f"{lib}.count")
    open(counter, "w").close()
    acquire, release = make_lock(lib, path)
    go, times = SPAWN.Queue(), SPAWN.Queue()
    acquire()
    child = SPAWN.Process(target=lock_child, args=(lib, path, counter, rounds, go, times))
    child.start()
    times.get(timeout=PATIENCE)
    handoffs = []
    for _ in range(rounds):
        go.put(1)
        # Let the child enter its acquire; a random delay, so that a polling peer's
        # phase relative to the release is random too (as in real use).
        time.sleep(random.uniform(0.03, 0.09))
        _bump(counter)
        t0 = time.monotonic()
        release()
        handoffs.append(times.get(timeout=PATIENCE) - t0)
        acquire()
    release()
    child.join(PATIENCE)
    with open(counter) as f:
        count = int(f.read())
    ok = len(handoffs) == rounds and count == 2 * rounds
    return {
        "median_ms": statistics.median(handoffs) * 1e3,
        "mean_ms": statistics.mean(handoffs) * 1e3,
        "valid": f"{'ok' if ok else 'FAIL'}: {len(handoffs)}/{rounds} hand-offs, counter {count}/{2 * rounds}",
    }


# --- queues: throughput with one producer and two consumers --------------------------

def make_queue(lib: str, d: str, shared: Any, name: str = "q") -> Any:
    """(send(bytes), recv() -> bytes | None after ~1 s of nothing)."""
    path = os.path.join(d, f"{lib}.{name}")
    if lib == "fileipc":
        q = fileipc.MessageQueue(path)
        return q.send, lambda: q.recv(timeout=1.0)
    if lib == "persist-queue (SQLite)":
        import persistqueue
        q = persistqueue.SQLiteQueue(path, auto_commit=True, multithreading=True)

        def get():
            try:
                return q.get(block=True, timeout=1.0)
            except persistqueue.Empty:
                return None
        return q.put, get
    if lib == "persist-queue (file)":
        import persistqueue
        q = persistqueue.Queue(path, autosave=True)

        def get():
            try:
                item = q.get(block=True, timeout=1.0)
                q.task_done()
                return item
            except persistqueue.Empty:
                return None
        return q.put, get
    if lib == "diskcache Deque":
        import diskcache
        q = diskcache.Deque(directory=path)

        def get():  # no blocking API: poll
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    return q.popleft()
                except IndexError:
                    time.sleep(0.001)
            return None
        return q.append, get
    if lib == "multiprocessing.Queue":
        import queue
        q = shared

        def get():
            try:
                return q.get(timeout=1.0)
            except queue.Empty:
                return None
        return q.put, get
    if lib == "posix_ipc":
        import posix_ipc
        q = posix_ipc.MessageQueue(_posix_name(d, name), posix_ipc.O_CREAT)

        def get():
            try:
                return q.receive(timeout=1.0)[0]
            except posix_ipc.BusyError:
                return None
        return q.send, get
    raise ValueError(lib)


def _posix_name(d: str, name: str) -> str:
    return f"/fileipc-bench-{os.path.basename(d)}-{name}"


def queue_producer(lib: str, d: str, shared: Any, n: int, consumers: int, start) -> None:
    send, _ = make_queue(lib, d, shared)
    start.wait(PATIENCE)
    for i in range(n):
        send(b"m%d" % i)
    for _ in range(consumers):
        send(b"stop")


def queue_consumer(lib: str, d: str, shared: Any, start, out) -> None:
    _, recv = make_queue(lib, d, shared)
    got: List[bytes] = []
    start.wait(PATIENCE)
    idle_until = time.monotonic() + 10.0
    while True:
        m = recv()
        if m == b"stop":
            break
        if m is None:
            if time.monotonic() > idle_until:
                break  # the producer's stop never came (lost): give up
            continue
        got.append(bytes(m))
        idle_until = time.monotonic() + 10.0
    out.put((time.monotonic(), got))


def bench_queue(lib: str, d: str, n: int, consumers: int = 2) -> Dict[str, Any]:
    shared = SPAWN.Queue() if lib == "multiprocessing.Queue" else None
    make_queue(lib, d, shared)  # create it before anyone uses it
    start = SPAWN.Barrier(consumers + 2)
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=queue_producer, args=(lib, d, shared, n, consumers, start))]
    procs += [SPAWN.Process(target=queue_consumer, args=(lib, d, shared, start, out))
              for _ in range(consumers)]
    for p in procs:
        p.start()
    start.wait(PATIENCE)
    t0 = time.monotonic()
    results = [out.get(timeout=PATIENCE * 3) for _ in range(consumers)]
    for p in procs:
        p.join(PATIENCE)
    end = max(t for t, got in results if got) if any(got for _, got in results) else t0
    got = [m for _, ms in results for m in ms]
    distinct = set(got)
    lost = n - len(distinct & {b"m%d" % i for i in range(n)})
    dups = len(got) - len(distinct)
    if lib == "posix_ipc":
        import posix_ipc
        posix_ipc.unlink_message_queue(_posix_name(d, "q"))
    return {
        "msgs_per_s": len(distinct) / (end - t0) if end > t0 else 0.0,
        "valid": f"{'ok' if not lost and not dups else 'FAIL'}: {len(got)} received, "
                 f"{lost} lost, {dups} duplicates",
    }


# --- queues: ping-pong round trips between two processes --------------------------

def pong(lib: str, d: str, shared: Any, rounds: int) -> None:
    _, recv = make_queue(lib, d, shared[0] if shared else None, "ping")
    send, _ = make_queue(lib, d, shared[1] if shared else None, "pong")
    for _ in range(rounds):
        m = recv()
        while m is None:
            m = recv()
        send(m)


def bench_pingpong(lib: str, d: str, rounds: int) -> Dict[str, Any]:
    shared = (SPAWN.Queue(), SPAWN.Queue()) if lib == "multiprocessing.Queue" else None
    send, _ = make_queue(lib, d, shared[0] if shared else None, "ping")
    _, recv = make_queue(lib, d, shared[1] if shared else None, "pong")
    child = SPAWN.Process(target=pong, args=(lib, d, shared, rounds))
    child.start()
    trips, wrong = [], 0
    for i in range(rounds):
        t0 = time.monotonic()
        send(b"p%d" % i)
        m = recv()
        deadline = t0 + PATIENCE
        while m is None and time.monotonic() < deadline:
            m = recv()
        trips.append(time.monotonic() - t0)
        wrong += m is None or bytes(m) != b"p%d" % i
    child.join(PATIENCE)
    if lib == "posix_ipc":
        import posix_ipc
        for name in ("ping", "pong"):
            posix_ipc.unlink_message_queue(_posix_name(d, name))
    return {
        "median_rtt_ms": statistics.median(trips[1:] or trips) * 1e3,
        "valid": f"{'ok' if not wrong else 'FAIL'}: {rounds - wrong}/{rounds} replies in order",
    }


# --- counters: 4 processes increment one key -----------------------------------------

def counter_worker(lib: str, path: str, k: int, start, ends) -> None:
    if lib == "fileipc":
        d = fileipc.SharedData(path)
        inc: Callable[[], Any] = lambda: d.increment("n")
    elif lib == "diskcache incr":
        import diskcache
        c = diskcache.Cache(path)
        inc = lambda: c.incr("n")
    elif lib == "sqlitedict (naive)":
        from sqlitedict import SqliteDict
        s = SqliteDict(path, autocommit=True)

        def inc():
            s["n"] = s.get("n", 0) + 1
    elif lib == "SQLite by hand":
        con = sqlite3.connect(path, timeout=PATIENCE, isolation_level=None)

        def inc():
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO c VALUES ('n', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1")
            con.execute("COMMIT")
    else:
        raise ValueError(lib)
    start.wait(PATIENCE)
    for _ in range(k):
        inc()
    # When this worker's increments were done (the clock is system-wide): the run's time
    # leaves out closing the store and the interpreter's exit.
    ends.put(time.monotonic())


def counter_value(lib: str, path: str) -> int:
    if lib == "fileipc":
        return fileipc.SharedData(path).get("n", 0)
    if lib == "diskcache incr":
        import diskcache
        return diskcache.Cache(path).get("n", 0)
    if lib == "sqlitedict (naive)":
        from sqlitedict import SqliteDict
        return SqliteDict(path).get("n", 0)
    con = sqlite3.connect(path)
    row = con.execute("SELECT v FROM c WHERE k = 'n'").fetchone()
    return row[0] if row else 0


def bench_counter(lib: str, d: str, k: int, procs: int = 4) -> Dict[str, Any]:
    path = os.path.join(d, lib.split()[0] + ".counter")
    if lib == "SQLite by hand":
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE c (k TEXT PRIMARY KEY, v INTEGER)")
        con.commit()
        con.close()
    start = SPAWN.Barrier(procs + 1)
    ends = SPAWN.Queue()
    ps = [SPAWN.Process(target=counter_worker, args=(lib, path, k, start, ends))
          for _ in range(procs)]
    for p in ps:
        p.start()
    start.wait(PATIENCE)
    t0 = time.monotonic()
    # From the start to the last worker's last increment.
    took = max(ends.get(timeout=PATIENCE * 5) for _ in ps) - t0
    for p in ps:
        p.join(PATIENCE * 5)
    value = counter_value(lib, path)
    want = procs * k
    return {
        "incr_per_s": want / took,
        "valid": f"{'ok' if value == want else 'FAIL'}: {value}/{want} "
                 f"({want - value} increments lost)",
    }


# --- events: wake-up latency ----------------------------------------------------------

def event_waiter(lib: str, path: str, shared: Any, rounds: int, ready, times) -> None:
    if lib == "fileipc":
        e = fileipc.Event(path)
        wait: Callable[[], Any] = lambda: e.wait(timeout=None)
        clear = e.clear
    elif lib == "polling loop (10 ms)":
        def wait():
            while not os.path.exists(path):
                time.sleep(0.01)

        def clear():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    elif lib == "multiprocessing.Event":
        wait, clear = shared.wait, shared.clear
    else:
        raise ValueError(lib)
    for _ in range(rounds):
        clear()
        ready.put(1)
        wait()
        times.put(time.monotonic())


def bench_event(lib: str, d: str, rounds: int) -> Dict[str, Any]:
    path = os.path.join(d, "event")
    shared = SPAWN.Event() if lib == "multiprocessing.Event" else None
    if lib == "fileipc":
        e = fileipc.Event(path)
        set_ = e.set
    elif lib == "polling loop (10 ms)":
        set_ = lambda: open(path, "a").close()
    else:
        set_ = shared.set
    ready, times = SPAWN.Queue(), SPAWN.Queue()
    child = SPAWN.Process(target=event_waiter, args=(lib, path, shared, rounds, ready, times))
    child.start()
    wakes = []
    for _ in range(rounds):
        ready.get(timeout=PATIENCE)
        time.sleep(random.uniform(0.03, 0.09))  # let the child wait, in a random phase
        t0 = time.monotonic()
        set_()
        wakes.append(times.get(timeout=PATIENCE) - t0)
    child.join(PATIENCE)
    return {
        "median_ms": statistics.median(wakes) * 1e3,
        "valid": f"{'ok' if len(wakes) == rounds else 'FAIL'}: {len(wakes)}/{rounds} wake-ups",
    }


# --- driver ---------------------------------------------------------------------------

def run(name: str, fn: Callable[[], Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    try:
        r = fn()
    except ImportError as e:
        print(f"  {name:28} skipped: {e}", flush=True)
        return None
    except Exception as e:  # a peer failing outright is a result too
        print(f"  {name:28} FAILED: {type(e).__name__}: {e}", flush=True)
        return None
    figures = ", ".join(f"{k} {v:,.3f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in r.items() if k != "valid")
    print(f"  {name:28} {figures}   [{r['valid']}]", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    ap.add_argument("--only", choices=["lock", "queue", "pingpong", "counter", "event"],
                    action="append")
    args = ap.parse_args()
    q = args.quick
    lock_rounds, msgs, incs, ev_rounds = (5, 2000, 100, 5) if q else (20, 20000, 1000, 20)
    trips = 50 if q else 500
    only = set(args.only or ["lock", "queue", "pingpong", "counter", "event"])
    print(f"fileipc {fileipc.WAIT_BACKEND}; Python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs; {'quick' if q else 'full'} run", flush=True)
    with tempfile.TemporaryDirectory(prefix="fileipc-pybench-") as d:
        if "lock" in only:
            print(f"lock hand-off, {lock_rounds} rounds (lower is better)")
            for lib in ["fileipc", "flock", "filelock", "portalocker", "fasteners"]:
                run(lib, lambda: bench_lock(lib, d, lock_rounds))
        if "queue" in only:
            print(f"queue: 1 producer, 2 consumers, {msgs} messages (higher is better)")
            for lib in ["fileipc", "posix_ipc", "multiprocessing.Queue", "diskcache Deque",
                        "persist-queue (SQLite)", "persist-queue (file)"]:
                n = msgs if lib in ("fileipc", "posix_ipc", "multiprocessing.Queue") else msgs // 10
                sub = tempfile.mkdtemp(dir=d)
                run(f"{lib} ({n})", lambda: bench_queue(lib, sub, n))
        if "pingpong" in only:
            print(f"queue ping-pong between two processes, {trips} round trips (lower is better)")
            for lib in ["fileipc", "posix_ipc", "multiprocessing.Queue", "diskcache Deque",
                        "persist-queue (SQLite)"]:
                sub = tempfile.mkdtemp(dir=d)
                n = trips if not lib.startswith("persist") else 10  # ~1 s per trip
                run(f"{lib} ({n})", lambda: bench_pingpong(lib, sub, n))
        if "counter" in only:
            print(f"counter: 4 processes x {incs} increments (higher is better)")
            for lib in ["fileipc", "diskcache incr", "SQLite by hand", "sqlitedict (naive)"]:
                sub = tempfile.mkdtemp(dir=d)
                run(lib, lambda: bench_counter(lib, sub, incs))
        if "event" in only:
            print(f"event wake-up, {ev_rounds} rounds (lower is better)")
            for lib in ["fileipc", "polling loop (10 ms)", "multiprocessing.Event"]:
                sub = tempfile.mkdtemp(dir=d)
                run(lib, lambda: bench_event(lib, sub, ev_rounds))


if __name__ == "__main__":
    main()
