# Sourced by gpu_check.sh and cpu_check.sh (needs bash 4 and `declare -A STATUS` in the caller).
# step NAME TIMEOUT_S COMMAND…: run COMMAND (functions too) under `timeout`, print and record "rc=N Ss" in
# STATUS[NAME], keep going whatever it returns. STEPS="a b" runs only the steps named; with END (epoch
# seconds) set, a step's limit is cut so it ends by then, and a step with under 10 s left is not started.
left() { echo $((${END:-9999999999} - $(date +%s))); }

step() {
  local name=$1 limit=$2; shift 2
  if [[ " ${STEPS:-all} " != *" all "* && " ${STEPS:-} " != *" $name "* ]]; then STATUS[$name]="skipped"; return 0; fi
  if [[ -n ${END:-} ]]; then
    ((limit > $(left))) && limit=$(left)
    if ((limit < 10)); then STATUS[$name]="no time left"; echo "=== $name: no time left"; return 1; fi
  fi
  echo "=== $name ($(date -u +%T), limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" bash -o pipefail -c '"$@"' _ "$@"
  local rc=$?
  STATUS[$name]="rc=$rc $((SECONDS - t0))s"
  echo "=== $name: ${STATUS[$name]}"
  return $rc
}
