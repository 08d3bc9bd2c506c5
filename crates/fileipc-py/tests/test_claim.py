"""Claim/ack from Python: a job acknowledged, given back, extended, redelivered after its
claimer was SIGKILLed or raised, dead letters; with real processes."""

from __future__ import annotations

import os
import pickle
import time

import pytest

import fileipc
from conftest import PATIENCE


def test_claim_ack_nack_and_the_job_fields(tmp_path):
    q = fileipc.MessageQueue(tmp_path / "q")
    q.send("one")
    q.send(b"two")
    job = q.claim(timeout=PATIENCE)
    assert (job.data, job.bytes, job.attempt, job.done) == (b"one", b"one", 1, False)
    assert q.count() == 2  # in flight: still counted
    job.ack()
    assert job.done and q.count() == 1
    with pytest.raises(fileipc.InvalidOperation, match="already acknowledged"):
        job.ack()
    second = q.claim(timeout=PATIENCE)
    assert second.data == b"two" and second.fence > job.fence
    second.nack()
    again = q.try_claim()
    assert (again.data, again.attempt) == (b"two", 2)
    again.ack()
    assert q.try_claim() is None
    assert q.claim(timeout=0.01) is None
    assert "attempt=2" in repr(again)


def test_with_block_acks_on_success_and_gives_back_on_exception(tmp_path):
    q = fileipc.MessageQueue(tmp_path / "q")
    q.send("job")
    with pytest.raises(ZeroDivisionError):
        with q.claim(timeout=PATIENCE) as job:
            assert job.attempt == 1
            1 / 0
    assert job.done
    with q.claim(timeout=PATIENCE) as job:
        assert (job.data, job.attempt) == (b"job", 2)
    assert job.done and q.count() == 0
    # An ack or nack inside the block is final.
    q.send("x")
    with q.claim(timeout=PATIENCE) as job:
        job.nack(delay=60.0)
    assert q.try_claim() is None and q.count() == 1


def test_a_collected_job_gives_its_message_back(tmp_path):
    q = fileipc.MessageQueue(tmp_path / "q")
    q.send("job")
    job = q.claim(timeout=PATIENCE)
    assert q.try_claim() is None
    del job
    again = q.try_claim()
    assert (again.data, again.attempt) == (b"job", 2)


def test_nack_delay_and_extend(tmp_path):
    q = fileipc.MessageQueue(tmp_path / "q", lease=0.2)
    q.send("job")
    job = q.claim(timeout=PATIENCE)
    job.extend(PATIENCE)
    # The original lease (0.2 s) has run out: the extended one holds.
    time.sleep(0.3)
    assert q.try_claim() is None
    job.nack(delay=0.2)
    assert q.try_claim() is None
    later = q.claim(timeout=PATIENCE)
    assert (later.data, later.attempt) == (b"job", 2)
    with pytest.raises(ValueError):
        later.extend(-1.0)
    with pytest.raises(ValueError):
        later.nack(delay=float("nan"))
    later.ack()


def test_lease_runs_out_and_the_late_ack_is_refused(tmp_path):
    q = fileipc.MessageQueue(tmp_path / "q", lease=0.05)
    q.send("job")
    slow = q.claim(timeout=PATIENCE)
    fast = q.claim(timeout=PATIENCE)  # waits until the lease ran out
    assert (fast.data, fast.attempt) == (b"job", 2) and fast.fence > slow.fence
    with pytest.raises(fileipc.InvalidOperation, match="lost lease"):
        slow.ack()
    fast.ack()


def test_max_deliveries_moves_the_message_to_the_dead_letters(tmp_path):
    q = fileipc.MessageQueue(tmp_path / "q", max_deliveries=2)
    q.send("poison")
    for attempt in (1, 2):
        with pytest.raises(RuntimeError):
            with q.claim(timeout=PATIENCE) as job:
                assert job.attempt == attempt
                raise RuntimeError("fails every time")
    assert q.try_claim() is None and q.count() == 0
    dead = q.dead_letters()
    assert dead.count() == 1
    with dead.claim(timeout=PATIENCE) as job:
        assert (job.data, job.dead_letter_attempts) == (b"poison", 2)
    assert dead.count() == 0
    # The options travel with a pickled handle.
    copy = pickle.loads(pickle.dumps(q))
    copy.send("again")
    for _ in range(2):
        copy.claim(timeout=PATIENCE).nack()
    assert dead.count() == 1


def test_sigkilled_worker_holding_a_claim_the_job_is_redelivered(tmp_path, children):
    path = str(tmp_path / "q")
    q = fileipc.MessageQueue(path)  # default lease: 30 s, far beyond this test
    q.send("job")
    worker = children(
        """
        import time, fileipc
        q = fileipc.MessageQueue(ARGS[0])
        job = q.claim(timeout=10)
        print(job.data.decode(), job.attempt, flush=True)
        time.sleep(60)
        """,
        path,
    )
    worker.expect("job 1")
    assert q.try_claim() is None  # the worker holds it
    worker.proc.kill()
    worker.wait()
    started = time.monotonic()
    job = q.claim(timeout=PATIENCE)
    assert job is not None and (job.data, job.attempt) == (b"job", 2)
    assert time.monotonic() - started < 5.0  # at once, not after the lease
    job.ack()


def test_worker_raising_in_the_with_block_the_job_comes_back_with_attempt_2(tmp_path, children):
    path = str(tmp_path / "q")
    q = fileipc.MessageQueue(path)
    q.send("job")
    worker = children(
        """
        import fileipc
        q = fileipc.MessageQueue(ARGS[0])
        try:
            with q.claim(timeout=10) as job:
                print(job.attempt, flush=True)
                raise ValueError("the work failed")
        except ValueError:
            print("raised", flush=True)
        input()  # alive: the message came back by the nack, not by its death
        """,
        path,
    )
    worker.expect("1")
    worker.expect("raised")
    with q.claim(timeout=PATIENCE) as job:
        assert (job.data, job.attempt) == (b"job", 2)
    assert worker.proc.poll() is None
    assert q.count() == 0


def test_fork_child_cannot_finish_the_parents_job(tmp_path):
    q = fileipc.MessageQueue(tmp_path / "q")
    q.send("job")
    job = q.claim(timeout=PATIENCE)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            job.ack()
        except fileipc.InvalidOperation as e:
            code = 0 if "parent" in str(e) else 2
        finally:
            del job  # collected in the child: the parent's claim stays
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert q.try_claim() is None  # still the parent's
    job.ack()
    assert q.count() == 0
