#!/usr/bin/env bash
# Submits a sharded docent-eval run to Slurm: an array job with one shard per task
# (scripts/slurm/shards.sbatch) and a merge job that runs after every task succeeded
# (scripts/slurm/merge.sbatch). See docs/cluster.md.
#
#   scripts/slurm/submit.sh --model M.gguf --questions Q.jsonl --shards N --out DIR
#       [--gpus-per-task G]   GPUs per shard, as --gres=gpu:G [1]; 0 on CPU-only clusters
#       [--cpus-per-task C] [--mem MEM] [--partition P] [--time T]   passed to sbatch
#       [--bin PATH]          docent-eval on a filesystem every node sees [docent-eval on PATH,
#                             else target/release/docent-eval of this checkout]
#       [--log-dir D]         task logs [DIR/logs]
#       [-- RUN_ARGS...]      more `docent-eval run` flags, e.g. -- --parallel 32 --shard-key context
#
# Writes DIR/shard-K.db (one per shard), DIR/all.db, DIR/report.md, DIR/report.html, the logs
# (D/docent-shards-<array>_<task>.log, D/docent-merge-<job>.log) and DIR/submit.env (what was
# submitted). Submitting again with the same DIR resumes each shard from its database there.
# Other sbatch options come from sbatch's own environment variables (SBATCH_ACCOUNT, SBATCH_QOS,
# SBATCH_SIGNAL, ...). The last line printed is `ARRAY_JOB=<id> MERGE_JOB=<id>` for scripts.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "submit.sh: error: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
abspath() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

model="" questions="" shards="" out="" gpus=1 cpus="" mem="" partition="" time_limit="" bin="" log_dir=""
run_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --model|--questions|--shards|--out|--gpus-per-task|--cpus-per-task|--mem|--partition|--time|--bin|--log-dir)
      [ $# -ge 2 ] || die "$1 needs a value"
      case $1 in
        --model) model=$2 ;; --questions) questions=$2 ;; --shards) shards=$2 ;; --out) out=$2 ;;
        --gpus-per-task) gpus=$2 ;; --cpus-per-task) cpus=$2 ;; --mem) mem=$2 ;;
        --partition) partition=$2 ;; --time) time_limit=$2 ;; --bin) bin=$2 ;; --log-dir) log_dir=$2 ;;
      esac
      shift 2 ;;
    --) shift; run_args=("$@"); break ;;
    -h|--help) usage ;;
    *) die "unknown option '$1' (docent-eval run flags go after --)" ;;
  esac
done

[ -n "$model" ] && [ -n "$questions" ] && [ -n "$shards" ] && [ -n "$out" ] \
  || die "--model, --questions, --shards and --out are required (--help)"
[[ $shards =~ ^[1-9][0-9]*$ ]] || die "--shards must be a positive integer, not '$shards'"
[[ $gpus =~ ^[0-9]+$ ]] || die "--gpus-per-task must be a non-negative integer, not '$gpus'"
[ -z "$cpus" ] || [[ $cpus =~ ^[1-9][0-9]*$ ]] || die "--cpus-per-task must be a positive integer, not '$cpus'"
[ -f "$model" ] || die "model $model not found"
[ -f "$questions" ] || die "question file $questions not found"
for arg in ${run_args[@]+"${run_args[@]}"}; do
  case $arg in
    --shard|--shard=*|--shards|--shards=*|--db|--db=*|--model|--model=*|--questions|--questions=*|--resume)
      die "$arg is set by the Slurm scripts; leave it out of the run flags" ;;
  esac
done
# shards.sbatch deletes its local copy once published, so it refuses a LOCAL_DIR that is the
# output directory; refused here too, before anything is submitted (by path, and by device and
# inode when both exist).
if [ -n "${LOCAL_DIR:-}" ] && { [ "$(realpath -m -- "$LOCAL_DIR")" = "$(realpath -m -- "$out")" ] || [ "$LOCAL_DIR" -ef "$out" ]; }; then
  die "LOCAL_DIR $LOCAL_DIR is the output directory $out; set LOCAL_DIR to a node-local directory of its own, or unset it"
