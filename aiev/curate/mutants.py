"""Mutants of a solution: small faults the tests should catch (``aiev check-tests``, docs/check-tests.md).

Each mutant changes one place of the solution's syntax tree:

- ``operator``: ``+`` to ``-`` or ``*``, ``-`` to ``+``, ``*`` to ``//`` or ``+``, ``/`` to ``*`` or ``//`` (and
  ``//``, ``%``, ``**``; in ``x += y`` too), ``and``/``or``, unary ``-`` and ``not`` dropped;
- ``comparison``: ``<`` to ``<=`` or ``>=`` (``>``, ``<=``, ``>=`` alike), ``==``/``!=``, ``in``/``not in``,
  ``is``/``is not``;
- ``constant``: an integer ``n`` to ``n + 1`` or ``n - 1`` (0 to 1, 1 to 0), ``True``/``False``, a non-empty
  string to ``""``;
- ``return``: a returned value to ``None``;
- stand-ins for the function the tests exercise: ``return None`` and ``return`` its first argument.

The sites are enumerated in source order; ``mutants(solution, n, seed)`` keeps the two stand-ins and a sample of
the rest, spread over the kinds (deterministic for a seed). Code the tests never reach still yields mutants:
they survive, which is what a mutation score is meant to show.
"""

from __future__ import annotations

import ast
import copy
import random
from collections.abc import Iterator
from dataclasses import dataclass

_BINOP_SWAP: dict[type, type] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
}  # fmt: skip
_CMP_SWAP: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}  # fmt: skip
_OP_WORDS: dict[type, str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
    ast.And: "and", ast.Or: "or", ast.Not: "not", ast.USub: "unary -", ast.UAdd: "unary +", ast.Lt: "<",
    ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
    ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
}  # fmt: skip
#: The second mutant of a site: the other boundary (``<`` to ``>=``), the other operator (``+`` to ``*``).
_CMP_SECOND: dict[type, type] = {ast.Lt: ast.GtE, ast.LtE: ast.Gt, ast.Gt: ast.LtE, ast.GtE: ast.Lt}
_BINOP_SECOND: dict[type, type] = {ast.Add: ast.Mult, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.Div: ast.FloorDiv}


@dataclass(frozen=True)
class Mutant:
    kind: str  # operator | comparison | constant | return | stand-in
    line: int
    what: str  # e.g. "+ -> -"
    source: str


def _sites(tree: ast.AST) -> Iterator[tuple[str, ast.AST, int | None, int]]:
    """(kind, node, index, variant) of every mutation, in a stable order: a site's second variant (another
    operator, the other boundary, ``n - 1``) where it has one."""
    for node in ast.walk(tree):
        if _is_operator(node):
            yield "operator", node, None, 0
            if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _BINOP_SECOND:
                yield "operator", node, None, 1
        elif isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _CMP_SWAP:
                    yield "comparison", node, i, 0
                if type(op) in _CMP_SECOND:
                    yield "comparison", node, i, 1
        elif isinstance(node, ast.Constant) and not isinstance(node.value, bytes | type(None) | type(...)):
            if isinstance(node.value, bool | int) or (isinstance(node.value, str) and node.value):
                yield "constant", node, None, 0
            if isinstance(node.value, int) and not isinstance(node.value, bool) and node.value not in (0, 1):
                yield "constant", node, None, 1
        elif isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value):
            yield "return", node, None, 0


