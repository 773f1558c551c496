"""AutoCoder's code interpreter in a terminal: a trained student talks, its wrapped blocks run in the sandbox, and
the results go back into the conversation in the shape the student was trained on (:mod:`aiev.interpreter`).

How the model is asked. The student was trained on plain text laid out by the trainer's template (``bos``, user
turns, assistant turns closed by ``eos``), with the execution results inside the assistant turn. A result has to
be inserted *inside* the turn the model is writing, which a chat API cannot do, so the conversation is rendered
with that template (:meth:`aiev.interpreter.Template.render`) and the model continues it through the completion
API (``/completions``), with the stop sequences ``<|code_end|>`` and ``<|bash_end|>``.

Engines differ in what they return: ``transformers serve`` and vLLM skip special tokens in the text, and vLLM
does not stop on a special token's text. So the reply is never read for the tokens: they are stripped, the
reply's executable blocks are found by the shared parser (:mod:`aiev.codeblocks`, the fence is kept inside the
tokens) and the reply is cut right after the first closed one (what a stop sequence does where it works); the
prompt is always rebuilt from the plain text with the blocks wrapped again, as the records wrap them.

Where results go (as in the records, docs/curation.md): an install's result right after its bash block, a
program's right after the last Python block of the program. Whether a Python block is the last one is only known
from what follows, so after a Python block the model is asked to continue: if it writes another Python block,
that block joins the program; if it writes no block (or a bash block), the continuation is dropped, the program
(the Python blocks written since the last run, joined by a blank line, ``main.py``) runs, its result is inserted
after its last block, and the model continues from there. At most :data:`MAX_PROGRAM_BLOCKS` blocks make one
program.

Bash policy: a bash block runs only if each of its lines is a plain ``pip install <requirements>``
(:func:`aiev.sandbox.parse_pip_install`, the dialogue's rule: no other command, no ``;``, ``&&``, pipes,
redirections, substitutions, no URLs, paths, ``-r`` files or index options; pip's options are fixed by the
sandbox). Anything else is refused: not run, and the refusal with its reason is fed back as the install's result
(a failed install's shape) and printed. Packages go into one prefix per session, seen by the later programs.

Each install or program (refused ones too) is one round; when a turn has used ``rounds`` rounds the next block
does not run and the turn ends, saying so. ``execute=False`` (``--no-exec``): installs are shown and not run
(nothing is fed back), and the turn stops at the first program, which is shown.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiev.codeblocks import Fence
from aiev.interpreter import (
    DEFAULT_TOKENS,
    Template,
    describe_result,
    executable_blocks,
    install_refusal,
    install_result_text,
    refused_install,
    run_install,
    run_program,
    strip_tokens,
    token_kind,
    wrap_answer,
)

log = logging.getLogger("aiev.chat")

#: Python blocks that may join one program before it runs anyway (a model that never stops writing blocks).
MAX_PROGRAM_BLOCKS = 8
#: Model requests in one user turn, whatever happens (a guard; each round takes one or two).
MAX_REQUESTS = 64

Complete = Callable[[str, list[str]], Awaitable[str]]


@dataclass
class ChatSettings:
    rounds: int = 7
    execute: bool = True
    install_enabled: bool = True
    tokens: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TOKENS))
    template: Template = field(default_factory=Template)
    bos: str = ""
    eos: str = ""

    @property
    def stop(self) -> list[str]:
        return [self.tokens["code_end"], self.tokens["bash_end"]]


class Sandboxed:
    """The sandbox side of a session: one install prefix, the run and install limits."""

    def __init__(self, sandbox: Any, limits: Any, install_limits: Any, prefix: Path) -> None:
        self.sandbox, self.limits, self.install_limits, self.prefix = sandbox, limits, install_limits, prefix

    def install(self, specs: list[str]) -> dict[str, Any]:
        return run_install(self.sandbox, specs, self.prefix, self.install_limits)

    def run(self, source: str) -> dict[str, Any]:
        return run_program(self.sandbox, source, self.limits, self.prefix)


def first_block(text: str) -> Fence | None:
    """The first closed executable block of a reply (where a stop sequence would have ended it)."""
    return next((b for b in executable_blocks(text) if b.closed), None)


class ChatSession:
    """One conversation. ``complete(prompt, stop)`` is the model; ``sandboxed`` runs the blocks (None with
    ``execute=False``); everything is printed to ``out`` and kept for the transcript."""

    def __init__(self, complete: Complete, sandboxed: Sandboxed | None, settings: ChatSettings, out: TextIO) -> None:
        if settings.execute and sandboxed is None:
            raise ValueError("a session that executes needs a sandbox")
        self.complete = complete
        self.sandboxed = sandboxed
        self.settings = settings
        self.out = out
        self.messages: list[dict[str, Any]] = []  # finished turns, assistant content in the trained shape
        self.executions: list[dict[str, Any]] = []

    def say(self, text: str) -> None:
        self.out.write(text if text.endswith("\n") else text + "\n")
        self.out.flush()

    def render(self, answer: str, outputs: dict[int | None, list[str]]) -> str:
        return "".join(text for text, _ in wrap_answer(answer, self.settings.tokens, outputs))

    async def turn(self, user: str) -> dict[str, Any]:
        """One user turn: the model's reply with every execution; returns the assistant message."""
        s = self.settings
        turn_no = sum(1 for m in self.messages if m["role"] == "user")
        history = [{"role": m["role"], "content": m["content"]} for m in self.messages]
        history.append({"role": "user", "content": user})
        self.messages.append({"role": "user", "content": user})
        t = _Turn(self, turn_no)
        for _ in range(MAX_REQUESTS):
            prompt = s.template.render(history, self.render(t.answer, t.outputs), bos=s.bos, eos=s.eos)
            reply = strip_tokens(await self.complete(prompt, s.stop), s.tokens)
            if not t.take(reply):
                break
        else:
            self.say(f"[stopped] {MAX_REQUESTS} model requests in one turn")
            t.stopped = "requests"
        message = {"role": "assistant", "content": self.render(t.answer, t.outputs), "text": t.answer,
                   "rounds": t.rounds, "stopped": t.stopped}  # fmt: skip
        self.messages.append(message)
        return message

    def transcript(self) -> dict[str, Any]:
        s = self.settings
        return {
            "settings": {
                "rounds": s.rounds,
                "execute": s.execute,
                "tokens": s.tokens,
                "template": vars(s.template),
                "bos": s.bos,
                "eos": s.eos,
            },
            "messages": self.messages,
            "executions": self.executions,
            "refusals": [e for e in self.executions if e.get("refused")],
        }


