"""docs/measurements.md is the rendering of benchmarks/results/ (as docs/config.md is of the schema), every record
says what made it, and every benchmark script ends with a record."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO

RESULTS = REPO / "benchmarks" / "results"
FIELDS = {"name", "script", "command", "source", "date", "machine", "commit", "goal", "met", "figures"}


def renderer():
    spec = importlib.util.spec_from_file_location("benchmarks_render", REPO / "benchmarks" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_measurements_page_equals_its_rendering():
    page = (REPO / "docs" / "measurements.md").read_text(encoding="utf-8")
    assert page == renderer().render(RESULTS), "run: make measurements"


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_each_record_names_its_command_date_machine_and_source(path):
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert set(doc) >= FIELDS, FIELDS - set(doc)
    assert doc["name"] == path.stem and doc["figures"]
    assert (REPO / doc["script"]).is_file(), doc["script"]
    assert doc["date"][:2] == "20" and isinstance(doc["machine"], dict)
    assert doc["source"] == "measured" or doc["source"].startswith("transcribed"), doc["source"]
    assert doc["met"] in (True, False, None)


def test_every_benchmark_script_ends_with_a_record():
    helpers = {"record.py", "render.py", "shared_data.py", "gpu_bench.py"}  # gpu_bench: gpu.sh's steps
    scripts = [p for p in sorted((REPO / "benchmarks").glob("*.py")) if p.name not in helpers]
    assert scripts
    for path in scripts:
        assert "from record import record" in path.read_text(encoding="utf-8"), path.name
    assert "benchmarks/record.py" in (REPO / "benchmarks" / "gpu.sh").read_text(encoding="utf-8")


def test_the_renderer_writes_a_table_per_record_with_goal_and_machine(tmp_path):
    machine = {"cpu": "CPU", "cores": 2, "memory_gib": 4.0, "kernel": "Linux 6"}
    doc = {"name": "x", "script": "benchmarks/x.py", "command": "python benchmarks/x.py --n 3", "source": "measured",
           "date": "2026-01-02", "machine": machine, "commit": "abc1234", "goal": "<= 1 s", "met": False,
           "figures": {"wall_s": 1.5, "runs": {"a": 1}}}  # fmt: skip
    (tmp_path / "x.json").write_text(json.dumps(doc))
    page = renderer().render(tmp_path)
    assert "| [x](#x) | `benchmarks/x.py` | <= 1 s | **no** | 2026-01-02 |" in page
    assert "`python benchmarks/x.py --n 3`" in page and "| machine | CPU; 2 cores; 4 GiB; Linux 6 |" in page
    assert "| wall_s | 1.5 |" in page and "| runs.a | 1 |" in page
