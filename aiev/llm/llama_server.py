"""``python -m aiev.llm.llama_server ARGS``: llama-cpp-python's OpenAI-compatible server on the CPU backend that
aiev chooses for this CPU. ``aiev serve --engine llama-cpp`` starts the server through it.

aiev's build of llama-cpp-python (``scripts/install-engine.sh``) is portable: llama.cpp's CPU backend is built
once per instruction-set level (``GGML_CPU_ALL_VARIANTS``: x64, sse42, ..., haswell, skylakex, icelake, zen4, ...)
as loadable modules, and each process loads the best one its CPU runs. That is what makes one environment work on
every node of a cluster whose nodes have different CPUs, at the speed of a native build. Unlike llama.cpp's own
choice, variants listed in :data:`EXCLUDED` are never loaded: the ``sapphirerapids`` one carries the AMX kernels
that crash on the first completion on some Xeons and VMs (``ggml_backend_amx_mul_mat``, a general protection
fault), so an AMX machine runs the next best one (AVX-512 with VNNI and BF16).

``AIEV_LLAMA_CPU_VARIANT=NAME`` forces one variant (a benchmark, or a node that misreports its CPU).
``python -m aiev.llm.llama_server --which`` prints the choice as JSON and exits (``aiev doctor`` shows it).
The server also answers ``GET /aiev/counters``: the prompt tokens its cache served and those it evaluated, and the
tokens it generated. Its streamed replies carry their usage in their last chunk, and a stream stops being generated
when its client goes away (a request the client dropped); one request does not cut another's stream off.

llama-cpp-python's server has one slot: its context holds the last request's tokens, so a request from another
dialogue throws away the beginning the next request of this one would have reused. The launcher keeps that work:
before a request replaces the context, the context's state (llama.cpp's sequence 0: its KV cells, a few MB) is
saved under its tokens, and a request that begins more like a saved state than like the context starts from that
state (:class:`PromptStates`; ``--prompt_states_mb N`` bounds them, least recently used out first, 0 turns them
off). A restored state gives the same tokens as the prompt cache it stands for (tests/llm/test_llama_server.py).
A llama-cpp-python build with its CPU backend linked in (pip's default, native build) runs as it is, with a
warning: it may be built for another CPU than this one.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path
from typing import Any

VARIANT_ENV = "AIEV_LLAMA_CPU_VARIANT"
PREFIX, SUFFIX = "libggml-cpu-", ".so"
#: Variants never loaded, and why.
EXCLUDED = {
    "sapphirerapids": "its AMX kernels crash at the first completion on some CPUs and VMs (ggml_backend_amx_mul_mat)",
}


def lib_dir() -> Path:
    import llama_cpp  # loads libllama, libggml and libggml-base from this folder

    return Path(llama_cpp.__file__).parent / "lib"


def variants(folder: Path) -> dict[str, Path]:
    """The CPU backend variants of a portable build, by name (empty for a build with its backend linked in)."""
    return {p.name[len(PREFIX) : -len(SUFFIX)]: p for p in sorted(folder.glob(f"{PREFIX}*{SUFFIX}"))}


def score(path: Path) -> int:
    """llama.cpp's own score of a variant on this CPU (0: the CPU lacks an instruction it needs)."""
    import _ctypes

    lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL | os.RTLD_NOW)
    try:
        fn = lib.ggml_backend_score
        fn.restype = ctypes.c_int
        return int(fn())
    finally:
        _ctypes.dlclose(lib._handle)


def choose(folder: Path, forced: str | None = None) -> dict[str, Any]:
    """The variant to load: the best-scoring one not excluded, or ``forced``."""
    found = variants(folder)
    if not found:
        return {"portable": False, "variant": None, "lib_dir": str(folder)}
    scores = {name: score(path) for name, path in found.items()}
    if forced:
        if forced not in found:
            raise SystemExit(f"{VARIANT_ENV}={forced}: no such variant in {folder} (there are: {', '.join(found)})")
        if scores[forced] == 0:
            raise SystemExit(f"{VARIANT_ENV}={forced}: this CPU lacks an instruction that variant needs")
        best = forced
    else:
        usable = {n: s for n, s in scores.items() if s > 0 and n not in EXCLUDED}
        if not usable:
            raise SystemExit(f"no CPU backend variant in {folder} runs on this CPU (scores: {scores})")
        best = max(usable, key=lambda n: usable[n])
    skipped = {n: EXCLUDED[n] for n in EXCLUDED if scores.get(n, 0) > 0}
    return {"portable": True, "variant": best, "path": str(found[best]), "scores": scores, "excluded": skipped,
            "forced": bool(forced), "lib_dir": str(folder)}  # fmt: skip


