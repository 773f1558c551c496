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
The server also answers ``GET /aiev/counters``: the prompt tokens its cache served and those it evaluated.
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
COUNTERS = {"requests": 0, "prompt_tokens": 0, "prompt_tokens_cached": 0, "prompt_tokens_evaluated": 0}
COUNTERS_PATH = "/aiev/counters"


def count_prompt_cache() -> None:
    """Count, per request, the prompt tokens llama.cpp kept from the previous prompt (its one slot's cache) and
    those it evaluated: the tokens in context when a request's first evaluation starts are the reused
    beginning, that evaluation's tokens the rest of the prompt. llama-cpp-python reports neither."""
    from llama_cpp import Llama

    generate, evaluate = Llama.generate, Llama.eval

    def counted_generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTERS["requests"] += 1
        COUNTERS["prompt_tokens"] += len(tokens)
        self._aiev_prompt_pending = True
        yield from generate(self, tokens, *args, **kwargs)

    def counted_eval(self: Any, tokens: Any) -> Any:
        if getattr(self, "_aiev_prompt_pending", False):
            self._aiev_prompt_pending = False
            COUNTERS["prompt_tokens_cached"] += int(self.n_tokens)
            COUNTERS["prompt_tokens_evaluated"] += len(tokens)
        return evaluate(self, tokens)

    Llama.generate, Llama.eval = counted_generate, counted_eval  # type: ignore[method-assign]

    import llama_cpp.server.app as app_module

    create_app = app_module.create_app

    def create_app_with_counters(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.add_api_route(COUNTERS_PATH, lambda: dict(COUNTERS), methods=["GET"])
        return app

    app_module.create_app = create_app_with_counters


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
    sys.argv = [f"{sys.argv[0]} (llama_cpp.server)", *argv]
    count_prompt_cache()
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main(sys.argv[1:])
