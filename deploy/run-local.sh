#!/bin/sh
# Runs every shard of a sharded ferry job on this machine, PARALLEL processes at a time, then retries the
# shards that are not done (a shard that committed is never loaded twice), and checks that the job is
# complete. The same as the Kubernetes Indexed Job, for one big machine.
#
#   deploy/run-local.sh sharded.json [PARALLEL] [ATTEMPTS]
#
# With GNU parallel instead of xargs (a job log, and retries per shard):
#   ferry shards list sharded.json | parallel -j 4 --retries 3 --joblog shards.log \
#       ferry run sharded.json --shard {} --quiet
#   ferry shards status sharded.json
set -eu
job=${1:?usage: run-local.sh JOB [PARALLEL] [ATTEMPTS]}
parallel=${2:-$(nproc)}
attempts=${3:-3}
ferry=${FERRY:-ferry}

attempt=1
while :; do
  # xargs exits non-zero when a shard failed; the ledger says which, so go on to the status check.
  "$ferry" shards list "$job" --pending \
    | xargs -r -P "$parallel" -I{} "$ferry" run "$job" --shard {} --quiet || true
  status=0
  "$ferry" shards status "$job" || status=$?
  case $status in
    0) exit 0 ;;
    1) ;;                 # some shards are not done: retry them
    *) exit "$status" ;;  # a job file or target that cannot be read: retrying cannot help
  esac
  if [ "$attempt" -ge "$attempts" ]; then
    echo "run-local.sh: shards still not done after $attempts attempts" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
done
