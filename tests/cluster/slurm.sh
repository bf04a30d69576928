#!/usr/bin/env bash
# A real Slurm test of `evolve --slurm` / `--shard` / `--merge`: installs Debian's slurm-wlm
# and munge, starts a one-node cluster on this machine (munged, slurmctld and slurmd on
# localhost, state in a temporary folder), then
#   1. the driver: `evolve --slurm 4` (per generation one 4-task job array with
#      `--shard auto` from SLURM_ARRAY_TASK_ID, then the merge step) for 2 generations;
#   2. the README's manual recipe: `sbatch --array=0-3 --wait` of `--shard auto`, `--merge`,
#      again, `--merge`;
# and compares both with a single-process run byte for byte (best.onnx, ensemble.onnx,
# report.json without its timings and output paths).
# Usage: tests/cluster/slurm.sh [SMD_ONNX_BINARY]. Must run as root (or with sudo -n).
# Skips (exit 0, loudly) only when the packages cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bin=$(realpath "${1:-target/debug/smd-onnx}")
sudo=""; if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq slurm-wlm munge; } >/dev/null 2>&1; then
    echo "SKIPPED: tests/cluster/slurm.sh: could not install slurm-wlm and munge (apt-get failed)" >&2
    exit 0
  fi
fi

t=$(mktemp -d /tmp/smd-slurm.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do $sudo kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$t"
}
trap cleanup EXIT

# munge: its own key and socket in the temporary folder, run as the munge user (the socket's
# folder must be open to everyone, the key's to munge only).
chmod 755 "$t"
mkdir -p "$t/munge" "$t/munge-key"
$sudo chown munge: "$t/munge" "$t/munge-key"
$sudo chmod 755 "$t/munge"
$sudo chmod 700 "$t/munge-key"
key="$t/munge-key/munge.key"
$sudo dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
$sudo chown munge: "$key"
$sudo chmod 400 "$key"
sock="$t/munge/munge.socket"
$sudo runuser -u munge -- /usr/sbin/munged --force --foreground --key-file="$key" \
  --socket="$sock" --pid-file="$t/munge/munged.pid" --seed-file="$t/munge-key/seed" \
  2>"$t/munged.log" &
pids+=($!)
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
if [ ! -S "$sock" ]; then
  echo "FAILED: tests/cluster/slurm.sh: munged did not start: $(tail -3 "$t/munged.log")" >&2
  exit 1
fi

host=$(hostname -s)
node=$(slurmd -C | head -1)
mkdir -p "$t/state" "$t/spool"
cat > "$t/slurm.conf" <<CONF
ClusterName=smdci
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$t/state
SlurmdSpoolDir=$t/spool
SlurmctldPidFile=$t/slurmctld.pid
SlurmdPidFile=$t/slurmd.pid
SlurmctldLogFile=$t/slurmctld.log
SlurmdLogFile=$t/slurmd.log
SlurmctldPort=6917
SlurmdPort=6918
$node State=UNKNOWN
PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$t/slurm.conf"
$sudo env SLURM_CONF="$SLURM_CONF" slurmctld -D -i -f "$SLURM_CONF" 2>/dev/null &
pids+=($!)
$sudo env SLURM_CONF="$SLURM_CONF" slurmd -D -f "$SLURM_CONF" 2>/dev/null &
pids+=($!)
up() { timeout 5 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed)'; }
for _ in $(seq 100); do up && break; sleep 0.2; done
if ! up; then
  echo "FAILED: tests/cluster/slurm.sh: the one-node cluster did not come up" >&2
  tail -n 20 "$t/slurmctld.log" "$t/slurmd.log" >&2 || true
  exit 1
fi
echo "slurm: one-node cluster up ($node)"

model=$root/models/digits_cnn.onnx
data=$root/fixtures/digits_val.npz
run=(evolve "$model" --data "$data" --children 8 --generations 2 --threads 1)
work="$t/work"   # the shared folder every task writes into
mkdir -p "$work"
"$bin" "${run[@]}" --out "$work/single" >/dev/null

# 1. The driver: one job array per generation, merged here.
"$bin" "${run[@]}" --out "$work/driver" --slurm 4 --sbatch-arg=--time=10 >/dev/null

# 2. The manual recipe.
cat > "$t/shard.sbatch" <<JOB
#!/bin/sh
#SBATCH --array=0-3
#SBATCH --output=$t/manual-%a.log
exec "$bin" ${run[*]} --out "$work/manual" --shard auto
JOB
for g in 0 1; do
  sbatch --wait --parsable "$t/shard.sbatch" >/dev/null
  if [ "$g" = 0 ]; then
    # Generation 1's children are not scored yet: the merge lists them.
    if "$bin" "${run[@]}" --out "$work/manual" --merge 2>"$t/merge.err"; then
      echo "FAILED: the merge succeeded with generation 1 unscored" >&2; exit 1
    fi
    grep -q "generation 1: 8 of 8 children are not in the journal" "$t/merge.err" \
      || { echo "FAILED: unexpected merge error: $(cat "$t/merge.err")" >&2; exit 1; }
  fi
done
"$bin" "${run[@]}" --out "$work/manual" --merge >/dev/null

same_report() {
  python3 - "$1" "$2" <<'PY'
import json, sys
def load(p):
    r = json.load(open(p + "/report.json"))
    r.pop("timings"); r.pop("command", None)
    # The output folder's name is in the paths.
    r["outputs"] = {k: v.rsplit("/", 1)[-1] if isinstance(v, str) else v for k, v in r["outputs"].items()}
    return r
a, b = load(sys.argv[1]), load(sys.argv[2])
if a != b:
    print("report.json differs in: " + ", ".join(k for k in a if a[k] != b.get(k)), file=sys.stderr)
    sys.exit(1)
PY
}
for how in driver manual; do
  for f in best.onnx ensemble.onnx; do
    cmp "$work/single/$f" "$work/$how/$f" || { echo "FAILED: $how: $f differs from the single-process run" >&2; exit 1; }
  done
  same_report "$work/single" "$work/$how" || { echo "FAILED: $how: report.json differs" >&2; exit 1; }
  shards=$(ls "$work/$how/.smd-journal" | grep -c '^shard-.*-of-4.json$')
  [ "$shards" = 4 ] || { echo "FAILED: $how: $shards shard markers, expected 4" >&2; exit 1; }
done
echo "slurm: 4-task arrays over 2 generations (driver and manual recipe) match the single-process run byte for byte"
