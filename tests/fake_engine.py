"""A stand-in inference engine for `aiev serve` tests: the scripted server on a given port."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.scripted_server import ScriptedServer, echo_script

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--name", required=True)
ap.add_argument("--crash", action="store_true")
args = ap.parse_args()
if args.crash:
    sys.exit(3)
server = ScriptedServer(echo_script, model=args.name, port=args.port)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
with server:
    stop.wait()
