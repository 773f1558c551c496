"""A stand-in inference engine for `aiev serve` tests: the scripted server on a given port.

``--crash``: exit with code 3 before serving. ``--segv-on-completion``: die by SIGSEGV at the first
``/completions`` request, as llama.cpp's faulting AMX kernel does. ``--pidfile``: write the engine's pid there.
``--child``: start a grandchild (``sleep``) that an engine's helper would be, to check that none outlives it.
``--solver``: play both agents as a model that always writes the right ``add`` (tests.scripted_server.solver_script).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.scripted_server import ScriptedServer, echo_script, solver_script

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--name", required=True)
ap.add_argument("--crash", action="store_true")
ap.add_argument("--segv-on-completion", dest="segv", action="store_true")
ap.add_argument("--pidfile")
ap.add_argument("--child", help="a marker for a grandchild process to start")
ap.add_argument("--solver", action="store_true")
args = ap.parse_args()
print(f"fake engine: starting {args.name} on port {args.port}", flush=True)
if args.crash:
    print("fake engine: cannot load the model", flush=True)
    sys.exit(3)
if args.pidfile:
    Path(args.pidfile).write_text(str(os.getpid()))
if args.child:
    subprocess.Popen(["sleep", "300", args.child])


def completion(prompt: str) -> str:
    if args.segv:
        print("fake engine: entering the matmul kernel", flush=True)
        # a real fault (a read of address 0), as the faulting kernel raises: unlike a SIGSEGV sent by kill, it
        # kills even where the parent left SIGSEGV ignored or blocked (both survive exec)
        ctypes.string_at(0)
    return " return a + b"


server = ScriptedServer(
    solver_script if args.solver else echo_script, model=args.name, port=args.port, completion_script=completion
)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
with server:
    print("fake engine: ready", flush=True)
    stop.wait()
