#!/usr/bin/env bash
# Installs the system packages a target needs, when they are missing: `scripts/system-deps.sh test|demo`.
#   test: bubblewrap (the sandbox), util-linux (setpriv: the sandbox's root mode), graphviz (the DAG picture)
#   demo: bubblewrap, util-linux, and a C/C++ compiler and cmake (pip builds llama-cpp-python from source)
# As root on Debian/Ubuntu it installs them with apt-get (as CI does); anywhere else it only names what is
# missing and exits 0: `aiev doctor` then stops the run with the fix. Nothing is installed that is present.
set -euo pipefail
target=${1:-test}

need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
[ -x /usr/bin/setpriv ] || command -v setpriv >/dev/null || need+=(util-linux)
case "$target" in
  test) command -v dot >/dev/null || need+=(graphviz) ;;
  demo)
    if ! command -v cc >/dev/null || ! command -v c++ >/dev/null; then need+=(build-essential); fi
    command -v cmake >/dev/null || need+=(cmake)
    ;;
  *) echo "usage: $0 test|demo" >&2; exit 2 ;;
esac

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "missing system packages (install them with your package manager): ${need[*]}" >&2
fi