fi
if [ -z "$bin" ]; then
  bin=$(command -v docent-eval || true)
  [ -n "$bin" ] || bin=$here/../../target/release/docent-eval
fi
[ -x "$bin" ] || die "docent-eval binary $bin is not executable (--bin PATH)"
command -v sbatch >/dev/null || die "sbatch not found (is this a Slurm submit host? SLURM_CONF set?)"

bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
model=$(abspath "$model")
questions=$(abspath "$questions")
mkdir -p "$out"
out=$(cd "$out" && pwd)
log_dir=${log_dir:-$out/logs}
mkdir -p "$log_dir"
log_dir=$(cd "$log_dir" && pwd)

existing=0
for f in "$out"/shard-*.db; do [ -e "$f" ] && existing=$((existing + 1)); done
[ "$existing" = 0 ] || echo "submit.sh: $out holds $existing shard database(s); their shards resume from them" >&2

# The configuration reaches the jobs through the environment (--export=ALL): values may hold
# commas and spaces, which --export=VAR=value cannot carry.
export DOCENT_BIN=$bin DOCENT_MODEL=$model DOCENT_QUESTIONS=$questions DOCENT_OUT=$out DOCENT_SHARDS=$shards
DOCENT_RUN_ARGS=""
[ ${#run_args[@]} -eq 0 ] || DOCENT_RUN_ARGS=$(printf '%q ' "${run_args[@]}")
export DOCENT_RUN_ARGS

common=(--parsable --export=ALL --open-mode=append)
[ -z "$partition" ] || common+=(--partition="$partition")
[ -z "$time_limit" ] || common+=(--time="$time_limit")
task=()
[ "$gpus" = 0 ] || task+=(--gres=gpu:"$gpus")
[ -z "$cpus" ] || task+=(--cpus-per-task="$cpus")
[ -z "$mem" ] || task+=(--mem="$mem")

array_job=$(sbatch "${common[@]}" "${task[@]}" --array=0-$((shards - 1)) --job-name=docent-shards \
  --output="$log_dir/%x-%A_%a.log" "$here/shards.sbatch") || die "sbatch of the array job failed"
array_job=${array_job%%;*}
# --kill-on-invalid-dep=no: when a shard fails the merge stays pending (DependencyNeverSatisfied)
# instead of being cancelled, so the shard can be requeued and the merge released (docs/cluster.md).
merge_job=$(sbatch "${common[@]}" --dependency=afterok:"$array_job" --kill-on-invalid-dep=no \
  --job-name=docent-merge --output="$log_dir/%x-%j.log" "$here/merge.sbatch") \
  || die "sbatch of the merge job failed (the array job $array_job is submitted; scancel it or submit merge.sbatch by hand)"
merge_job=${merge_job%%;*}

{
  echo "# $(date -u +%FT%TZ) scripts/slurm/submit.sh"
  for var in ARRAY_JOB=$array_job MERGE_JOB=$merge_job DOCENT_BIN DOCENT_MODEL DOCENT_QUESTIONS DOCENT_OUT DOCENT_SHARDS DOCENT_RUN_ARGS LOG_DIR=$log_dir; do
    case $var in *=*) printf '%s=%q\n' "${var%%=*}" "${var#*=}" ;; *) printf '%s=%q\n' "$var" "${!var}" ;; esac
  done
} >>"$out/submit.env"

echo "array job $array_job: $shards shard(s) of $(basename "$questions") through $(basename "$model"), ${gpus} GPU(s) each"
echo "merge job $merge_job: runs after every shard succeeded; writes $out/all.db and $out/report.html"
echo "logs: $log_dir/docent-shards-${array_job}_<task>.log, $log_dir/docent-merge-$merge_job.log"
echo "ARRAY_JOB=$array_job MERGE_JOB=$merge_job"
