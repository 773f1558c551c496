#!/usr/bin/env bash
# Checks, in seconds, the system packages a target needs, and installs the missing ones where it can:
#   scripts/system-deps.sh test|demo
#   both: python3 with venv, bubblewrap (the sandbox), util-linux's setpriv (the sandbox's root mode)
#   test: graphviz (the DAG picture); chromium (the report opened headless); node, g++, a JDK with javatuples,
#         php (MultiPL-E); and the demo's (the real-engine tests build and run its engine)
#   demo: a C/C++ compiler and cmake (scripts/install-engine.sh builds llama-cpp-python from source)
# As root on Debian/Ubuntu the missing ones are installed with apt-get (as CI does). Elsewhere, or with
# AIEV_NO_INSTALL=1, they are named with the command that installs them; for `demo` that stops the run at once
# (exit 1) instead of minutes into the setup, for `test` the tests that need them report themselves skipped
# (under CI=true a missing package is an error: CI's skips must all be on tests/skip-allowlist.txt).
set -euo pipefail
target=${1:-test}
python=${PY:-python3}

need=()
"$python" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v bwrap >/dev/null || need+=(bubblewrap)
[ -x /usr/bin/setpriv ] || command -v setpriv >/dev/null || need+=(util-linux)
case "$target" in
  test)
    command -v dot >/dev/null || need+=(graphviz)
    command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
    # MultiPL-E's toolchains (tests/scoring/test_multiple.py): those a language lacks are skipped with the reason
    command -v node >/dev/null || need+=(nodejs)
    command -v g++ >/dev/null || need+=(g++)
    command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
    [ -f /usr/share/java/javatuples.jar ] || need+=(libjavatuples-java)
    command -v php >/dev/null || need+=(php-cli)
    # the distribution's rustc: the sandbox sees /usr only, so a rustup toolchain in ~/.cargo does not count
    [ -x /usr/bin/rustc ] || need+=(rustc)
    if ! command -v cc >/dev/null || ! command -v c++ >/dev/null; then need+=(build-essential); fi
    command -v cmake >/dev/null || need+=(cmake)
    ;;
  demo)
    if ! command -v cc >/dev/null || ! command -v c++ >/dev/null; then need+=(build-essential); fi
    command -v cmake >/dev/null || need+=(cmake)
    ;;
  *) echo "usage: $0 test|demo" >&2; exit 2 ;;
esac

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null && [ -z "${AIEV_NO_INSTALL:-}" ]; then
  echo "installing system packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  exit 0
fi
echo "missing system packages: ${need[*]}" >&2
echo "fix: sudo apt-get install ${need[*]}   (Debian/Ubuntu; dnf/zypper/pacman have packages of the same names)" >&2
if [ "$target" = demo ] || [ "${CI:-}" = true ]; then
  exit 1
fi
