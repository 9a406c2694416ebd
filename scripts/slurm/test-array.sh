#!/usr/bin/env bash
# End-to-end check of the Slurm scripts on a running cluster (scripts/slurm/cluster.sh start, with
# SLURM_CONF exported): submits a sharded run through submit.sh (--gpus-per-task 0), waits until one
# shard's database holds REQUEUE_AT answers, requeues that array task with `scontrol requeue`,
# waits for the array and the merge to finish, and prints what happened as key=value lines.
#
#   scripts/slurm/test-array.sh BIN MODEL QUESTIONS WORK [-- RUN_ARGS...]
#
# BIN is the docent-eval binary; WORK a fresh directory (out/ for the results and logs, local/ as
# the shards' node-local directory, so this script can watch the live databases; a one-node cluster
# is assumed). Environment: SHARDS (4), REQUEUE_AT (answers before the requeue, 2), TIMEOUT
# (seconds for the whole run, 1200).
# Output (stdout; progress goes to stderr):
#   array_job= merge_job= out_dir= log_dir= local_dir= all_db= report_md= report_html=
#   requeued_task= requeued_state_before= requeued_answers_before= requeued_snapshot=
#   task_K_state= task_K_exit= task_K_restarts= task_K_db= task_K_log=   for each task K
#   merge_state= merge_reason= merge_exit= merge_log=
#   result=ok | failed | timeout | dependency_never_satisfied
# Exit status: 0 when result=ok (every task and the merge COMPLETED, the requeued task restarted).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 4 ] || { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
bin=$1 model=$2 questions=$3 work=$4
shift 4
[ "${1:-}" != -- ] || shift
SHARDS=${SHARDS:-4}
REQUEUE_AT=${REQUEUE_AT:-2}
TIMEOUT=${TIMEOUT:-1200}
say() { echo "test-array: $*" >&2; }
die() { say "error: $*"; exit 2; }

[ -n "${SLURM_CONF:-}" ] || die "SLURM_CONF is not set (eval \"\$(scripts/slurm/cluster.sh env DIR)\")"
sinfo -h >/dev/null || die "sinfo failed: is the cluster started?"
mkdir -p "$work"
work=$(cd "$work" && pwd)
out=$work/out
export LOCAL_DIR=$work/local
mkdir -p "$LOCAL_DIR"
deadline=$((SECONDS + TIMEOUT))

submitted=$("$here/submit.sh" --bin "$bin" --model "$model" --questions "$questions" --shards "$SHARDS" \
  --out "$out" --gpus-per-task 0 -- "$@") || die "submit.sh failed"
echo "$submitted" >&2
ids=$(echo "$submitted" | tail -n 1)
array_job=$(echo "$ids" | sed -n 's/.*ARRAY_JOB=\([0-9]*\).*/\1/p')
merge_job=$(echo "$ids" | sed -n 's/.*MERGE_JOB=\([0-9]*\).*/\1/p')
[ -n "$array_job" ] && [ -n "$merge_job" ] || die "cannot read the job ids from: $ids"

# field JOB_LINE KEY: one key's value from a `scontrol -o show job` line.
field() { echo "$1" | grep -o "\(^\| \)$2=[^ ]*" | head -1 | sed "s/^ \{0,1\}$2=//"; }
# task_line K: the one-line record of array task K (empty while it is still in the pending array record).
task_line() { scontrol -o show job "${array_job}_$1" 2>/dev/null | grep " ArrayTaskId=$1 " || true; }
answers() {
  python3 - "$1" <<'EOF' 2>/dev/null || echo 0
import sqlite3, sys, os
if not os.path.exists(sys.argv[1]): print(0); sys.exit()
c = sqlite3.connect(sys.argv[1], timeout=5)
try: print(c.execute("select count(*) from answers").fetchone()[0])
except sqlite3.OperationalError: print(0)
EOF
}

