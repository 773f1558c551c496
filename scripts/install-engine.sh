#!/usr/bin/env bash
# Installs the demo's engine, llama-cpp-python, as aiev's portable build, into the Python given (default: .venv).
#   scripts/install-engine.sh [PYTHON]
#
# pip's default build of llama-cpp-python is native (-march=native): on a Xeon with AMX it crashes at the first
# completion (ggml_backend_amx_mul_mat), and on a cluster it crashes on any node whose CPU lacks an instruction of
# the node that built it. pip also caches that wheel keyed by the sdist alone, so a machine that built it once
# reinstalls it whatever CMAKE_ARGS say later. So this script:
# - builds llama.cpp's CPU backend once per instruction-set level, as modules loaded at run time
#   (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS); aiev/llm/llama_server.py loads the best one the CPU runs, never
#   the AMX one (docs/serving.md);
# - builds the wheel with pip's cache off, into a folder of aiev's own whose name is a hash of the version and
#   the flags: another flag set is another folder, never a stale wheel;
# - installs that wheel (forced over any other build of the same version) and checks that it is the portable one.
# A second run with the wheel built installs it in seconds; AIEV_WHEEL_CACHE moves the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
version=$(sed -n 's/^llama-cpp-python==\([0-9.]*\)$/\1/p' requirements-engine.txt)
[ -n "$version" ] || { echo "install-engine: no llama-cpp-python==VERSION in requirements-engine.txt" >&2; exit 2; }
# LLAVA_BUILD=OFF: the multimodal library aiev never loads (a third of the build time).
# CMAKE_INSTALL_BINDIR: where ggml installs the backend modules, relative to the wheel's root: beside libllama.
flags="-DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
flags="$flags -DCMAKE_INSTALL_BINDIR=llama_cpp/lib"
key=$(printf '%s\n%s\n' "$version" "$flags" | sha256sum | cut -c1-16)
cache=${AIEV_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aiev/wheels}
dir="$cache/llama-cpp-python-$version-$key"

installed() {
  "$python" - "$dir" <<'EOF'
import sys
from importlib import metadata

try:
    url = metadata.distribution("llama_cpp_python").read_text("direct_url.json") or ""
except metadata.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if sys.argv[1] in url else 1)
EOF
}

if installed; then
  exit 0
fi
if ! ls "$dir"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $version, portable (every CPU variant; 18-23 min on 2 cores, once): $dir" >&2
  tmp="$dir.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  start=$(date +%s)
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$python" -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
    "llama-cpp-python==$version" -w "$tmp"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  echo "built in $(($(date +%s) - start)) s" >&2
fi
"$python" -m pip install -q --no-deps --no-cache-dir --force-reinstall "$dir"/llama_cpp_python-"$version"-*.whl
# read whole, never piped into `grep -q`: grep leaves at its first match, and the writer (unbuffered under
# PYTHONUNBUFFERED, as CI runs) then fails with a broken pipe, which pipefail turns into a failed install
choice=$("$python" -m aiev.llm.llama_server --which)
case "$choice" in
  *'"portable": true'*) ;;
  *)
    echo "install-engine: the installed llama-cpp-python has no CPU backend variants: $choice" >&2
    exit 1
    ;;
esac
