"""Inter-process communication through the file system, over the Rust ``fileipc`` core.

Six primitives, each named by a path, shared by unrelated processes (Python, Rust, or
the ``fileipc`` command line on the same paths) and robust to ``kill -9``::

    import fileipc

    q = fileipc.MessageQueue("/tmp/jobs")
    q.send("resize photo.png")           # bytes or str
    print(q.recv(timeout=5.0))           # b'resize photo.png', or None after 5 s

    jobs = fileipc.MessageQueue("/tmp/work", max_deliveries=5)
    while (job := jobs.claim(timeout=5.0)) is not None:
        with job:                        # acked if the block ends normally, given
            handle(job.data)             # back (delivered again) if it raises

    with fileipc.Mutex("/tmp/jobs.lock"):
        ...                              # one process at a time

    d = fileipc.SharedData("/tmp/state")
    d["status"] = {"running": True}
    d.increment("hits")                  # atomic across processes

Blocking calls (``recv``, ``lock``, ``acquire``, ``wait``) take ``timeout`` in seconds
(``None``: without limit), release the GIL while they wait, and are interrupted by
Ctrl-C at once. A timeout is an answer (``False`` / ``None``), never an exception.
Handles may be shared by threads. A handle used in a child made by ``os.fork()`` (or
``multiprocessing``'s fork start method) is a distinct owner there: the child opens the
file again on first use, so a lock the parent holds is not held by the child (unlocking
it there raises ``InvalidOperation``), and what the child takes is released when it
exits. Handles pickle as their path (``multiprocessing``'s spawn start method): the
receiving process opens the primitive again, holding nothing.
"""

from __future__ import annotations

import os as _os
from collections.abc import MutableMapping
from typing import Any, Callable, Iterator, Optional

from ._errors import (
    AlreadyRunning,
    CorruptError,
    DataError,
    DestroyedError,
    Error,
    FormatError,
    InvalidOperation,
    NotFound,
    PermissionDenied,
    StoreError,
    SymlinkError,
)
from ._fileipc import (
    DEFAULT_TIMEOUT,
    WAIT_BACKEND,
    Event,
    Job,
    MessageQueue,
    Mutex,
    PidFile,
    Semaphore,
    _SharedData,
    after_fork_in_child as _after_fork_in_child,
)

# A MessageQueue, Mutex, Semaphore or SharedData handle used in a forked child reopens
# its file there (see fork.rs).
_os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = [
    "DEFAULT_TIMEOUT",
    "WAIT_BACKEND",
    "AlreadyRunning",
    "CorruptError",
    "DataError",
    "DestroyedError",
    "Error",
    "Event",
    "FormatError",
    "InvalidOperation",
    "Job",
    "MessageQueue",
    "Mutex",
    "NotFound",
    "PermissionDenied",
    "PidFile",
    "Semaphore",
    "SharedData",
    "StoreError",
    "SymlinkError",
]


class SharedData(MutableMapping):
    """A key-value store shared by processes (SQLite in WAL mode at ``path``), as a
    ``MutableMapping`` of ``str`` keys to JSON-compatible values (``None``, ``bool``,
    64-bit ``int``, finite ``float``, ``str``, ``list``/``tuple``, ``dict`` with ``str``
    keys; tuples come back as lists).

    Each single operation is atomic. For read-modify-write use ``increment``,
    ``update(key, fn)`` or ``compare_and_swap``, never ``d[k] = d[k] + 1``.
    """

    __slots__ = ("_core",)

    def __init__(self, path: Any) -> None:
        self._core = _SharedData(path)

    @property
    def path(self) -> str:
        """The store's path."""
        return str(self._core.path)

    def __getitem__(self, key: str) -> Any:
        return self._core.getitem(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._core.set(key, value)

    def __delitem__(self, key: str) -> None:
        if not self._core.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._core.contains(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._core.keys())

    def __len__(self) -> int:
        return self._core.len()

    def __repr__(self) -> str:
        return f"SharedData({self.path!r})"

    def __reduce__(self):
        return (SharedData, (self.path,))

    def keys(self):  # type: ignore[override]
        """The keys, read in one transaction (a list-backed view)."""
        return self._core.keys()

    def clear(self) -> None:
        """Removes every key, in one transaction."""
        self._core.clear()

    def to_dict(self) -> dict:
        """Every key and value, read in one transaction."""
        return self._core.dump()

    def increment(self, key: str, by: int = 1) -> int:
        """Atomically adds ``by`` to the integer at ``key`` (missing: 0); the new value.
        Concurrent increments from any processes are each applied exactly once."""
        return self._core.increment(key, by)

    def compare_and_swap(self, key: str, expected: Any, new: Any) -> bool:
        """Atomically stores ``new`` if the current value equals ``expected`` (``None``:
        if ``key`` is absent); whether it did. Values compare as JSON (``1 != 1.0``)."""
        return self._core.compare_and_swap(key, expected, new)

    def transaction(self, fn: Callable[[Any], Any]) -> Any:
        """Runs ``fn(tx)`` as one atomic transaction and returns what it returns: other
        processes see all of its writes or none, and no other writer runs between its
        reads and its writes. ``tx`` has the store's mapping methods (``tx[k]``,
        ``tx[k] = v``, ``del tx[k]``, ``k in tx``, ``len``, ``get``, ``keys``,
        ``delete``, ``increment``, ``compare_and_swap``, ``to_dict``), valid only inside
        ``fn``. If ``fn`` raises, nothing it wrote is kept and the exception propagates.
        ``fn`` runs while the store's writers wait: keep it short, and use only ``tx``
        inside it (not this store's handles)::

            def move(tx):
                tx["alice"] = tx.get("alice", 0) - 30
                tx.increment("bob", 30)
            d.transaction(move)
        """
        return self._core.transaction(fn)

    def update(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """``update(key, fn)``: atomically replaces the value of ``key`` with
        ``fn(current)`` (``current`` is ``None`` for a missing key; ``fn`` returning
        ``None`` deletes it) and returns the new value; no other writer runs between the
        read and the write. If ``fn`` raises, nothing changes. ``fn`` runs while the
        store's writers wait: keep it short, and do not use the store inside it.

        ``update(mapping_or_pairs, **kw)``: as ``dict.update`` (one write per key).
        """
        if len(args) == 2 and not kwargs and isinstance(args[0], str) and callable(args[1]):
            return self._core.update(args[0], args[1])
        return MutableMapping.update(self, *args, **kwargs)
