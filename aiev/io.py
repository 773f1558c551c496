"""Small, shared I/O helpers: tolerant JSONL reading with counted skips, atomic writes."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("aiev.io")


@dataclass
class SkipLog:
    """Every row that a step could not use, with where it came from and why (never silently lost)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, reason: str, *, file: str | None = None, line: int | None = None, **extra: Any) -> None:
        row: dict[str, Any] = {"file": file, "line": line, "reason": reason}
        row.update(extra)
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        return dict(Counter(_reason_kind(r["reason"]) for r in self.rows))


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def open_text(path: str | Path) -> IO[bytes]:
    """Open a (possibly gzipped) file as bytes."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_jsonl(path: str | Path, skips: SkipLog | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each good line; bad lines go to ``skips`` (or raise)."""
    name = str(path)
    with open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            reason = None
            obj: Any = None
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = f"not-utf8: byte {exc.start}"
            else:
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    reason = f"invalid-json: {exc.msg} at column {exc.colno}"
                else:
                    if not isinstance(obj, dict):
                        reason = f"not-an-object: got {type(obj).__name__}"
            if reason is not None:
                if skips is None:
                    raise ValueError(f"{name}:{lineno}: {reason}")
                skips.add(reason, file=name, line=lineno)
                continue
            yield lineno, obj


#: The process's umask (read once: os.umask can only be read by setting it).
UMASK = os.umask(0o022)
os.umask(UMASK)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and move it into place only on success. The file gets the
    permissions a plain ``open`` would give it (the umask's), not the temporary file's owner-only ones."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~UMASK)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory beside ``path`` (yielded) and swap it in whole on success, so no reader ever sees half of
    one. A failure removes the new tree and leaves the old directory as it was; a kill leaves a hidden
    ``.NAME.tmp-*`` (or, between the two renames, the old tree in ``.NAME.old-*``) beside it, which the next call
    removes. The directory gets the umask's permissions, not mkdtemp's owner-only ones."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in [*path.parent.glob(f".{path.name}.tmp-*"), *path.parent.glob(f".{path.name}.old-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~UMASK)
        yield tmp
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rename(path, old / path.name)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fsync_path(path: str | Path) -> None:
    """Flush a file or a folder (its entries: a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(dumps(row))
            fh.write("\n")
            n += 1
    return n


def read_json_if_exists(path: str | Path) -> Any:
    """A JSON file's value, or None where there is no such file (a report of a part that did not run)."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=2, sort_keys=False)
        fh.write("\n")


def copy_lines(src: str | Path, dst: str | Path, lines: set[int]) -> int:
    """Copy the given (1-based) lines of ``src`` byte for byte, in order, each ending with a newline."""
    n = 0
    with open_text(src) as fh, atomic_open(dst, "wb") as out:
        for lineno, raw in enumerate(fh, start=1):
            if lineno in lines:
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                n += 1
    return n


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file that this workflow wrote itself: any bad line is an error."""
    return [obj for _, obj in read_jsonl(path)]


class ProgressStore:
    """Append-only JSONL of finished work, one row per ``key`` value, each row fsynced as it is added, so a
    ``kill -9`` loses at most the row being written. A torn last line (a kill mid-write) is ignored and the
    file rewritten without it. ``keep`` selects the rows of an earlier run that still count (e.g. the same
    settings' fingerprint); the others stay in the file until a rewrite and are not :attr:`done`."""

    def __init__(self, path: str | Path, key: str, keep: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            torn = SkipLog()
            for _, row in read_jsonl(self.path, torn):
                if isinstance(row.get(key), str) and (keep is None or keep(row)):
                    self.done[row[key]] = row
            if len(torn):
                log.warning("progress store %s: ignored %d torn line(s) from an interrupted run", self.path, len(torn))
                with atomic_open(self.path) as fh:
                    for row in self.done.values():
                        fh.write(dumps(row) + "\n")
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (held open for the whole run)

    def add(self, row: dict[str, Any]) -> None:
        self._fh.write(dumps(row) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.done[row[self.key]] = row

    def close(self) -> None:
        self._fh.close()


#: ``AIEV_AUDIT_READS=FOLDER``: every ``aiev`` process records the files under ``results/`` it opens for reading
#: and the folders there it lists, into ``FOLDER/PID.json`` (tests/test_workflow.py checks them against each
#: job's declared inputs and outputs). What the process made itself (files it wrote, folders it created or
#: renamed into place, with what is inside them) is its own and not recorded. Python-level calls only: what a C
#: library opens by itself (pyarrow, safetensors) is not seen.
AUDIT_ENV = "AIEV_AUDIT_READS"


def record_reads(argv: list[str]) -> None:
    """With :data:`AUDIT_ENV` set, record this process's reads under ``./results`` (an audit hook, PEP 578)."""
    folder = os.environ.get(AUDIT_ENV)
    if not folder:
        return
    import atexit
    import sys

    root = os.path.join(os.getcwd(), "results") + os.sep
    reads: dict[str, str] = {}  # path -> "open" or "list"
    own: set[str] = set()
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def relative(path: Any) -> str | None:
        if path is None or isinstance(path, int):
            return None
        full = os.path.abspath(os.fsdecode(path)) + os.sep
        return ("results/" + full[len(root) :]).rstrip("/") if full.startswith(root) else None

    def is_own(path: str) -> bool:
        parts = path.split("/")
        return any("/".join(parts[:i]) in own for i in range(2, len(parts) + 1))

    def hook(event: str, args: tuple[Any, ...]) -> None:
        try:
            if event == "open":
                path, mode, flags = args
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    mode is None and isinstance(flags, int) and bool(flags & write_flags)
                )
                rel = relative(path)
                if rel is None:
                    return
                if writing:
                    own.add(rel)
                elif not is_own(rel):
                    reads.setdefault(rel, "open")
            elif event in ("os.listdir", "os.scandir"):
                rel = relative(args[0])
                if rel is not None and not is_own(rel):
                    reads.setdefault(rel, "list")
            elif event == "os.mkdir":  # raised before the call: a folder that exists already is not made here
                rel = relative(args[0])
                if rel is not None and not os.path.lexists(args[0]):
                    own.add(rel)
            elif event in ("tempfile.mkdtemp", "tempfile.mkstemp"):
                rel = relative(args[0])
                if rel is not None:
                    own.add(rel)
            elif event == "os.rename":  # renamed into place (or aside): the destination is its own
                rel = relative(args[1])
                if rel is not None:
                    own.add(rel)
        except Exception:  # an audit hook must never break the step it watches
            return

    try:
        stderr = os.readlink("/proc/self/fd/2")  # the job's log (every rule sends stderr there)
    except OSError:
        stderr = ""
    out = Path(folder) / f"{os.getpid()}.json"

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"argv": argv, "stderr": stderr, "cwd": os.getcwd(), "reads": dict(sorted(reads.items()))}
        out.write_text(json.dumps(record))

    sys.addaudithook(hook)
    atexit.register(save)