class _Turn:
    """One assistant turn as it is written: the answer so far, the results inserted into it, the Python blocks
    not yet run, the rounds used and why the turn stopped."""

    def __init__(self, chat: ChatSession, turn_no: int) -> None:
        self.chat = chat
        self.s = chat.settings
        self.turn_no = turn_no
        self.answer = ""
        self.outputs: dict[int | None, list[str]] = {}
        self.pending: list[int] = []  # Python blocks (indices in the answer) not yet run
        self.rounds = 0
        self.stopped = "done"

    def record(self, kind: str, **fields: Any) -> None:
        self.chat.executions.append({"turn": self.turn_no, "round": self.rounds, "kind": kind, **fields})

    def take(self, reply: str) -> bool:
        """The model's next piece of the turn: cut after its first closed block, which runs (or joins the
        program); False ends the turn."""
        block = first_block(reply)
        if block is None or (self.pending and token_kind(block) == "bash"):
            if self.pending:  # the program's last block was the last one: run it, then let the model go on
                return self.run_pending()
            self.answer += reply
            if reply:
                self.chat.say(reply)
            tail = executable_blocks(self.answer)
            if tail and not tail[-1].closed:
                self.chat.say("[note] the reply ends inside an unclosed code block (max_tokens?): it was not run")
            return False
        cut = reply[: block.end]
        self.answer += cut
        self.chat.say(cut)
        index = len(executable_blocks(self.answer)) - 1
        if token_kind(block) == "code":
            self.pending.append(index)
            return len(self.pending) < MAX_PROGRAM_BLOCKS or self.run_pending()
        return self.install(block, index)

    def run_pending(self) -> bool:
        """Run the pending program; False ends the turn (round limit, --no-exec)."""
        s, say = self.s, self.chat.say
        blocks = executable_blocks(self.answer)
        source = "\n\n".join(blocks[i].code for i in self.pending) + "\n"
        if self.rounds >= s.rounds:
            say(f"[stopped] round limit reached: {self.rounds} executions in this turn (--rounds {s.rounds}); "
                "the model's next program was not run")  # fmt: skip
            self.record("program", source=source, ran=False, reason="round limit")
            self.stopped = "rounds"
            return False
        if not s.execute:
            say(f"[would run] python3 main.py:\n{source}")
            self.record("program", source=source, ran=False, reason="--no-exec")
            self.stopped = "no-exec"
            return False
        say(f"[running] python3 main.py ({source.count(chr(10))} lines)")
        assert self.chat.sandboxed is not None
        result = self.chat.sandboxed.run(source)
        text = describe_result(result)
        self.outputs.setdefault(self.pending[-1], []).append(text)
        self.rounds += 1
        self.record("program", source=source, ran=True, result=result, fed_back=text)
        say(f"[result]\n{text}")
        self.pending = []
        return True

    def install(self, block: Fence, index: int) -> bool:
        """A bash block: an install turn, refused, shown (--no-exec) or run; False ends the turn."""
        s, say = self.s, self.chat.say
        specs, why = install_refusal([block.code], s.install_enabled)
        if self.rounds >= s.rounds:
            say(f"[stopped] round limit reached: {self.rounds} executions in this turn (--rounds {s.rounds}); "
                "the model's next install was not run")  # fmt: skip
            self.record("install", code=block.code, specs=specs, ran=False, reason="round limit")
            self.stopped = "rounds"
            return False
        self.rounds += 1
        if not s.execute:  # nothing runs and nothing is fed back, refusals included
            shown = f"[would refuse] {why}" if why else f"[would run] pip install {' '.join(specs)}"
            self.record("install", code=block.code, specs=specs, ran=False, reason="--no-exec", refused=why)
            say(shown)
            return True
        if why is not None:  # refused: the reason is fed back as a failed install's result
            install = refused_install(specs, why)
            facts: dict[str, Any] = {"ran": False, "refused": why}
        else:
            say(f"[running] pip install {' '.join(specs)}")
            assert self.chat.sandboxed is not None
            install = self.chat.sandboxed.install(specs)
            facts = {"ran": True, "result": install}
        text = install_result_text(install)
        self.outputs.setdefault(index, []).append(text)
        self.record("install", code=block.code, specs=specs, fed_back=text, **facts)
        say(f"[refused] {why}" if why is not None else f"[result]\n{text}")
        return True


