"""Data-parallel training (degan.train.distributed) with 2 gloo processes on CPU.

Workers are separate Python processes joined by a free TCP port (no torchrun needed); every launch has a timeout,
so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from degan.cli import main
from degan.train.distributed import per_rank_batch, sample_indices, shard_bounds

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--snap", "0.032",
        "--metrics", "none", "--no-progress", "--set", "train.log_kimg=0.016", "--set", "train.keep_checkpoints=10",
        "--set", "eval.monitor_every_kimg=null"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, body: str, world: int = 2, timeout: float = 300.0, env: dict | None = None
           ) -> tuple[list[int], list[dict | None], list[str]]:
    """Run ``body`` (Python source; ``RANK``, ``OUT`` (a folder) in scope, the group joined by
    ``init_from_env("cpu")``) in ``world`` processes. Returns exit codes, each rank's ``OUT/rank<r>.json`` (None if
    missing) and stderr texts. Kills everything and fails after ``timeout`` seconds (generous: two processes that
    import torch on a loaded 2-core machine have run past 120 s)."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys
        from pathlib import Path
        import torch
        torch.set_num_threads(1)
        from degan.train import distributed as ddp
        RANK = int(os.environ["RANK"])
        OUT = Path(sys.argv[1])
        ddp.init_from_env("cpu")
        def save(obj):
            (OUT / f"rank{RANK}.json").write_text(json.dumps(obj))
    """) + textwrap.dedent(body) + "\nddp.shutdown()\n")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    port = free_port()
    procs = []
    for r in range(world):
        e = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                 MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), **(env or {}))
        procs.append(subprocess.Popen([sys.executable, str(script), str(out)], env=e, cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout
    errs = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            errs.append(err)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"distributed workers hung for more than {timeout} s")
    results = []
    for r in range(world):
        f = out / f"rank{r}.json"
        results.append(json.loads(f.read_text()) if f.is_file() else None)
    return [p.returncode for p in procs], results, errs


def cli(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


# ---------------------------------------------------------------------------------------------------------------------
# single-process pieces


def test_sample_indices_single_process_is_the_original_draw():
    a = sample_indices(10, 7, torch.Generator().manual_seed(3), cur_nimg=123)
    b = torch.randint(0, 10, (7,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_shard_bounds_cover_disjointly():
    for n, w in [(100, 2), (7, 3), (3, 8), (1, 1)]:
        b = shard_bounds(n, w)
        covered = [i for s, e in b for i in range(s, e)]
        assert covered == list(range(n))
        assert max(e - s for s, e in b) - min(e - s for s, e in b) <= 1


def test_per_rank_batch_single_process():
    assert per_rank_batch(12) == 12


# ---------------------------------------------------------------------------------------------------------------------
# 2 processes: the library


TRAIN_BODY = """
from degan.models import create_model
from degan.pruning import add_masks, get_mask, ones_like_mask, set_mask, PRUNERS
from degan.pruning.mask import masked_layers, raw_weight
from degan.train.distributed import sample_indices
from degan.losses import GANObjective
from degan.augment import build_augment
from degan.augment.lecam import LeCam
from degan.train import Trainer, make_state

# 1) averaging of gradients-like tensors, r_t and LeCam EMAs
t = [torch.full((3,), float(RANK + 1)), torch.full((2, 2), 10.0 * RANK)]
ddp.all_reduce_tensors_(t)
rt = ddp.global_mean_and_count(1.0 if RANK == 0 else -0.5, 4)
lc = LeCam(decay=0.5)
lc.update(torch.full((4,), float(RANK)), torch.full((4,), -float(RANK)))

# 2) the data partition: indices drawn by each rank at the same cur_nimg
g = torch.Generator().manual_seed(RANK)
shards = {str(n): [sample_indices(n, 64, g, cur_nimg=c).tolist() for c in (0, 8, 16)] for n in (100, 7, 3)}

# 3) training with a ticket mask (half of D and G pruned at random), DiffAugment, n_dis=2
torch.manual_seed(0)  # the init seed is the same on every rank
G, D = create_model("dcgan", resolution=16, width=0.25, z_dim=16, pre_sn_hook=add_masks)
for net in (G, D):
    set_mask(net, PRUNERS.get("random")(net, ones_like_mask(net), 0.5, seed=1))
state = make_state(G, D, lr_G=2e-3, lr_D=2e-3, betas=(0.0, 0.9), seed=0)
images = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
seen = []
class Record:
    def on_train_start(self, tr): pass
    def on_step_end(self, tr, stats): seen.append(dict(stats, cur_nimg=tr.state.cur_nimg))
    def on_train_end(self, tr): pass
trainer = Trainer(state, images, GANObjective("hinge", build_augment("diffaug:color,translation,cutout")),
                  total_kimg=0.048, batch_D=4, batch_G=4, n_dis=2, ema_decay=0.9,
                  callbacks=ddp.stage_callbacks([Record()]))
trainer.run()
fp = ddp.fingerprints({"G": state.G, "D": state.D, "G_ema": state.G_ema}, buffers=True)
pruned_zero = all(bool((raw_weight(m)[mk.mask == 0] == 0).all()) for net in (state.G, state.D)
                  for _, m, mk in masked_layers(net))
# 4) the check helper catches a difference
with torch.no_grad():
    if RANK == 1:
        next(state.G.parameters()).add_(1e-3)
try:
    ddp.assert_in_sync({"G": state.G})
    caught = ""
except RuntimeError as e:
    caught = str(e)
save({"avg": [x.tolist() for x in t], "rt": rt, "lecam": [lc.alpha_R, lc.alpha_F], "shards": shards,
      "stats": seen, "fp": {k: list(v) for k, v in fp.items()}, "pruned_zero": pruned_zero, "caught": caught,
      "density": sum(int(m.sum()) for m in get_mask(state.D).values())})
