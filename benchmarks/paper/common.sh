# Shared settings of the paper-scale scripts (sourced). Every script prints each degan command before running it;
# DRY=1 runs every command with --dry-run instead (resolves the config and the run folder, trains nothing).
#   DATA     the dataset the paper used (e.g. cifar-10-python.tar.gz); required
#   OUTDIR   where run folders go                        [runs/paper]
#   SEEDS    training seeds, space separated               [0 1 2]
#   EXTRA    more degan options for every command (e.g. "--gpus 4" or "--precision bf16")
set -euo pipefail
: "${DATA:?set DATA to the dataset the paper used (see the script header)}"
OUTDIR=${OUTDIR:-runs/paper}
SEEDS=${SEEDS:-0 1 2}
EXTRA=${EXTRA:-}
DEGAN=${DEGAN:-degan}

run() {
    echo "+ $DEGAN $* $EXTRA" >&2
    if [ "${DRY:-0}" = 1 ]; then
        $DEGAN "$@" $EXTRA --dry-run | tail -n 1
    else
        $DEGAN "$@" $EXTRA --resume latest
    fi
}