# ------------------------------------------------------------------------------------------------ the command


def open_sandbox(section: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The configured sandbox (a seam for tests)."""
    from aiev.sandbox import from_config

    return from_config(section)


def tokenizer_marks(path: str | None, tokens: dict[str, str]) -> tuple[str, str]:
    """The checkpoint tokenizer's ``bos`` (only where its tokenizer does not add it itself) and ``eos`` texts,
    as the trainer puts them around the turns; empty where there is no tokenizer to read."""
    if path is None or not (Path(path) / "tokenizer_config.json").is_file():
        return "", ""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    missing = [t for t in tokens.values() if t not in tok.get_vocab()]
    if missing:
        log.warning("%s has no special token %s: is it a trained student?", path, ", ".join(missing))
    bos = tok.bos_token or ""
    if bos and tok("x")["input_ids"][:1] == [tok.bos_token_id]:
        bos = ""  # the server's tokenizer adds it
    return bos, tok.eos_token or ""


def user_turns(prompt: str | None, stream: TextIO, out: TextIO):
    if prompt is not None:
        yield prompt
        return
    interactive = stream.isatty()
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = stream.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            return
        if line.strip():
            yield line.rstrip("\n")


async def session(
    cfg: dict[str, Any], args: Any, base_url: str, model: str, marks: tuple[str, str], out: TextIO
) -> dict[str, Any]:
    import dataclasses
    import tempfile

    from aiev.llm.client import LLMSettings
    from aiev.runtime import ModelSettings, Session

    student = cfg["llm"]["student"]
    endpoint = {"base_url": base_url, "model": model, "api_key_env": None if args.model else student["api_key_env"]}
    settings = LLMSettings.from_config(cfg["llm"], endpoint)
    settings = dataclasses.replace(settings, max_retries=min(settings.max_retries, 2))  # interactive: fail fast
    student_model = ModelSettings("student", "completion", settings, prompts={})  # the trainer's template, below
    chat = ChatSettings(
        rounds=args.rounds if args.rounds is not None else cfg["generate"]["max_rounds"],
        execute=not args.no_exec,
        install_enabled=cfg["sandbox"]["install"]["enabled"],
        tokens={**DEFAULT_TOKENS, **cfg["format"]["tokens"]},
        template=Template.from_section(cfg["train"]),
        bos=marks[0],
        eos=marks[1],
    )
    # interactive: no cache, every turn is asked afresh; the sandbox only where blocks run
    session = Session(student_model, None, cfg["sandbox"] if chat.execute else None,
                      opener=lambda section: open_sandbox(section))  # fmt: skip
    async with session:

        async def complete(prompt: str, stop: list[str]) -> str:
            return (await session.client.complete(prompt, stop, allow_empty=True)).text  # "": the turn ended

        with tempfile.TemporaryDirectory(prefix="aiev-chat-") as tmp:
            sandboxed = None
            if chat.execute:
                sandboxed = Sandboxed(session.sandbox, session.limits, session.install_limits, Path(tmp) / "prefix")
            talk = ChatSession(complete, sandboxed, chat, out)
            try:
                for user in user_turns(args.prompt, sys.stdin, out):
                    await talk.turn(user)
            finally:
                if args.transcript:
                    data = {"model": model, "base_url": base_url, **talk.transcript()}
                    Path(args.transcript).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.transcript).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    turns = [m for m in talk.messages if m["role"] == "assistant"]
    return {
        "turns": len(turns),
        "executions": sum(1 for e in talk.executions if e["ran"]),
        "refusals": sum(1 for e in talk.executions if e.get("refused")),
        "stopped": [m["stopped"] for m in turns],
        "transcript": args.transcript,
    }


def run(cfg: dict[str, Any], args: Any, out: TextIO | None = None) -> dict[str, Any]:
    """``aiev chat``: serve ``--model`` for the session (llm.student.serve), or talk to ``--endpoint``."""
    import asyncio

    out = out or sys.stdout
    tokens = {**DEFAULT_TOKENS, **cfg["format"]["tokens"]}
    if args.endpoint:
        if args.model:
            raise ValueError("give --model DIR (served for the session) or --endpoint URL, not both")
        if not args.model_name:
            raise ValueError("--endpoint needs --model-name (the name the server serves the model under)")
        marks = tokenizer_marks(args.tokenizer, tokens)
        return asyncio.run(session(cfg, args, args.endpoint.rstrip("/"), args.model_name, marks, out))
    if not args.model:
        raise ValueError("give --model DIR (a trained student) or --endpoint URL --model-name NAME")
    from aiev.llm.serve import ServeError, Server, resolve_model, spec_from_config

    section = cfg["llm"]["student"].get("serve")
    if not section:
        raise ServeError("--model: llm.student.serve is null, so nothing can serve it; give --endpoint URL instead")
    spec = spec_from_config(section, cfg["llm"]["student"].get("chat_template"), model=args.model)
    marks = tokenizer_marks(args.tokenizer or resolve_model(args.model), tokens)
    with Server(spec, args.server_log) as server:
        return asyncio.run(session(cfg, args, server.base_url, server.spec.served_name, marks, out))