def _is_operator(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp | ast.AugAssign):
        return type(node.op) in _BINOP_SWAP
    return isinstance(node, ast.BoolOp) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub))


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of docstring constants (never mutated: they change nothing)."""
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out.add(id(value))
    return out


def _apply(kind: str, node: ast.AST, index: int | None, variant: int = 0) -> str:
    """Change ``node`` in place; what changed, in words."""
    if isinstance(node, ast.BinOp | ast.AugAssign):  # ``x += 1`` as ``x + 1``
        old = node.op
        node.op = (_BINOP_SECOND if variant else _BINOP_SWAP)[type(old)]()
        return f"{_op(old)} -> {_op(node.op)}"
    if isinstance(node, ast.BoolOp):
        old = node.op
        node.op = ast.Or() if isinstance(old, ast.And) else ast.And()
        return f"{_op(old)} -> {_op(node.op)}"
    if isinstance(node, ast.UnaryOp):
        word = _op(node.op)
        node.op = ast.UAdd()  # `+x`: the operand as it is (for `not x`, `+x` changes truthiness tests too)
        return f"{word} dropped"
    if isinstance(node, ast.Compare):
        assert index is not None
        old = node.ops[index]
        node.ops[index] = (_CMP_SECOND if variant else _CMP_SWAP)[type(old)]()
        return f"{_op(old)} -> {_op(node.ops[index])}"
    if isinstance(node, ast.Constant):
        old = node.value
        if isinstance(old, bool):
            node.value = not old
        elif isinstance(old, int):
            node.value = old - 1 if variant else (0 if old == 1 else old + 1)
        else:
            node.value = ""
        return f"{old!r} -> {node.value!r}"[:80]
    assert isinstance(node, ast.Return)
    node.value = ast.Constant(None)
    return "return None"


def _op(op: ast.AST) -> str:
    return _OP_WORDS.get(type(op), type(op).__name__)


def _stand_ins(tree: ast.Module, target: str | None) -> list[tuple[str, ast.Module]]:
    """``return None`` and ``return <first argument>`` as the body of the function under test."""
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    # a class-only solution: its public methods (after ``self``)
    methods = [m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body
               if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef) and not m.name.startswith("_")]  # fmt: skip
    pool = funcs or methods
    func = next((f for f in pool if f.name == target), pool[0] if pool else None)
    if func is None:
        return []
    path = next(i for i, n in enumerate(ast.walk(tree)) if n is func)
    out = []
    for what, value in (("return None", ast.Constant(None)), ("return the first argument", None)):
        args = func.args.posonlyargs + func.args.args
        if not funcs:
            args = args[1:]
        if value is None:
            if not args:
                continue
            value = ast.Name(args[0].arg, ast.Load())
        clone = copy.deepcopy(tree)
        twin = list(ast.walk(clone))[path]
        assert isinstance(twin, ast.FunctionDef | ast.AsyncFunctionDef)
        twin.body = [ast.Return(value)]
        out.append((f"{func.name}: {what}", clone))
    return out


def mutants(solution: str, n: int = 10, seed: str = "", target: str | None = None) -> list[Mutant]:
    """Up to ``n`` mutants of ``solution`` (the stand-ins for ``target``, or the first function, first)."""
    try:
        tree = ast.parse(solution)
    except SyntaxError:
        return []
    out: list[Mutant] = []
    seen = {ast.unparse(tree)}
    for what, clone in _stand_ins(tree, target):
        text = ast.unparse(ast.fix_missing_locations(clone))
        if text not in seen:
            seen.add(text)
            out.append(Mutant("stand-in", 0, what, text))
    skip = _docstrings(tree)
    sites = [(k, i) for i, (k, node, _, _) in enumerate(_sites(tree)) if id(node) not in skip]
    rng = random.Random(seed)
    by_kind: dict[str, list[int]] = {}
    for kind, i in sites:
        by_kind.setdefault(kind, []).append(i)
    for pool in by_kind.values():
        rng.shuffle(pool)
    order: list[int] = []  # round robin over the kinds: operators, comparisons, constants, returns
    while any(by_kind.values()):
        for kind in ("operator", "comparison", "constant", "return"):
            if by_kind.get(kind):
                order.append(by_kind[kind].pop())
    for i in order:
        if len(out) >= n:
            break
        clone = copy.deepcopy(tree)
        kind, node, index, variant = list(_sites(clone))[i]
        what = _apply(kind, node, index, variant)
        try:
            text = ast.unparse(ast.fix_missing_locations(clone))
        except (ValueError, TypeError, AttributeError):
            continue
        if text in seen:
            continue
        seen.add(text)
        out.append(Mutant(kind, getattr(node, "lineno", 0), what, text))
    return out[:n]