def load(choice: dict[str, Any]) -> None:
    """Register the chosen variant with ggml before llama.cpp would load the best one itself. The registry is
    the one of the libggml that libllama uses, opened by its soname: a wheel holds ``libggml.so`` and
    ``libggml.so.0`` as two copies (no symlinks in wheels), and llama_cpp._ggml opens the other one."""
    folder = lib_dir()  # libllama, and with it its libggml, are loaded
    try:
        libggml = ctypes.CDLL("libggml.so.0", mode=os.RTLD_NOLOAD | os.RTLD_NOW)  # the instance already loaded
    except OSError:  # another soname: the one beside libllama
        libggml = ctypes.CDLL(str(folder / "libggml.so"))
    fn = libggml.ggml_backend_load
    fn.argtypes = [ctypes.c_char_p]
    fn.restype = ctypes.c_void_p
    if not fn(choice["path"].encode()):
        raise SystemExit(f"ggml could not load {choice['path']}")


#: The engine's own prompt-cache figures since it started, served as JSON at ``GET /aiev/counters``.
COUNTERS = {"requests": 0, "prompt_tokens": 0, "prompt_tokens_cached": 0, "prompt_tokens_evaluated": 0,
            "states_saved": 0, "states_restored": 0, "state_tokens_restored": 0, "tokens_generated": 0}  # fmt: skip
COUNTERS_PATH = "/aiev/counters"
STATES_FLAG = "--prompt_states_mb"
STATES_MB = 1024
#: A context is saved only when a request would drop at least this many of its tokens, and a saved state is
#: restored only when it serves at least this many more tokens than the context: below that, evaluating is cheap.
MIN_TOKENS = 16


def shared(a: Any, b: Any) -> int:
    """How many tokens the sequences ``a`` and ``b`` begin with alike."""
    import numpy as np

    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if len(differ) else n


