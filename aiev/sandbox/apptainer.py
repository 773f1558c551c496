"""The Apptainer backend (HPC): the image from ``containers/sandbox.def``, fully contained, no network.

Apptainer is driven through spython (the Apptainer/Singularity Python API): its client's ``execute`` composes
every run's command line, ``build`` and ``inspect`` make and check the images (:func:`build_image`, the
workflow's ``sandbox_image`` rule). What a run comes to::

    apptainer exec --bind SCRATCH:/sandbox [--bind PREFIX:/opt/prefix:ro] --containall --cleanenv --no-home
        --net --network none --writable-tmpfs [--pids-limit N] --pwd /sandbox IMAGE
        /usr/bin/env -i K=V... prlimit --nproc=N --as=B --cpu=S:H --core=0 -- COMMAND...

Where spython cannot express one of our guarantees, the pieces are ours, each said where it is added:

* the isolation flags go in ``execute``'s ``options``: spython has no parameter for ``--cleanenv``,
  ``--no-home``, the network, ``--writable-tmpfs``, ``--pids-limit`` or ``--pwd``, and its ``contain`` parameter
  is accepted and dropped (it never reaches the command line), so ``--containall`` is passed as an option too;
* the command line spython composes is run by the runner every backend shares (:func:`aiev.sandbox.base.execute`),
  not by spython's own (``Popen.communicate``): that one has no deadline, no output cap and no tracking, so a
  program that hangs, floods its output or leaves processes behind would hang or flood this process, and the
  memory cgroup of the run (which the runner opens before the spawn) would not hold it.

``env -i`` sets the program's whole environment whatever the site's apptainer.conf adds; ``prlimit`` runs
inside the container's user namespace, where RLIMIT_NPROC counts the container's processes only.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from spython.main import Client as _SpythonClient
from spython.main.parse.parsers import SingularityParser

from aiev.sandbox.base import (
    INSTALL_DISK_MB,
    PREFIX,
    SCRATCH,
    WHEELS,
    ExecResult,
    Limits,
    Sandbox,
    SandboxError,
    checked_prefix,
    disk_cap_exceeded,
    execute,
    kill_tree,
    memory_by_cgroup,
    prefix_size,
    rlimit_argv,
    sandbox_env,
)

#: PATH inside the image (python:3.11-slim keeps python3 in /usr/local/bin).
IMAGE_PATH = ["/usr/local/bin", "/usr/bin", "/bin"]


class ApptainerClient(type(_SpythonClient)):  # type: ignore[misc]
    """spython's client, on the ``apptainer`` binary given (spython itself always calls ``singularity``).

    ``runner``: what runs an ``exec`` command line spython composed (a run's deadline, caps and tracking); without
    it (build, inspect) spython runs the command itself, and a failure raises :class:`SandboxError` instead of
    being returned as spython's dict.
    """

    def __init__(self, apptainer: str, runner: Callable[[list[str]], Any] | None = None) -> None:
        super().__init__()
        self.quiet = True
        self.debug = False
        self.apptainer = apptainer
        self.runner = runner

    def _init_command(self, action: str | list[str], flags: list[str] | None = None) -> list[str]:
        return [self.apptainer, *(flags or []), *([action] if isinstance(action, str) else action)]

    def _run_command(self, cmd: list[str], **kwargs: Any) -> Any:
        if self.runner is not None:
            return self.runner(cmd)
        kwargs["return_result"] = True
        result = super()._run_command(cmd, **kwargs)
        message = result["message"] if isinstance(result["message"], str) else "".join(result["message"])
        print(message, end="", file=sys.stderr)  # apptainer's own log (stdout went straight through)
        if result["return_code"] != 0:
            raise SandboxError(f"{' '.join(cmd)} failed (exit {result['return_code']}): {message[-4000:]}")
        return result


def recipe_labels(definition: str | Path) -> dict[str, str]:
    """The ``%labels`` of an Apptainer definition file, read by spython's parser."""
    recipe = SingularityParser(str(definition)).recipe
    labels: dict[str, str] = {}
    for layer in recipe.values():
        for line in layer.labels:
            key, _, value = line.partition(" ")
            labels[key] = value.strip()
    return labels


def build_image(definition: str | Path, image: str | Path, *, apptainer: str = "apptainer") -> dict[str, Any]:
    """``apptainer build --force IMAGE DEFINITION`` through spython, then the image inspected through spython.

    Returns the inspection (labels, definition file, environment, test, help). Raises :class:`SandboxError`
    when the build fails or the image does not carry the labels its definition file declares."""
    found = shutil.which(apptainer)
    if found is None:
        raise SandboxError(f"{apptainer} not found on PATH: the sandbox images are built with Apptainer")
    client = ApptainerClient(found)
    client.build(recipe=str(definition), image=str(image), sudo=False, force=True, quiet=True)
    if not Path(image).is_file():
        raise SandboxError(f"{found} build reported success but wrote no {image}")
    inspected = client.inspect(str(image), quiet=True)
    if "attributes" not in inspected:  # spython returns the failed command's dict
        raise SandboxError(f"{found} inspect {image} failed: {inspected.get('message')}")
    attributes = inspected["attributes"]
    labels = attributes.get("labels") or {}
    wrong = {k: v for k, v in recipe_labels(definition).items() if labels.get(k) != v}
    if wrong:
        raise SandboxError(f"image {image} lacks the labels {definition} declares: {wrong} (has {labels})")
    return attributes


class ApptainerSandbox(Sandbox):
    name = "apptainer"

    def __init__(
        self,
        *,
        image: str | Path,
        install_network: bool = False,
        install_disk_mb: int = INSTALL_DISK_MB,
        index_url: str | None = None,
        find_links: str | Path | None = None,
        apptainer: str = "apptainer",
        probe: bool = True,
    ) -> None:
        super().__init__(
            install_network=install_network, install_disk_mb=install_disk_mb, index_url=index_url, find_links=find_links
        )
        found = shutil.which(apptainer)
        if found is None:
            raise SandboxError("apptainer not found on PATH (use backend: bwrap, or install apptainer)")
        self.apptainer = found
        self.image = Path(image).resolve()
        if probe and not self.image.is_file():
            raise SandboxError(
                f"apptainer image {self.image} not found: build it with "
                f"`apptainer build {image} containers/sandbox.def` (the workflow's sandbox image rule does), "
                "or choose backend: bwrap"
            )
        if probe:
            res = self.run({}, ["python3", "-c", "pass"], Limits(timeout_s=120))
            if res.exit_code != 0:
                raise SandboxError(f"a trivial apptainer run failed (exit {res.exit_code}): {res.stderr[-2000:]}")

    def argv(
        self,
        scratch: Path,
        command: Sequence[str],
        limits: Limits,
        *,
        prefix: Path | None = None,
        writable_prefix: bool = False,
        network: bool = False,
        address_space: bool = True,
    ) -> list[str]:
        """The exact apptainer command line, as spython's ``execute`` composes it (nothing is run)."""
        return self._execute(
            lambda cmd: cmd,
            scratch,
            command,
            limits,
            prefix=prefix,
            writable_prefix=writable_prefix,
            network=network,
            address_space=address_space,
        )

    def _execute(
        self,
        runner: Callable[[list[str]], Any],
        scratch: Path,
        command: Sequence[str],
        limits: Limits,
        *,
        prefix: Path | None,
        writable_prefix: bool,
        network: bool,
        address_space: bool,
    ) -> Any:
        """spython's ``execute`` of ``command`` in the image, its command line handed to ``runner``."""
        for path in (scratch, prefix, self.find_links):
            if path is not None and ("," in str(path) or ":" in str(path)):
                raise SandboxError(f"apptainer cannot bind {path}: ',' and ':' separate its bind specs")
        binds = [f"{scratch}:{SCRATCH}"]
        if prefix is not None:
            binds.append(f"{prefix}:{PREFIX}:{'rw' if writable_prefix else 'ro'}")
        if writable_prefix and self.find_links is not None:
            binds.append(f"{self.find_links}:{WHEELS}:ro")
        for bind in binds:  # checked here: spython's bind list calls sys.exit(1) on a missing source
            if not os.path.isdir(bind.split(":")[0]):
                raise SandboxError(f"cannot bind {bind.split(':')[0]}: not a directory")
        # spython's `contain` parameter never reaches the command line, and it has no parameter for the rest:
        # every isolation flag is passed as an option (tests/sandbox/test_apptainer.py checks the result).
        options = ["--containall", "--cleanenv", "--no-home"]
        if not network:
            options += ["--net", "--network", "none"]
        options.append("--writable-tmpfs")
        if os.geteuid() == 0:
            options += ["--pids-limit", str(limits.max_procs)]  # RLIMIT_NPROC does not bind uid 0
        options += ["--pwd", SCRATCH]
        env = sandbox_env(IMAGE_PATH, prefix=prefix is not None and not writable_prefix)
        inner = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items())]
        inner += [*rlimit_argv(limits, address_space=address_space), *command]
        client = ApptainerClient(self.apptainer, runner)
        return client.execute(image=str(self.image), command=inner, bind=binds, options=options, quiet=True)

    def _runner(self, limits: Limits) -> Callable[[list[str]], ExecResult]:
        """aiev's runner, not spython's (its ``Popen.communicate`` has no deadline, output cap or tracking)."""
        return lambda cmd: execute(cmd, limits, backend=self.name, kill=kill_tree)

    def _run(
        self, entries: list[tuple[PurePosixPath, bytes]], command: list[str], limits: Limits, prefix: Path | None
    ) -> ExecResult:
        with tempfile.TemporaryDirectory(prefix="aiev-sbx-") as tmp:
            scratch = Path(tmp)
            for path, content in entries:
                target = scratch.joinpath(*path.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            return self._execute(
                self._runner(limits),
                scratch,
                command,
                limits,
                prefix=prefix,
                writable_prefix=False,
                network=False,
                address_space=not memory_by_cgroup(),
            )

    def install(self, specs: Sequence[str], prefix: str | Path, limits: Limits) -> ExecResult:
        argv = self.install_command(specs)
        prefix_path = checked_prefix(prefix, create=True)
        with tempfile.TemporaryDirectory(prefix="aiev-sbx-") as tmp:
            res = self._execute(
                self._runner(limits),
                Path(tmp),
                argv,
                limits,
                prefix=prefix_path,
                writable_prefix=True,
                network=self.install_network,
                address_space=not memory_by_cgroup(),
            )
        # Apptainer binds the prefix itself: the cap is checked after the install (not a hard cap while pip runs).
        if res.exit_code == 0 and prefix_size(prefix_path) > self.install_disk_mb << 20:
            for entry in list(prefix_path.iterdir()):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            res.exit_code = 1
            res.stderr += "\n[Errno 28] No space left on device"
        return disk_cap_exceeded(res, self.install_disk_mb)
