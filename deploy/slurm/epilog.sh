#!/bin/bash
# wattledger Slurm epilog: the job no longer holds its GPUs. Install as slurm.conf's Epilog
# on every GPU node, beside deploy/slurm/prolog.sh (same $WATTLEDGER_SLURM_JOB_DIR).
#
# Removes the job's id from every GPU file of the folder (not only those SLURM_JOB_GPUS
# names: older Slurm releases set it in the Prolog only), deletes a GPU file left empty, then
# the job's metadata. Exits 0 whatever happens (a failing Epilog drains the node).
PATH=/usr/bin:/bin
dir="${WATTLEDGER_SLURM_JOB_DIR:-/run/wattledger/slurm-jobs}"
job="${SLURM_JOB_ID:-${SLURM_JOBID:-}}"
case "$job" in "" | *[!0-9_]*) exit 0 ;; esac
[ -d "$dir" ] || exit 0

{
    command -v flock >/dev/null && flock -w 10 9
    for file in "$dir"/*; do
        [ -f "$file" ] && grep -qx -- "$job" "$file" 2>/dev/null || continue
        rest=$(grep -vx -- "$job" "$file")
        if [ -n "$rest" ]; then
            printf '%s\n' "$rest" >"$file.$job.tmp" && mv -f "$file.$job.tmp" "$file"
        else
            rm -f "$file"
        fi
    done
    rm -f "$dir/jobs/$job"
} 9>>"$dir/.lock" 2>/dev/null
exit 0
