from __future__ import annotations

import json
from argparse import Namespace

import pytest

from aiev.seeds import batches
from aiev.seeds.steps import STEPS
from aiev.steps import run_step

BATCHES = next(s for s in STEPS if s.name == "batches")


def recs(n):
    return [{"id": f"s:{i}", "source": "s", "kind": "snippet", "text": str(i), "provenance": {}} for i in range(n)]


def test_partition_sizes_cover_everything_once():
    out = batches.partition(recs(105), 20, shuffle=True, seed=1)
    assert [len(b) for b in out] == [20, 20, 20, 20, 20, 5]
    ids = [r["id"] for b in out for r in b]
    assert sorted(ids) == sorted(r["id"] for r in recs(105)) and len(set(ids)) == 105


def test_partition_is_deterministic_and_seeded():
    a = batches.partition(recs(50), 10, seed=7)
    assert a == batches.partition(recs(50), 10, seed=7)
    assert a != batches.partition(recs(50), 10, seed=8)
    assert batches.partition(recs(5), 2, shuffle=False) == [recs(5)[0:2], recs(5)[2:4], recs(5)[4:]]


def test_max_batches_and_bad_size():
    assert len(batches.partition(recs(50), 10, max_batches=2)) == 2
    with pytest.raises(ValueError):
        batches.partition(recs(5), 0)


def test_run_replaces_directory_atomically(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs(25)))
    sec = {"batch_size": 10, "shuffle": False, "seed": 0, "max_batches": None}
    out = tmp_path / "batches"
    run_step(BATCHES, {"batches": sec}, Namespace(input=src, outdir=out, report=tmp_path / "r.json"))
    assert batches.list_batches(out) == [0, 1, 2]
    run_step(
        BATCHES, {"batches": {**sec, "batch_size": 20}}, Namespace(input=src, outdir=out, report=tmp_path / "r.json")
    )
    assert batches.list_batches(out) == [0, 1]  # stale batch_2 gone
    assert json.loads((tmp_path / "r.json").read_text())["sizes"] == [20, 5]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".batches")]


def test_outputs_are_readable_by_the_group_like_plain_files(tmp_path):
    """Atomic writes go through owner-only temporary files; what lands must carry the umask's permissions (a
    shared project directory on a cluster)."""
    import os
    import stat

    from aiev.io import atomic_open

    old = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "f.json") as fh:
            fh.write("{}")
        assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644
    finally:
        os.umask(old)
