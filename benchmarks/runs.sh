# Sourced by the sweep scripts (claims.sh, world.sh): what to do with one run of a sweep, so that rerunning a sweep finishes it.
#   run_mode EXPERIMENT RUN_ID   prints the `vssl run` option for run $VSSL_RUNS/EXPERIMENT/RUN_ID:
#     --run-id RUN_ID   it never started;
#     --resume RUN_ID   it started and did not finish (interrupted, failed, or killed without a word): `vssl run` continues it
#                       in its folder from its last checkpoint, and refuses parameters other than those it was started with;
#     nothing           it finished (status ok): skip it.
#   report_exit STATUS WHAT      one line for a run that did not finish (`vssl run` exits 3 when interrupted, 1 when failed).
run_status() {
  "${PYTHON:-python3}" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("status", ""))' "$1" 2>/dev/null || echo unreadable
}
run_mode() {
  local rec="$VSSL_RUNS/$1/$2/record.json"
  if [ ! -f "$rec" ]; then echo "--run-id $2"
  elif [ "$(run_status "$rec")" != ok ]; then echo "--resume $2"
  fi
}
report_exit() {
  case "$1" in
    0) ;;
    3) echo "INTERRUPTED (run the script again to resume it): $2" ;;
    *) echo "FAILED (status $1; run the script again to resume it from its last checkpoint): $2" ;;
  esac
}
