"""Code-interpreter SFT records from passing dialogues (paper section 4.1, Fig. 5).

The questioner's messages (the problem, then each plain-language diagnosis) are user turns. Each programmer
answer is an assistant turn and the execution result that follows it joins that turn. In assistant turns,
the blocks that ran (the shared parser's :mod:`aiev.codeblocks`, the same blocks the dialogue executed) are
wrapped: bash blocks (``pip install``) in ``<|bash_start|>...<|bash_end|>``, Python blocks in
``<|code_start|>...<|code_end|>`` (the fence itself is kept inside); blocks of other languages, which never
run, stay plain text. Results are placed where a code
interpreter would insert them: the install result after the last bash block, the program's result after the
last code block. Each message carries ``segments``: the trainer tokenizes them in order and computes the
loss on ``train: true`` segments only (the programmer's text); user turns and execution results are context.
docs/curation.md documents the record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiev.interpreter import DEFAULT_TOKENS, TOKEN_KEYS, executable_blocks, install_text, token_kind, wrap_answer
from aiev.io import SkipLog, read_jsonl, write_json, write_jsonl
from aiev.records import record_errors

log = logging.getLogger("aiev.format")

__all__ = ["DEFAULT_TOKENS", "TOKEN_KEYS", "assistant_turn", "format_entry", "format_file", "run"]


class FormatError(ValueError):
    """A passing entry whose messages cannot be laid out as user/assistant turns."""


@dataclass
class Turn:
    role: str
    segments: list[dict[str, Any]]

    def add(self, text: str, train: bool) -> None:
        if not text:
            return
        if self.segments and self.segments[-1]["train"] == train:
            self.segments[-1]["text"] += text
        else:
            self.segments.append({"text": text, "train": train})

    def record(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "content": "".join(s["text"] for s in self.segments),
            "segments": self.segments,
        }


def assistant_turn(
    answer: str, execution: dict[str, Any] | None, tokens: dict[str, str], counts: dict[str, int] | None = None
) -> Turn:
    """One programmer answer with its blocks wrapped, and its execution result (masked) inserted."""
    kinds = [token_kind(b) for b in executable_blocks(answer)]  # what ran, nothing else
    last = {kind: max((i for i, k in enumerate(kinds) if k == kind), default=None) for kind in ("bash", "code")}
    outputs: dict[int | None, list[str]] = {}
    if execution is not None:
        install = execution.get("install")
        ran = install is None or install.get("exit_code") == 0
        if install is not None:
            text = install_text(install) if ran else execution["content"]
            outputs.setdefault(last["bash"], []).append(text)
        if ran:
            outputs.setdefault(last["code"], []).append(execution["content"])
    turn = Turn("assistant", [])
    for text, train in wrap_answer(answer, tokens, outputs):
        turn.add(text, train)
    if counts is not None:
        for kind in kinds:
            counts[kind] += 1
    return turn


def format_entry(entry: dict[str, Any], tokens: dict[str, str], counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The SFT record of one passing entry."""
    msgs = [m for m in entry["messages"] if m["role"] != "system"]
    turns: list[Turn] = []
    i = 0
    while i < len(msgs):
        msg = msgs[i]
        if msg["role"] == "user":
            if turns and turns[-1].role == "user":
                turns[-1].add("\n\n", False)
            else:
                turns.append(Turn("user", []))
            turns[-1].add(msg["content"], False)
        elif msg["role"] == "assistant":
            nxt = msgs[i + 1] if i + 1 < len(msgs) and msgs[i + 1]["role"] == "execution" else None
            turn = assistant_turn(msg["content"], nxt, tokens, counts)
            if turns and turns[-1].role == "assistant":
                turns[-1].add("\n\n", True)
                for seg in turn.segments:
                    turns[-1].add(seg["text"], seg["train"])
            else:
                turns.append(turn)
            if nxt is not None:
                i += 1
        else:
            raise FormatError(f"message {i}: an execution result without a programmer answer before it")
        i += 1
    if not turns or turns[0].role != "user" or turns[-1].role != "assistant":
        raise FormatError("the dialogue must start with the questioner and end with the programmer")
    return {
        "id": entry["id"],
        "seed_id": entry["seed_id"],
        "batch": entry.get("batch"),
        "stage": entry["stage"],
        "model": entry["model"],
        "rounds": entry["rounds"],
        "special_tokens": [tokens[k] for k in TOKEN_KEYS],
        "messages": [t.record() for t in turns],
    }


def _token_in_text(entry: dict[str, Any], tokens: dict[str, str]) -> str | None:
    for msg in entry["messages"]:
        for tok in tokens.values():
            if tok in msg["content"]:
                return tok
    return None


def run(section: dict[str, Any], paths: Any) -> dict[str, Any]:
    """The ``format`` step, with the ``format`` section (its ``tokens``; ``paths``: ``input``, ``output``)."""
    return format_file(paths.input, paths.output, section["tokens"])


def format_file(
    input_path: str | Path,
    output: str | Path,
    tokens: dict[str, str] | None = None,
    report_path: str | Path | None = None,
) -> dict[str, Any]:
    tokens = {**DEFAULT_TOKENS, **(tokens or {})}
    skips = SkipLog()
    out: list[dict[str, Any]] = []
    not_passed: list[str] = []
    counts = {"bash": 0, "code": 0}
    for lineno, obj in read_jsonl(input_path, skips):
        where = {"file": str(input_path), "line": lineno, "id": obj.get("id")}
        errors = record_errors(obj, "entry")
        if errors:
            skips.add("invalid-entry: " + "; ".join(errors[:3]), **where)
            continue
        if not obj["passed"]:
            not_passed.append(obj["id"])
            continue
        tok = _token_in_text(obj, tokens)
        if tok is not None:
            skips.add(f"special-token-in-text: {tok}", **where)
            continue
        try:
            out.append(format_entry(obj, tokens, counts))
        except FormatError as exc:
            skips.add(f"bad-dialogue: {exc}", **where)
    write_jsonl(output, out)
    segs = [s for rec in out for m in rec["messages"] for s in m["segments"]]
    report = {
        "input": str(input_path),
        "output": str(output),
        "entries": len(out) + len(not_passed) + len(skips),
        "formatted": len(out),
        "not_passed": len(not_passed),
        "not_passed_ids": not_passed,
        "bad": len(skips),
        "special_tokens": [tokens[k] for k in TOKEN_KEYS],
        "tokens": {k: tokens[k] for k in TOKEN_KEYS},
        "blocks": counts,
        "chars": {
            "train": sum(len(s["text"]) for s in segs if s["train"]),
            "masked": sum(len(s["text"]) for s in segs if not s["train"]),
        },
        "bad_by_reason": skips.counts(),
        "bad_rows": skips.rows,
    }
    if report_path is not None:
        write_json(report_path, report)
    return report