class PromptStates:
    """Saved contexts of the engine's one slot: each the llama.cpp state of sequence 0 under the tokens it holds,
    at most ``capacity`` bytes in all, the least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        from collections import OrderedDict

        self.capacity = capacity
        self.size = 0
        self.items: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self._arrays: dict[tuple[int, ...], Any] = {}  # each key as an array, made once (best() runs per request)

    def clear(self) -> None:
        self.items.clear()
        self._arrays.clear()
        self.size = 0

    def best(self, tokens: Any) -> tuple[tuple[int, ...] | None, int]:
        """The saved state that begins like ``tokens`` for longest, and how many tokens it serves."""
        import numpy as np

        key, most, tokens = None, 0, np.asarray(tokens)
        for k in self.items:
            array = self._arrays.get(k)
            if array is None:
                array = self._arrays[k] = np.asarray(k)
            n = shared(array, tokens)
            if n > most:
                key, most = k, n
        return key, most

    def save(self, llm: Any) -> None:
        import llama_cpp

        key = tuple(int(t) for t in llm._input_ids)
        if key in self.items:
            self.items.move_to_end(key)
            return
        ctx = llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        if size > self.capacity:
            return
        buf = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0) != size:
            return  # not saved: the request evaluates what it would have restored
        self.items[key] = bytes(buf)
        self.size += size
        COUNTERS["states_saved"] += 1
        while self.size > self.capacity:
            old, dropped = self.items.popitem(last=False)
            self._arrays.pop(old, None)
            self.size -= len(dropped)

    def restore(self, llm: Any, key: tuple[int, ...]) -> bool:
        import llama_cpp

        data = self.items[key]
        self.items.move_to_end(key)
        llm._ctx.kv_cache_seq_rm(0, -1, -1)
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buf, len(data), 0) != len(data):
            llm._ctx.kv_cache_seq_rm(0, -1, -1)
            llm.n_tokens = 0  # an empty context: the request evaluates its whole prompt
            return False
        llm.input_ids[: len(key)] = key
        llm.n_tokens = len(key)
        llm._requires_eval = True  # the logits are not restored: generate evaluates at least the last token
        COUNTERS["states_restored"] += 1
        COUNTERS["state_tokens_restored"] += len(key)
        return True

    def before(self, llm: Any, tokens: Any) -> None:
        """Called as a request starts: keep the context if the request would drop much of it, and start from a
        saved state if one serves much more of the request than the context does."""
        held = shared(llm._input_ids, tokens)
        key, served = self.best(tokens)
        if llm.n_tokens - held >= MIN_TOKENS:
            self.save(llm)
        if key is not None and served - held >= MIN_TOKENS:
            self.restore(llm, key)


def take_states_flag(argv: list[str]) -> tuple[list[str], int]:
    """``argv`` without ``--prompt_states_mb N``, and N (default :data:`STATES_MB`)."""
    mb, rest, it = STATES_MB, [], iter(argv)
    for arg in it:
        if arg == STATES_FLAG:
            value = next(it, None)
        elif arg.startswith(STATES_FLAG + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
            continue
        try:
            mb = int(value or "")
        except ValueError:
            raise SystemExit(f"{STATES_FLAG} takes a whole number of MB (0: off), not {value!r}") from None
        if mb < 0:
            raise SystemExit(f"{STATES_FLAG} takes a whole number of MB (0: off), not {value!r}")
    return rest, mb


def count_prompt_cache(states: PromptStates | None = None) -> None:
    """Count, per request, the prompt tokens llama.cpp kept from the previous prompt or a saved state (``states``)
    and those it evaluated: the tokens in context when a request's first evaluation starts are the reused
    beginning, that evaluation's tokens the rest of the prompt. llama-cpp-python reports neither."""
    from llama_cpp import Llama

    generate, evaluate = Llama.generate, Llama.eval

    def counted_generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Any:
        import llama_cpp

        COUNTERS["requests"] += 1
        COUNTERS["prompt_tokens"] += len(tokens)
        if states is not None and kwargs.get("reset", True):
            states.before(self, tokens)
        self._aiev_prompt_pending = True
        self._aiev_usage = [len(tokens), 0, False]  # prompt tokens, tokens generated, the last one ends the turn
        for token in generate(self, tokens, *args, **kwargs):
            COUNTERS["tokens_generated"] += 1
            self._aiev_usage[1:] = [
                self._aiev_usage[1] + 1,
                bool(llama_cpp.llama_vocab_is_eog(self._model.vocab, token)),
            ]
            yield token

    def counted_eval(self: Any, tokens: Any) -> Any:
        if getattr(self, "_aiev_prompt_pending", False):
            self._aiev_prompt_pending = False
            COUNTERS["prompt_tokens_cached"] += int(self.n_tokens)
            COUNTERS["prompt_tokens_evaluated"] += len(tokens)
        return evaluate(self, tokens)

    Llama.generate, Llama.eval = counted_generate, counted_eval  # type: ignore[method-assign]
    stream_usage(Llama)

    import llama_cpp.server.app as app_module

    create_app = app_module.create_app

    def create_app_with_counters(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.add_api_route(COUNTERS_PATH, lambda: dict(COUNTERS), methods=["GET"])
        return app

    app_module.create_app = create_app_with_counters


def stream_usage(llama_class: Any) -> None:
    """A streamed completion's last chunk (the one with its finish reason) carries the request's usage, as a reply
    that is not streamed does (llama-cpp-python's streams have none): the prompt's tokens and those generated, the
    token that ended the turn not counted, as llama-cpp-python counts them."""

    def with_usage(method: Any) -> Any:
        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            out = method(self, *args, **kwargs)
            if not kwargs.get("stream"):
                return out

            def chunks() -> Any:
                for chunk in out:
                    choices = chunk.get("choices") or [{}]
                    if choices[0].get("finish_reason") is not None and hasattr(self, "_aiev_usage"):
                        prompt, generated, ended = self._aiev_usage
                        completion = generated - int(ended)
                        chunk = {**chunk, "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                    "total_tokens": prompt + completion}}  # fmt: skip
                    yield chunk

            return chunks()

        return wrapped

    llama_class.create_completion = with_usage(llama_class.create_completion)
    llama_class.create_chat_completion = with_usage(llama_class.create_chat_completion)


#: llama-cpp-python's server stops a stream when another request arrives, by default: the stopped reply ends
#: without its finish reason, as a cut-off one. aiev's clients wait their turn instead (llm.concurrency queues them).
NO_INTERRUPT = ["--interrupt_requests", "False"]


def main(argv: list[str]) -> None:
    choice = choose(lib_dir(), os.environ.get(VARIANT_ENV) or None)
    if argv[:1] == ["--which"]:
        print(json.dumps(choice, indent=2))
        return
    if choice["portable"]:
        load(choice)
        note = f"; never loaded: {', '.join(choice['excluded'])} (AMX)" if choice["excluded"] else ""
        print(f"aiev: llama.cpp CPU backend {choice['variant']} ({choice['path']}){note}", file=sys.stderr)
    else:
        print("aiev: warning: this llama-cpp-python has its CPU backend linked in (a native build by pip?): it may "
              "crash on a CPU other than the one it was built on; scripts/install-engine.sh builds the portable one",
              file=sys.stderr)  # fmt: skip
    argv, states_mb = take_states_flag(argv)
    if not any(a.split("=")[0] == NO_INTERRUPT[0] for a in argv):
        argv = [*argv, *NO_INTERRUPT]
    sys.argv = [f"{sys.argv[0]} (llama_cpp.server)", *argv]
    count_prompt_cache(PromptStates(states_mb << 20) if states_mb else None)
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main(sys.argv[1:])
