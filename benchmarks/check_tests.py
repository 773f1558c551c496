"""What `aiev check-tests` costs per entry, against one plain execution of the same entry, side by side.

    python benchmarks/check_tests.py [--entries 24] [--mutants 10] [--rounds 3]

The entries are built here: small functions (arithmetic, strings, lists, a class) with assert or unittest tests,
each with at least 8 mutation sites. Per round and entry: one plain sandbox execution of ``solution + tests``
(what the dialogue's pass costs: :func:`aiev.interpreter.run_program`) and the whole check (static facts, the
program counted, every mutant and the examples, in one sandbox execution: :meth:`aiev.curate.checks.Checker.check`),
alternating. Prints the medians and their ratio. Goal: <= 2x one execution with >= 8 mutants.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from record import record

from aiev.config import load_config
from aiev.curate.checks import Checker
from aiev.interpreter import run_program
from aiev.sandbox import Limits, get_sandbox


def _entry(problem: str, solution: list[str], tests: list[str]) -> tuple[str, str, str]:
    return problem, "\n".join(solution) + "\n", "\n".join(tests) + "\n"


ENTRIES = [
    _entry("Write `clamp(x, lo, hi)`. For example, `clamp(5, 0, 3)` returns `3`.",
           ["def clamp(x, lo, hi):", "    if x < lo:", "        return lo", "    if x > hi:", "        return hi",
            "    return x"],
           ["assert clamp(5, 0, 3) == 3", "assert clamp(-1, 0, 3) == 0", "assert clamp(2, 0, 3) == 2",
            "assert clamp(0, 0, 3) == 0"]),
    _entry("Write `mean(xs)` of a non-empty list. For example, `mean([1, 2, 3])` returns `2.0`.",
           ["def mean(xs):", "    total = 0", "    for x in xs:", "        total = total + x",
            "    return total / len(xs)"],
           ["import unittest", "", "class T(unittest.TestCase):", "    def test_mean(self):",
            "        self.assertEqual(mean([1, 2, 3]), 2.0)", "        self.assertEqual(mean([4]), 4)",
            "        self.assertEqual(mean([-1, 1]), 0)", "", "unittest.main()"]),
    _entry("Write `count_vowels(s)`. For example, `count_vowels('banana')` returns `3`.",
           ["def count_vowels(s):", "    n = 0", "    for c in s.lower():", "        if c in 'aeiou':",
            "            n += 1", "    return n"],
           ["assert count_vowels('banana') == 3", "assert count_vowels('') == 0", "assert count_vowels('XYZ') == 0",
            "assert count_vowels('AEIOU') == 5"]),
    _entry("Write `Stack` with `push(x)`, `pop()` and `size()`.",
           ["class Stack:", "    def __init__(self):", "        self.items = []", "", "    def push(self, x):",
            "        self.items.append(x)", "", "    def pop(self):", "        if len(self.items) == 0:",
            "            return None", "        return self.items.pop()", "", "    def size(self):",
            "        return len(self.items) + 0"],
           ["s = Stack()", "assert s.pop() is None", "s.push(1)", "s.push(2)", "assert s.size() == 2",
            "assert s.pop() == 2", "assert s.size() == 1"]),
    _entry("Write `fizz(n)` returning 'Fizz' for multiples of 3, 'Buzz' of 5, 'FizzBuzz' of both, else str(n). "
           "For example, `fizz(15)` returns `'FizzBuzz'`.",
           ["def fizz(n):", "    if n % 15 == 0:", "        return 'FizzBuzz'", "    if n % 3 == 0:",
            "        return 'Fizz'", "    if n % 5 == 0:", "        return 'Buzz'", "    return str(n)"],
           ["assert fizz(15) == 'FizzBuzz'", "assert fizz(9) == 'Fizz'", "assert fizz(10) == 'Buzz'",
            "assert fizz(7) == '7'"]),
    _entry("Write `is_leap(year)`. For example, `is_leap(2000)` returns `True`.",
           ["def is_leap(year):", "    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)"],
           ["assert is_leap(2000)", "assert not is_leap(1900)", "assert is_leap(2024)", "assert not is_leap(2023)"]),
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=24)
    ap.add_argument("--mutants", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sb = get_sandbox("auto")
    section = load_config({})["check_tests"] | {"mutants": args.mutants}
    checker = Checker(section, sb, Limits(timeout_s=120))
    limits = Limits(timeout_s=30)
    entries = [
        {"id": f"b{i}", "problem": p, "solution": s, "tests": t, "messages": [], "passed": True}
        for i, (p, s, t) in enumerate(ENTRIES * (args.entries // len(ENTRIES) + 1))
    ][: args.entries]
    plain_s, check_s, mutants, killed = [], [], [], 0
    run_program(sb, entries[0]["solution"] + "\n\n" + entries[0]["tests"], limits, None)  # warm caches
    for _ in range(args.rounds):
        for e in entries:
            t0 = time.perf_counter()
            plain = run_program(sb, e["solution"] + "\n\n" + e["tests"], limits, None)
            plain_s.append(time.perf_counter() - t0)
            assert plain["exit_code"] == 0, plain
            t0 = time.perf_counter()
            got = checker.check(e)
            check_s.append(time.perf_counter() - t0)
            mutants.append(got["quality"]["mutants"])
            killed += got["quality"]["killed"]
    p, c = statistics.median(plain_s), statistics.median(check_s)
    print(f"{len(entries)} entries x {args.rounds} rounds, backend {sb.name}; mutants per entry: min {min(mutants)}, "
          f"median {statistics.median(mutants):.0f}; {killed} of {sum(mutants)} killed")  # fmt: skip
    print(f"one plain execution   median {p * 1000:7.1f} ms")
    print(f"the whole check       median {c * 1000:7.1f} ms   = {c / p:.2f}x one execution (goal <= 2x, >= 8 mutants)")
    figures = {"entries": len(entries), "rounds": args.rounds, "backend": sb.name, "mutants_min": min(mutants),
               "mutants_median": statistics.median(mutants), "mutants": sum(mutants), "killed": killed,
               "plain_ms": round(p * 1000, 1), "check_ms": round(c * 1000, 1), "ratio": round(c / p, 2)}  # fmt: skip
    record("check_tests", figures, goal="<= 2x one plain execution with >= 8 mutants",
           met=c / p <= 2 and min(mutants) >= 8)  # fmt: skip


if __name__ == "__main__":
    main()
