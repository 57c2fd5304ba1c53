"""How fast do a dense run's magnitude masks settle? The measurement behind the early-bird threshold (SPEC §10).

The early-bird criterion (You et al., ICLR 2020) draws the ticket when the normalised Hamming distance between the
masks of consecutive checks stays below ``eps``. Whether that point means "the mask has converged" depends on how
the distance evolves. This script reads every periodic checkpoint of one level of a run (train it with
``--snap 4 --set train.keep_checkpoints=1000`` so that they are kept), computes with degan's own pruners:

- the mask the next IMP level would get (``imp_global`` at ``--rate`` of the remaining weights, G and D), and
- the one-shot mask at the final density ``(1 - rate) ** levels`` (``omp``),

and reports for each checkpoint the distance to the previous checkpoint's mask (what the early-bird check sees,
per ``--snap`` kimg), the distance to the mask of the last checkpoint (the one IMP uses), and the fraction of the
final mask's kept weights already kept. Writes ``benchmarks/results/early_bird_drift.json``.

    PYTHONPATH=src python benchmarks/early_bird_drift.py RUN_FOLDER [--level 0] [--rate 0.2] [--levels 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from degan.config import RunConfig, from_dict
from degan.lottery.early_bird import mask_distance
from degan.lottery.experiment import build_networks
from degan.pruning import PRUNERS, get_mask, ones_like_mask
from degan.train.checkpoint import load_checkpoint


def masks_of(ckpt: Path, rate: float, final_density: float) -> tuple[int, dict, dict]:
    ck = load_checkpoint(ckpt)
    cfg = from_dict(RunConfig, ck["config"])
    G, D = build_networks(cfg)
    G.load_state_dict(ck["state"]["G"])
    D.load_state_dict(ck["state"]["D"])
    nets = {"G": G, "D": D}
    imp = {n: {k: v.bool() for k, v in PRUNERS.get("imp_global")(m, get_mask(m), rate).items()} for n, m in nets.items()}
    omp = {n: {k: v.bool() for k, v in PRUNERS.get("omp")(m, ones_like_mask(m), target_density=final_density).items()}
           for n, m in nets.items()}
    return int(ck["state"]["cur_nimg"]), imp, omp


def kept_overlap(a: dict, final: dict) -> float:
    both = sum(int((a[n][k] & final[n][k]).sum()) for n in final for k in final[n])
    kept = sum(int(final[n][k].sum()) for n in final for k in final[n])
    return both / kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="run folder (its level_<level>/checkpoints/ckpt-*.pt are read)")
    ap.add_argument("--level", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0.2)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "early_bird_drift.json")
    args = ap.parse_args()
    ckpts = sorted((args.run / f"level_{args.level}" / "checkpoints").glob("ckpt-*.pt"))
    if len(ckpts) < 3:
        raise SystemExit(f"{args.run}: {len(ckpts)} checkpoints; train with --snap 4 --set train.keep_checkpoints=1000")
    final_density = (1 - args.rate) ** args.levels
    rows = [masks_of(p, args.rate, final_density) for p in ckpts]
    _, imp_last, omp_last = rows[-1]
    out = []
    for i, (nimg, imp, omp) in enumerate(rows):
        r = {"kimg": nimg / 1000,
             "imp_to_final": mask_distance(imp, imp_last), "imp_kept_overlap": kept_overlap(imp, imp_last),
             "omp_to_final": mask_distance(omp, omp_last), "omp_kept_overlap": kept_overlap(omp, omp_last)}
        if i:
            r["imp_consecutive"] = mask_distance(rows[i - 1][1], imp)
            r["omp_consecutive"] = mask_distance(rows[i - 1][2], omp)
        out.append(r)
        print(" ".join(f"{k} {v:.4f}" for k, v in r.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "run": args.run.name, "level": args.level, "rate": args.rate, "final_density": final_density,
        "checkpoint_period_kimg": (rows[1][0] - rows[0][0]) / 1000, "rows": out,
        "command": f"PYTHONPATH=src python benchmarks/early_bird_drift.py <run> --level {args.level} "
                   f"--rate {args.rate} --levels {args.levels}",
        "torch": torch.__version__}, indent=1) + "\n")


if __name__ == "__main__":
    main()
