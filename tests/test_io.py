"""aiev.io's read audit: what a process reads under results/ is recorded, what it made itself is not."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_read_audit_records_reads_and_listings_but_not_what_the_process_made(tmp_path):
    (tmp_path / "results" / "batch_0").mkdir(parents=True)
    (tmp_path / "results" / "batch_0" / "in.json").write_text("{}")
    (tmp_path / "results" / "other.txt").write_text("x")
    (tmp_path / "outside.txt").write_text("x")
    program = textwrap.dedent("""
        import os, sys
        from pathlib import Path
        from aiev.io import atomic_dir, record_reads, write_json
        record_reads(["aiev", "test"])
        Path("results/batch_0/in.json").read_text()           # a read
        Path("outside.txt").read_text()                        # not under results/
        sorted(Path("results").iterdir())                      # a listing
        Path("results/batch_0").mkdir(parents=True, exist_ok=True)  # exists: not made here
        write_json("results/batch_0/out.json", {"a": 1})      # written, then read back: its own
        Path("results/batch_0/out.json").read_text()
        with atomic_dir("results/made") as d:                  # made, filled and renamed into place: its own
            (d / "f.txt").write_text("y")
        Path("results/made/f.txt").read_text()
        os.listdir("results/made")
        print("done", file=sys.stderr)
    """)
    audit = tmp_path / "audit"
    env = {"AIEV_AUDIT_READS": str(audit), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(p.read_text()) for p in audit.glob("*.json")]
    assert record["argv"] == ["aiev", "test"]
    assert record["reads"] == {"results/batch_0/in.json": "open", "results": "list"}


def test_the_progress_store_resumes_what_counts_and_drops_a_torn_line(tmp_path):
    from aiev.io import ProgressStore

    path = tmp_path / "state" / "results.jsonl"
    store = ProgressStore(path, key="id", keep=lambda row: row.get("fingerprint") == "a")
    assert store.done == {} and path.parent.is_dir()
    store.add({"id": "t1", "fingerprint": "a", "passed": True})
    store.add({"id": "t2", "fingerprint": "a", "passed": False})
    store.close()
    with path.open("a") as fh:  # an earlier run with other settings, and a line cut by kill -9
        fh.write('{"id": "t3", "fingerprint": "b"}\n{"id": "t4", "finger')
    again = ProgressStore(path, key="id", keep=lambda row: row.get("fingerprint") == "a")
    assert sorted(again.done) == ["t1", "t2"]  # other settings do not count; the torn line is gone
    again.add({"id": "t4", "fingerprint": "a"})
    again.close()
    lines = path.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["t1", "t2", "t4"]  # rewritten whole, then appended
    assert sorted(ProgressStore(path, key="id").done) == ["t1", "t2", "t4"]
