"""The exception classes of fileipc, and the factory the native module calls."""

from __future__ import annotations

from typing import Any, Optional


class Error(Exception):
    """Base class of every fileipc error; ``.path`` is the file or directory concerned."""

    def __init__(self, message: str, path: Optional[str] = None, **extra: Any) -> None:
        super().__init__(message)
        self.path = path
        self.errno = extra.pop("errno", None)
        for name, value in extra.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PermissionDenied(Error, PermissionError):
    """The operating system refused access to ``.path`` (EACCES, EPERM)."""


class NotFound(Error, FileNotFoundError):
    """``.path`` (or its directory) does not exist."""


class FormatError(Error):
    """The file at ``.path`` is not what the primitive expected: garbage, another
    primitive's file, an unknown format version (``.expected`` names what was expected)."""


class CorruptError(Error):
    """Data inside a valid file at ``.path`` is damaged (``.offset``: where)."""


class SymlinkError(Error):
    """A symbolic link stands at ``.path``; fileipc never follows one."""


class InvalidOperation(Error, ValueError):
    """The call breaks a rule of the primitive: unlocking a mutex this handle does not
    hold, a message over the size limit, an empty key."""


class DestroyedError(Error):
    """The primitive at ``.path`` was destroyed and cannot be used."""


class DataError(Error, ValueError):
    """A SharedData value at ``.key`` could not be used (e.g. ``increment`` of a value
    that is not an integer, or a sum beyond 64 bits)."""


class StoreError(Error):
    """The SQLite database behind a SharedData store at ``.path`` reported an error."""


class AlreadyRunning(Error):
    """``with PidFile(path)``: a live process (``.pid``) owns the PID file."""


_CLASSES = {
    "permission": PermissionDenied,
    "notfound": NotFound,
    "symlink": SymlinkError,
    "format": FormatError,
    "corrupt": CorruptError,
    "invalid": InvalidOperation,
    "destroyed": DestroyedError,
    "value": DataError,
    "sqlite": StoreError,
}


def make(kind: str, message: str, path: str, extra: dict) -> Error:
    """Builds the exception for a library error (called by the native module)."""
    return _CLASSES.get(kind, Error)(message, path, **extra)


def already_running(path: str, pid: Optional[int]) -> AlreadyRunning:
    """The exception ``with PidFile(path)`` raises when another process owns it."""
    return AlreadyRunning(f"{path}: already running (PID {pid})", str(path), pid=pid)