"""


def test_two_ranks_train_in_sync(tmp_path):
    codes, (r0, r1), errs = launch(tmp_path, TRAIN_BODY)
    assert codes == [0, 0], errs
    # averaging
    assert r0["avg"] == r1["avg"] == [[1.5] * 3, [[5.0, 5.0], [5.0, 5.0]]]
    assert r0["rt"] == r1["rt"] == pytest.approx([0.25, 8])
    assert r0["lecam"] == r1["lecam"] == pytest.approx([0.5, -0.5])
    # the partition: disjoint per step, every image reachable, in range
    for n, draws0 in r0["shards"].items():
        for a, b in zip(draws0, r1["shards"][n]):
            assert all(0 <= i < int(n) for i in a + b)
            if int(n) >= 2:
                assert not set(a) & set(b), f"ranks share images at n={n}"
        if int(n) == 3:  # 3 images on 2 ranks: a shard of 1 and of 2, all 3 used
            assert set(draws0[0]) | set(r1["shards"][n][0]) == {0, 1, 2}
    # training: identical weights, masks, BN stats and G_ema; identical averaged stats; global #RI
    assert r0["fp"] == r1["fp"]
    assert r0["stats"] == r1["stats"]
    assert [s["cur_nimg"] for s in r0["stats"]] == [16, 32, 48]  # 2 ranks x 4 reals x n_dis 2 per iteration
    assert r0["pruned_zero"] and r1["pruned_zero"]
    assert r0["density"] == r1["density"]
    # a perturbed parameter is reported on every rank
    assert "out of sync" in r0["caught"] and "out of sync" in r1["caught"]


def test_failing_rank_does_not_hang(tmp_path):
    body = """
if RANK == 1:
    raise SystemExit("rank 1 fails on purpose")
x = torch.ones(3)
try:
    torch.distributed.all_reduce(x)
    save({"status": "reduced"})
except Exception as e:
    save({"status": "error", "msg": str(e)[:200]})
    raise
"""
    t0 = time.monotonic()
    codes, results, errs = launch(tmp_path, body, timeout=90, env={"DEGAN_DIST_TIMEOUT_S": "20"})
    assert time.monotonic() - t0 < 90
    assert codes[1] != 0 and codes[0] != 0, errs
    assert results[0] is None or results[0]["status"] == "error"


# ---------------------------------------------------------------------------------------------------------------------
# bad input (checked before any process starts)


def test_cli_gpus_more_than_available(tmp_path):
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out = cli(["train", "--outdir", tmp_path, "--data", "faces100", *TINY, "--gpus", str(have + 1)], expect=2)
    assert "more GPUs than are available" in out


def test_cli_world_size_must_divide_batch(tmp_path):
    out = cli(["train", "--outdir", tmp_path, "--data", "faces100", *TINY, "--nproc", "3"], expect=2)
    assert "not divisible by 3" in out
    out = cli(["train", "--outdir", tmp_path, "--data", "faces100", *TINY, "--nproc", "2", "--batch-gpu", "5"],
              expect=2)
    assert "--batch-gpu 5 is more than the 4 images per process" in out
    out = cli(["train", "--outdir", tmp_path, "--data", "faces100", *TINY, "--nproc", "2", "--gpus", "1"], expect=2)
    assert "exclude each other" in out
    assert not any(tmp_path.iterdir())  # nothing written


# ---------------------------------------------------------------------------------------------------------------------
# 2 processes: the CLI end to end


def _degan(args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    try:
        p = subprocess.run([sys.executable, "-m", "degan.cli", *map(str, args)], env=env, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"degan {' '.join(map(str, args[:2]))} with 2 processes hung for more than {timeout} s")
    return p


@pytest.mark.slow
def test_cli_train_two_procs_then_resume_on_one(tmp_path):
    outdir = tmp_path / "runs"
    args = ["train", "--outdir", outdir, "--data", "faces100", *TINY, "--kimg", "0.064"]
    p = _degan([*args, "--nproc", "2"])
    assert p.returncode == 0, p.stderr[-3000:]
    (run_dir,) = list(outdir.iterdir())  # one run folder
    stage = run_dir / "level_0"
    assert json.loads((stage / "done.json").read_text())["real_images_shown"] == 64
    assert p.stdout.count("report.md") == 1  # printed by rank 0 only
    lines = [json.loads(x) for x in (stage / "stats.jsonl").read_text().splitlines()]
    assert [x["cur_nimg"] for x in lines] == [16, 32, 48, 64]  # one writer, global #RI
    # interrupt after the first snapshot, then continue in a single process from the 2-rank checkpoint
    (stage / "done.json").unlink()
    sorted((stage / "checkpoints").glob("ckpt-*.pt"))[-1].unlink()
    cli([*args, "--resume", "latest"])
    assert json.loads((stage / "done.json").read_text())["real_images_shown"] == 64


@pytest.mark.slow
def test_cli_ticket_two_procs_one_level(tmp_path):
    outdir = tmp_path / "runs"
    p = _degan(["ticket", "--outdir", outdir, "--data", "faces100", *TINY, "--kimg", "0.032", "--levels", "1",
                "--nproc", "2", "--augment", "diffaug:translation"])
    assert p.returncode == 0, p.stderr[-3000:]
    (run_dir,) = list(outdir.iterdir())
    d1 = json.loads((run_dir / "level_1" / "done.json").read_text())
    assert d1["density_G"] == pytest.approx(0.8, abs=0.01) and d1["density_D"] == pytest.approx(0.8, abs=0.01)
    assert (run_dir / "report.md").is_file()