# 1. Wait until a running shard has REQUEUE_AT answers, then requeue it.
requeued="" state_before="" answers_before=0
while [ -z "$requeued" ]; do
  [ $SECONDS -lt $deadline ] || { echo "result=timeout"; die "no shard reached $REQUEUE_AT answers in ${TIMEOUT}s"; }
  for ((k = 0; k < SHARDS; k++)); do
    line=$(task_line $k)
    [ -n "$line" ] || continue
    state=$(field "$line" JobState)
    n=$(answers "$LOCAL_DIR/shard-$k.db")
    if { [ "$state" = RUNNING ] && [ "$n" -ge "$REQUEUE_AT" ]; } || [ "$state" = COMPLETED ]; then
      requeued=$k state_before=$state answers_before=$n
      break
    fi
  done
  [ -n "$requeued" ] || sleep 1
done
# What the shard had committed just before the requeue (SQLite's backup API, safe while it writes),
# for the caller to check that no committed row is lost.
snapshot=$work/before-requeue-shard-$requeued.db
python3 - "$LOCAL_DIR/shard-$requeued.db" "$snapshot" <<'EOF' || die "cannot snapshot shard $requeued"
import sqlite3, sys
src = sqlite3.connect(sys.argv[1], timeout=10)
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close(); src.close()
EOF
say "requeue of task ${array_job}_$requeued ($state_before, $answers_before answers)"
scontrol requeue "${array_job}_$requeued" || die "scontrol requeue ${array_job}_$requeued failed"

# 2. Wait for the requeued task to restart and for every task and the merge to end.
terminal() { case $1 in COMPLETED|FAILED|CANCELLED|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL|PREEMPTED|BOOT_FAIL|DEADLINE) return 0 ;; esac; return 1; }
result=""
while [ -z "$result" ]; do
  if [ $SECONDS -ge $deadline ]; then result=timeout; break; fi
  sleep 2
  all_done=yes
  for ((k = 0; k < SHARDS; k++)); do
    line=$(task_line $k)
    state=$(field "$line" JobState)
    terminal "${state:-PENDING}" || all_done=""
    if [ "$k" = "$requeued" ] && [ "$(field "$line" Restarts)" = 0 ]; then all_done=""; fi
  done
  mline=$(scontrol -o show job "$merge_job" 2>/dev/null || true)
  mstate=$(field "$mline" JobState)
  if [ "$mstate" = PENDING ] && [ "$(field "$mline" Reason)" = DependencyNeverSatisfied ] && [ -n "$all_done" ]; then
    result=dependency_never_satisfied
  elif [ -n "$all_done" ] && terminal "${mstate:-PENDING}"; then
    result=ok
  fi
done

# 3. Report.
log_dir=$out/logs
echo "array_job=$array_job"
echo "merge_job=$merge_job"
echo "out_dir=$out"
echo "log_dir=$log_dir"
echo "local_dir=$LOCAL_DIR"
echo "all_db=$out/all.db"
echo "report_md=$out/report.md"
echo "report_html=$out/report.html"
echo "requeued_task=$requeued"
echo "requeued_state_before=$state_before"
echo "requeued_answers_before=$answers_before"
echo "requeued_snapshot=$snapshot"
ok=yes
for ((k = 0; k < SHARDS; k++)); do
  line=$(task_line $k)
  state=$(field "$line" JobState)
  restarts=$(field "$line" Restarts)
  echo "task_${k}_state=$state"
  echo "task_${k}_exit=$(field "$line" ExitCode)"
  echo "task_${k}_restarts=$restarts"
  echo "task_${k}_db=$out/shard-$k.db"
  echo "task_${k}_log=$log_dir/docent-shards-${array_job}_$k.log"
  [ "$state" = COMPLETED ] || ok=""
  if [ "$k" = "$requeued" ] && [ "${restarts:-0}" -lt 1 ]; then ok=""; fi
done
mline=$(scontrol -o show job "$merge_job" 2>/dev/null || true)
echo "merge_state=$(field "$mline" JobState)"
echo "merge_reason=$(field "$mline" Reason)"
echo "merge_exit=$(field "$mline" ExitCode)"
echo "merge_log=$log_dir/docent-merge-$merge_job.log"
[ "$(field "$mline" JobState)" = COMPLETED ] || ok=""
if [ "$result" = ok ] && [ -z "$ok" ]; then result=failed; fi
echo "result=$result"
[ "$result" = ok ]
