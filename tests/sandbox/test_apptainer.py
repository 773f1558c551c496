"""The Apptainer backend through spython, against the stand-in ``apptainer`` (tests/bin/apptainer).

The stand-in records every argv it is called with and runs ``exec``'s command under bubblewrap, so the backend's
whole path runs here: the image built and inspected through spython's client (as the sandbox_image rule does),
every run's command line composed by spython's ``execute``, the guarantees we add to it (asserted on the
recorded argv), and the run's results (exit status, output, deadline, memory limit, nothing left behind). The
recipes in containers/ are read by spython's parser. With the real binary the behaviour suite of
tests/sandbox/test_sandbox.py runs too (skipped where Apptainer is absent).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from spython.main import Client as SpythonClient
from spython.main.parse.parsers import SingularityParser
from spython.main.parse.writers import DockerWriter
from spython.utils import run_command as spython_run_command

from aiev.cli import main as aiev_main
from aiev.sandbox import Limits, SandboxError, get_sandbox
from aiev.sandbox.apptainer import IMAGE_PATH, ApptainerClient, ApptainerSandbox, build_image, recipe_labels
from aiev.sandbox.base import memory_by_cgroup, rlimit_argv, sandbox_env
from tests.sandbox.test_sandbox import procs_with, tiny_wheel

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "bin" / "apptainer"
RECIPES = sorted((REPO / "containers").glob("*.def"))
FAST = Limits(timeout_s=10, memory_mb=512, max_procs=32)


@dataclass
class Standin:
    exe: Path
    log: Path

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def execs(self) -> list[list[str]]:
        return [c for c in self.calls() if c[:1] == ["exec"]]


@pytest.fixture
def standin(tmp_path, monkeypatch) -> Standin:
    if shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed (the stand-in apptainer runs programs under it)")
    folder = tmp_path / "standin-bin"
    folder.mkdir()
    (folder / "apptainer").symlink_to(STANDIN)
    log = folder / "apptainer.argv.jsonl"
    log.touch()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return Standin(folder / "apptainer", log)


@pytest.fixture
def image(standin, tmp_path) -> Path:
    out = tmp_path / "sandbox.sif"
    build_image(REPO / "containers" / "sandbox.def", out)
    return out


@pytest.fixture
def sb(standin, image) -> ApptainerSandbox:
    return ApptainerSandbox(image=image)


# ------------------------------------------------------------------------------------- images: build, inspect


def test_build_and_inspect_go_through_spython(standin, tmp_path):
    out = tmp_path / "img.sif"
    attributes = build_image(REPO / "containers" / "sandbox.def", out)
    build, inspected = standin.calls()
    assert build == ["build", "--force", str(out), str(REPO / "containers" / "sandbox.def")]
    assert inspected[0] == "inspect" and inspected[-2:] == ["--json", str(out)]
    assert {"-l", "-d", "-t", "-H", "-e"} <= set(inspected)
    assert attributes["labels"]["org.opencontainers.image.title"] == "aiev-sandbox"
    assert attributes["deffile"] == (REPO / "containers" / "sandbox.def").read_text()
    assert "command -v prlimit" in attributes["test"]
    build_image(REPO / "containers" / "sandbox.def", out)  # --force: a rebuild over the old image works
    assert out.is_file()


def test_build_failures_raise(standin, tmp_path):
    broken = tmp_path / "broken.def"
    broken.write_text("%post\n    true\n")  # no Bootstrap header
    with pytest.raises(SandboxError, match=r"build .* failed .*no Bootstrap"):
        build_image(broken, tmp_path / "b.sif")
    assert not (tmp_path / "b.sif").exists()


def test_an_image_without_its_recipes_labels_is_refused(standin, tmp_path):
    recipe = tmp_path / "r.def"
    recipe.write_text((REPO / "containers" / "sandbox.def").read_text())
    built = tmp_path / "r.sif"
    build_image(recipe, built)
    stale = standin.exe.parent / "apptainer-stale"  # an apptainer whose build leaves the old image in place
    stale.write_text(f'#!/bin/sh\n[ "$1" = build ] && exit 0\nexec {STANDIN} "$@"\n')
    stale.chmod(0o755)
    recipe.write_text(recipe.read_text().replace("aiev-sandbox", "aiev-other"))
    with pytest.raises(SandboxError, match="lacks the labels"):  # the inspection is checked, not trusted
        build_image(recipe, built, apptainer=str(stale))


def test_the_image_rule_builds_through_the_cli(standin, tmp_path, capsys):
    out = tmp_path / "cli.sif"
    assert aiev_main(["sandbox", "image", str(REPO / "containers" / "sandbox.def"), str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["image"] == str(out) and summary["labels"]["org.opencontainers.image.title"] == "aiev-sandbox"
    assert [c[0] for c in standin.calls()] == ["build", "inspect"]
    rule = (REPO / "rules" / "sandbox.smk").read_text()
    assert "aiev sandbox image {input} {output}" in rule


# ------------------------------------------------------------------------------------- recipes, by spython's parser


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_converts_and_holds_what_the_sandbox_needs(recipe):
    parsed = SingularityParser(str(recipe)).recipe
    assert list(parsed) == ["spython-base"]  # one stage
    layer = parsed["spython-base"]
    name = recipe.stem
    base, _, tag = layer.fromHeader.partition(":")
    assert base in ("python", "debian") and tag and tag != "latest", layer.fromHeader  # a pinned base image
    labels = recipe_labels(recipe)
    assert labels["org.opencontainers.image.title"] == f"aiev-{name}"
    assert labels["org.opencontainers.image.source"] == f"containers/{recipe.name}"
    assert {"LANG=C.UTF-8", "LC_ALL=C.UTF-8"} <= set(layer.environ)
    tests = [line for line in layer.install if line.startswith("echo ") and line.endswith(">> /tests.sh")]
    assert any("command -v prlimit" in line for line in tests), "%test checks prlimit, which every run needs"
    for source, _, target in (line.partition(" ") for line in layer.files):
        assert (REPO / source).is_file(), f"%files source {source} missing"
        assert target.startswith("/opt/")
    docker = DockerWriter(parsed).convert()
    assert docker.startswith(f"FROM {layer.fromHeader} AS spython-base\n")
    assert f"LABEL org.opencontainers.image.title aiev-{name}" in docker
    assert "HEALTHCHECK /bin/bash /tests.sh" in docker


def test_sandbox_recipe_pins_its_stack():
    layer = SingularityParser(str(REPO / "containers" / "sandbox.def")).recipe["spython-base"]
    specs = [line.rstrip(" \\") for line in layer.install if "==" in line and "import" not in line]
    assert specs and all(spec.count("==") == 1 and " " not in spec for spec in specs), specs
    assert {"pip", "numpy", "pandas", "scipy"} <= {spec.split("==")[0] for spec in specs}
    assert "PYTHONDONTWRITEBYTECODE=1" in layer.environ


# ------------------------------------------------------------------------------------- the run's command line


def test_spython_cannot_express_our_guarantees():
    """Why the isolation flags are options and the runner is ours: spython drops ``contain`` and its runner
    takes no deadline."""
    client = ApptainerClient("apptainer", runner=lambda cmd: cmd)
    cmd = client.execute(image="i.sif", command=["true"], contain=True, quiet=True)
    assert cmd == ["apptainer", "exec", "i.sif", "true"]
    assert not {"timeout", "deadline"} & set(inspect.signature(spython_run_command).parameters)
    assert issubclass(ApptainerClient, type(SpythonClient))


def test_argv_is_spythons_execute_with_our_flags(standin, image, tmp_path):
    wheels, scratch, prefix = tmp_path / "wheels", tmp_path / "s", tmp_path / "p"
    for d in (wheels, scratch, prefix):
        d.mkdir()
    sb = ApptainerSandbox(image=image, find_links=wheels, probe=False)
    exe, img = str(standin.exe), str(image.resolve())
    pids = ["--pids-limit", "64"] if os.geteuid() == 0 else []
    limits = rlimit_argv(Limits())
    env_run = [f"{k}={v}" for k, v in sandbox_env(IMAGE_PATH, prefix=False).items()]
    env_pre = [f"{k}={v}" for k, v in sandbox_env(IMAGE_PATH, prefix=True).items()]
    isolation = ["--containall", "--cleanenv", "--no-home"]
    assert sb.argv(scratch, ["python3", "main.py"], Limits()) == [
        *[exe, "exec", "--bind", f"{scratch}:/sandbox"],
        *[*isolation, "--net", "--network", "none", "--writable-tmpfs", *pids, "--pwd", "/sandbox", img],
        *["/usr/bin/env", "-i", *env_run, *limits, "python3", "main.py"],
    ]
    assert sb.argv(scratch, ["python3", "m.py"], Limits(), prefix=prefix) == [
        *[exe, "exec", "--bind", f"{scratch}:/sandbox", "--bind", f"{prefix}:/opt/prefix:ro"],
        *[*isolation, "--net", "--network", "none", "--writable-tmpfs", *pids, "--pwd", "/sandbox", img],
        *["/usr/bin/env", "-i", *env_pre, *limits, "python3", "m.py"],
    ]
    install = sb.argv(scratch, ["pip"], Limits(), prefix=prefix, writable_prefix=True, network=True)
    assert install == [
        *[exe, "exec", "--bind", f"{scratch}:/sandbox", "--bind", f"{prefix}:/opt/prefix:rw"],
        *["--bind", f"{wheels.resolve()}:/opt/wheels:ro"],
        *[*isolation, "--writable-tmpfs", *pids, "--pwd", "/sandbox", img],
        *["/usr/bin/env", "-i", *env_run, *limits, "pip"],
    ]
    assert standin.execs() == []  # argv runs nothing


def test_unbindable_or_missing_paths_are_refused(standin, image, tmp_path):
    sb = ApptainerSandbox(image=image, probe=False)
    for bad in (Path("/a,b"), Path("/a:b")):
        with pytest.raises(SandboxError, match="cannot bind"):
            sb.argv(tmp_path, ["true"], Limits(), prefix=bad)
    with pytest.raises(SandboxError, match="not a directory"):  # not spython's sys.exit(1)
        sb.argv(tmp_path / "absent", ["true"], Limits())


# ------------------------------------------------------------------------------------- runs, through the stand-in


def test_run_reports_and_is_contained(sb, standin, monkeypatch):
    monkeypatch.setenv("AIEV_HOST_SECRET", "leak")
    code = (
        "import os, socket, sys\n"
        "print(os.getcwd(), sorted(os.listdir('.')), os.environ.get('AIEV_HOST_SECRET'), os.environ['HOME'])\n"
        "print([name for _, name in socket.if_nameindex()], os.listdir('/tmp'))\n"
        "print('oops', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    res = sb.run({"main.py": code, "pkg/data.txt": "1"}, ["python3", "main.py"], FAST)
    assert (res.exit_code, res.stderr, res.backend) == (3, "oops\n", "apptainer")
    assert res.stdout == "/sandbox ['main.py', 'pkg'] None /sandbox\n['lo'] []\n"
    assert not res.timed_out and not res.truncated
    run = standin.execs()[-1]
    assert {"--containall", "--cleanenv", "--no-home", "--writable-tmpfs"} <= set(run)
    assert run[run.index("--net") : run.index("--net") + 3] == ["--net", "--network", "none"]
    assert run[run.index("--pwd") + 1] == "/sandbox"
    assert run[run.index("/usr/bin/env") + 1] == "-i" and "PATH=/usr/local/bin:/usr/bin:/bin" in run
    cut = run.index("prlimit")
    assert run[cut:] == [*rlimit_argv(FAST, address_space=not memory_by_cgroup()), "python3", "main.py"]
    if os.geteuid() == 0:
        assert run[run.index("--pids-limit") + 1] == str(FAST.max_procs)
    assert standin.calls()[0][0] == "build" and standin.execs()[0][-3:] == ["python3", "-c", "pass"]  # the probe


def test_exit_statuses_and_output_cap(sb):
    assert sb.run({"m.py": "import os\nos.abort()"}, ["python3", "m.py"], FAST).exit_code == -6
    limits = Limits(timeout_s=10, max_output_bytes=1000)
    res = sb.run({"m.py": "print('x' * 100000)"}, ["python3", "m.py"], limits)
    assert res.exit_code == 0 and res.truncated and res.stdout == "x" * 1000


def test_memory_limit_holds(sb, standin):
    limits = Limits(timeout_s=20, memory_mb=256)
    res = sb.run({"m.py": "x = bytearray(600 << 20)\nprint('allocated')"}, ["python3", "m.py"], limits)
    assert res.exit_code != 0 and "allocated" not in res.stdout, res
    if memory_by_cgroup():
        assert res.oom_killed  # the run's cgroup, which holds apptainer and all it starts
        assert not any(a.startswith("--as=") for a in standin.execs()[-1])
    else:
        assert "MemoryError" in res.stderr and f"--as={256 << 20}:{256 << 20}" in standin.execs()[-1]


def test_deadline_kills_everything_and_scratch_is_removed(sb, tmp_path, monkeypatch):
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_parent))
    marker = f"aievleft{uuid.uuid4().hex[:8]}"
    code = (
        "import os, subprocess, time\n"
        f"subprocess.Popen(['python3', '-c', 'import time; time.sleep(60)  # {marker}'], start_new_session=True)\n"
        "time.sleep(60)\n"
    )
    res = sb.run({"main.py": code}, ["python3", "main.py"], Limits(timeout_s=2))
    assert res.timed_out and res.exit_code is None and res.duration_s < 10
    assert procs_with(marker) == []
    assert list(scratch_parent.iterdir()) == []


def test_install_offline_into_a_prefix_then_read_only(standin, image, tmp_path):
    wheels = tmp_path / "wheels"
    tiny_wheel(wheels)
    sb = ApptainerSandbox(image=image, find_links=wheels)
    prefix = tmp_path / "prefix"
    res = sb.install(["aievtinypkg==1.0"], prefix, Limits(timeout_s=120))
    assert res.exit_code == 0, res.stdout + res.stderr
    install = standin.execs()[-1]
    assert f"{prefix}:/opt/prefix:rw" in install and "--no-index" in install and "--net" in install
    use = "import aievtinypkg\nprint(aievtinypkg.plus(2, 3))\nopen('/opt/prefix/x', 'w')\n"
    res = sb.run({"m.py": use}, ["python3", "m.py"], FAST, prefix=prefix)
    assert res.stdout == "5\n" and "Read-only file system" in res.stderr
    assert f"{prefix}:/opt/prefix:ro" in standin.execs()[-1]


def test_get_sandbox_picks_apptainer_from_path(standin, image):
    sb = get_sandbox("auto", image=image)
    assert isinstance(sb, ApptainerSandbox) and sb.apptainer == str(standin.exe)


def test_cli_runs_a_file_through_the_standin(standin, image, tmp_path):
    prog = tmp_path / "hello.py"
    prog.write_text("print('hi')\n")
    out = subprocess.run(
        [sys.executable, "-m", "aiev", "sandbox", "run", str(prog), "--backend", "apptainer", "--image", str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stdout"] == "hi\n"
