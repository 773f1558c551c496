#!/usr/bin/env bash
# README's test command (`make test`) runs this: the whole suite, as two pytest sessions at once.
#
# The SLURM tests (tests/test_slurm.py, marker `slurm`) spend most of their time waiting: for sacct, for the
# plugin's status checks, for a requeue. They run beside the rest, whose tests keep the two cores busy meanwhile,
# in two sessions of their own (the tiny loop, and the other SLURM tests) that share the one-node cluster; the
# test that sets the node down holds it alone (a lock, tests/test_slurm.py). Each session has its own temporary
# folder. Without the local cluster (AIEV_SLURM_TESTS unset) the SLURM sessions only skip. The exit status is
# non-zero when any session fails; the SLURM sessions' output follows the other's. Extra arguments go to every
# session.
set -uo pipefail
cd "$(dirname "$0")/.."

base=$(mktemp -d "${TMPDIR:-/tmp}/aiev-pytest.XXXXXX")
export AIEV_SLURM_LOCK="$base/slurm.lock"
loop= faults=
# interrupted or not, no session is left running behind this script
trap 'for p in $loop $faults; do kill "$p" 2>/dev/null; done; rm -rf "$base"' EXIT

pytest -q -rs --durations=10 -m slurm -k tiny_loop --basetemp "$base/loop" "$@" >"$base/loop.log" 2>&1 &
loop=$!
pytest -q -rs --durations=10 -m slurm -k "not tiny_loop" --basetemp "$base/faults" "$@" >"$base/faults.log" 2>&1 &
faults=$!

pytest -q -rs --durations=20 -m "not slurm" --basetemp "$base/rest" "$@"
rest=$?

wait "$loop"
loop_rc=$?
wait "$faults"
faults_rc=$?
for s in loop faults; do
  rc=${s}_rc
  echo
  echo "== the SLURM tests (tests/test_slurm.py, $s), run beside the others: exit ${!rc}"
  cat "$base/$s.log"
done
# pytest's 5 is "no test selected" (a -k or path that leaves one session nothing): not a failure of that session
[ "$loop_rc" -eq 5 ] && loop_rc=0
[ "$faults_rc" -eq 5 ] && faults_rc=0
[ "$rest" -eq 5 ] && rest=0
exit $((rest != 0 || loop_rc != 0 || faults_rc != 0))
