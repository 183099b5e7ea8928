#!/bin/bash
# wattledger Slurm prolog: record which job holds which GPU on this node, for the agent's
# `slurm` source (--slurm-job-dir). Install on every GPU node as slurm.conf's Prolog (run by
# slurmd as root on the compute node; PrologSlurmctld runs on the controller and cannot
# write this node's files), with PrologFlags=Alloc so it runs when the job is allocated.
#
# Files, under $WATTLEDGER_SLURM_JOB_DIR (default /run/wattledger/slurm-jobs):
#   <gpu>          one per GPU of the job, named as SLURM_JOB_GPUS names it (the GPU index,
#                  or its UUID with gres.conf Flags=env_uuid): the ids of the jobs holding it,
#                  one per line. This is dcgm-exporter's HPC job mapping layout
#                  (--hpc-job-mapping-dir): a site can point both at one folder.
#   jobs/<job id>  key=value lines: job, account, user, partition, gpus, start (unix seconds).
#                  dcgm-exporter ignores the folder; without it the agent knows only the job id.
#
# Accounting must never fail a job: every error is ignored and the script exits 0 (a failing
# Prolog drains the node).
PATH=/usr/bin:/bin
umask 022
dir="${WATTLEDGER_SLURM_JOB_DIR:-/run/wattledger/slurm-jobs}"
job="${SLURM_JOB_ID:-${SLURM_JOBID:-}}"
gpus="${SLURM_JOB_GPUS:-${CUDA_VISIBLE_DEVICES:-}}"
case "$job" in "" | *[!0-9_]*) exit 0 ;; esac
mkdir -p "$dir/jobs" 2>/dev/null || exit 0

one_line() { printf '%s' "$1" | tr -d '\r\n' | cut -c1-256; }

{
    command -v flock >/dev/null && flock -w 10 9
    # the metadata first, so that the agent never sees the job's GPUs without it
    tmp=$(mktemp "$dir/jobs/.$job.XXXXXX") && {
        printf 'job=%s\n' "$job"
        printf 'account=%s\n' "$(one_line "${SLURM_JOB_ACCOUNT:-}")"
        printf 'user=%s\n' "$(one_line "${SLURM_JOB_USER:-}")"
        printf 'partition=%s\n' "$(one_line "${SLURM_JOB_PARTITION:-}")"
        printf 'gpus=%s\n' "$(one_line "$gpus")"
        printf 'start=%s\n' "$(date +%s)"
    } >"$tmp" && chmod 644 "$tmp" && mv -f "$tmp" "$dir/jobs/$job"
    for gpu in ${gpus//,/ }; do
        case "$gpu" in "" | jobs | *[!A-Za-z0-9-]*) continue ;; esac # an index or a UUID only
        grep -qx -- "$job" "$dir/$gpu" 2>/dev/null || printf '%s\n' "$job" >>"$dir/$gpu"
    done
} 9>>"$dir/.lock" 2>/dev/null
exit 0
