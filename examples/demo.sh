#!/usr/bin/env bash
# The main job, for now: a daemon on a temporary data dir, a few dummy hosts with different
# labels and capacities, VMs from the templates beside this script (some with requirements
# only some hosts meet, one that fits nowhere), placed and RUNNING; then everything stops.
set -euo pipefail
cd "$(dirname "$0")/.."
STRATUS=(.venv/bin/stratus)
DATA=$(mktemp -d /tmp/stratus-demo.XXXXXX)
export STRATUS_DATA_DIR=$DATA
unset STRATUS_URL STRATUS_TOKEN

step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ stratus %s\033[0m\n' "$*" >&2; "${STRATUS[@]}" "$@"; }

step "Starting the daemon (data dir $DATA)"
"${STRATUS[@]}" serve --data-dir "$DATA" --listen 127.0.0.1:0 --monitor-interval 2 \
    --schedule-interval 0.5 --policy striping >"$DATA/serve.out" 2>&1 &
PID=$!
cleanup() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 100); do
    [ -s "$DATA/endpoint" ] && break
    kill -0 "$PID" 2>/dev/null || { cat "$DATA/serve.out"; exit 1; }
    sleep 0.1
done
echo "listening on $(cat "$DATA/endpoint")"

step "Adding dummy hosts with different capacities and labels"
run host add madrid-1 --driver dummy --cpu 8 --memory 16G --label COUNTRY=ES --label CLUSTER=fast-a
run host add madrid-2 --driver dummy --cpu 4 --memory 8G --label COUNTRY=ES --label CLUSTER=slow
run host add paris-1 --driver dummy --cpu 16 --memory 32G --label COUNTRY=FR --label CLUSTER=fast-b
run host add lisbon-1 --driver dummy --cpu 2 --memory 4G --label COUNTRY=PT --label CLUSTER=edge

step "Submitting VMs from examples/"
ids=()
ids+=($(run vm create examples/small.tmpl --count 3))
ids+=($(run vm create examples/web-es.tmpl --count 2))
ids+=($(run vm create examples/batch.yaml --count 2))
huge=$(run vm create examples/huge.json)
echo "created VMs ${ids[*]} and $huge"

step "Waiting for them to run"
for id in "${ids[@]}"; do
    "${STRATUS[@]}" vm wait "$id" --state RUNNING --timeout 30 >/dev/null
done
run vm list
run host list

step "The VM that fits nowhere keeps a reason"
run vm show "$huge"

step "Operations: suspend, resume, migrate, terminate"
first=${ids[0]}
run vm suspend "$first"
"${STRATUS[@]}" vm wait "$first" --state SUSPENDED --timeout 30 >/dev/null
run vm resume "$first"
"${STRATUS[@]}" vm wait "$first" --state RUNNING --timeout 30 >/dev/null
run vm migrate "$first" paris-1 --live
"${STRATUS[@]}" vm wait "$first" --state RUNNING --timeout 30 >/dev/null
run vm terminate "$first"
"${STRATUS[@]}" vm wait "$first" --state DONE --timeout 30 >/dev/null
run vm show "$first"
run vm suspend "$huge" || echo "(refused, as it should be: a PENDING VM cannot be suspended)"

step "Stopping the daemon"
kill "$PID"
wait "$PID" 2>/dev/null || true
echo "done"
