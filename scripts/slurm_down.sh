#!/usr/bin/env bash
# slurm_down.sh - stop the daemons that scripts/slurm_up.sh started, by pid file, after checking
# that each pid still runs the expected program. munged is stopped only if slurm_up.sh started
# it. Jobs of the test cluster are cancelled first. Other processes are never touched.
set -uo pipefail
BASE=${SLURM_CI_BASE:-/var/spool/testtime-slurm-ci}
TIMEOUT=${SLURM_CI_TIMEOUT:-60}
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  exec sudo -n --preserve-env=SLURM_CI_BASE,SLURM_CI_TIMEOUT "$0" "$@"
fi
stop_pidfile() {
  local f=$1 name=$2 p
  [ -s "$f" ] || return 0
  p=$(cat "$f")
  if [ -r "/proc/$p/comm" ] && [ "$(cat "/proc/$p/comm")" = "$name" ]; then
    kill "$p" 2>/dev/null
    for _ in $(seq 1 $((TIMEOUT * 5))); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null
    echo "stopped $name ($p)"
  fi
  rm -f "$f"
}
if [ -s "$BASE/run/slurmctld.pid" ]; then timeout 10 scancel --full --state=PENDING,RUNNING 2>/dev/null || true; fi
stop_pidfile "$BASE/run/slurmd.pid" slurmd
stop_pidfile "$BASE/run/slurmctld.pid" slurmctld
stop_pidfile "$BASE/run/munged.pid" munged
exit 0
