#!/usr/bin/env bash
# README's test command (`make test`) runs this: the whole suite, as two pytest sessions at once.
#
# The SLURM tests (tests/test_slurm.py, marker `slurm`) spend most of their time waiting: for sacct, for the
# plugin's status checks, for a requeue. They run in a session of their own beside the rest, whose tests keep the
# two cores busy meanwhile; each session has its own temporary folder. Without the local cluster
# (AIEV_SLURM_TESTS unset) that session only skips. The exit status is non-zero when either session fails; the
# SLURM session's output follows the other's. Extra arguments go to both sessions.
set -uo pipefail
cd "$(dirname "$0")/.."

base=$(mktemp -d "${TMPDIR:-/tmp}/aiev-pytest.XXXXXX")
slurm=
# interrupted or not, no session is left running behind this script
trap '[ -n "$slurm" ] && kill "$slurm" 2>/dev/null; rm -rf "$base"' EXIT

pytest -q -rs --durations=10 -m slurm --basetemp "$base/slurm" "$@" >"$base/slurm.log" 2>&1 &
slurm=$!

pytest -q -rs --durations=20 -m "not slurm" --basetemp "$base/rest" "$@"
rest=$?

wait "$slurm"
slurm_rc=$?
echo
echo "== the SLURM tests (tests/test_slurm.py), run beside the others: exit $slurm_rc"
cat "$base/slurm.log"
# pytest's 5 is "no test selected" (a -k or path that leaves one session nothing): not a failure of that session
[ "$slurm_rc" -eq 5 ] && slurm_rc=0
[ "$rest" -eq 5 ] && rest=0
exit $((rest != 0 || slurm_rc != 0))
