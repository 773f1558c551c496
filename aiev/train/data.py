"""SFT records (``sft.jsonl``, docs/curation.md) as token ids and labels, with the loss on exactly the trained
segments.

Layout of one record (the chat template written into the trained tokenizer renders the same text, so a served
student sees at inference what it saw in training)::

    {user_prefix}USER TEXT{turn_end}{assistant_prefix}ASSISTANT SEGMENTS{eos}{turn_end}...

Each piece is tokenized on its own and the ids are concatenated, so every token belongs to exactly one piece:
the role prefixes, user turns and the segments marked ``train: false`` (execution results) get label -100;
assistant segments marked ``train: true`` and the end-of-sequence token closing each assistant turn (the model
learns to stop) are trained. A record longer than ``max_seq_len`` is cut at that length (counted in the report);
one with no trained token left after the cut is skipped (counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiev.interpreter import Template

__all__ = ["IGNORE", "Example", "Template", "add_special_tokens", "collate", "encode"]

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def encode(record: dict[str, Any], tokenizer: Any, template: Template, max_seq_len: int) -> Example:
    """One SFT record as ids and labels (see the module docstring)."""
    ids: list[int] = []
    labels: list[int] = []

    def piece(text: str, train: bool) -> None:
        if not text:
            return
        toks = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(toks)
        labels.extend(toks if train else [IGNORE] * len(toks))

    if tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE)
    for msg in record["messages"]:
        if msg["role"] == "user":
            piece(template.user_prefix + msg["content"] + template.turn_end, False)
        elif msg["role"] == "assistant":
            piece(template.assistant_prefix, False)
            for seg in msg.get("segments") or [{"text": msg["content"], "train": True}]:
                piece(seg["text"], bool(seg["train"]))
            ids.append(tokenizer.eos_token_id)
            labels.append(tokenizer.eos_token_id)
            piece(template.turn_end, False)
        else:
            raise ValueError(f"record {record.get('id')}: unknown role {msg['role']!r}")
    truncated = len(ids) > max_seq_len
    return Example(ids[:max_seq_len], labels[:max_seq_len], truncated)


def add_special_tokens(tokenizer: Any, tokens: list[str]) -> int:
    """Add the code-interpreter tokens as additional special tokens (each stays one token); returns how many
    were new. Their ids follow the tokenizer's vocabulary in the order given, so they are stable."""
    vocab = tokenizer.get_vocab()
    new = [t for t in tokens if t not in vocab]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    return len(new)


def collate(batch: list[Example], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
