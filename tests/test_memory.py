"""Out of memory: micro-batches with gradient accumulation, --batch-gpu auto, one clear message, evaluation fallback."""

import os
import resource
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from degan.cli import main
from degan.errors import OutOfMemoryError
from degan.losses import GANObjective
from degan.metrics.inception import extract_features
from degan.train import Trainer, make_state
from degan.train.memory import is_oom, oom_error, probe_micro_batch, requested_bytes

CPU_OOM = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to " \
          "allocate 536870912 bytes. Error code 12 (Cannot allocate memory)"
CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.79 GiB"


class ToyG(nn.Module):
    """No batch statistics: the loss of a batch is exactly the mean of its images' losses."""

    z_dim = 8

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3 * 8 * 8)

    def forward(self, z):
        return torch.tanh(self.fc(z)).view(-1, 3, 8, 8)


class ToyD(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 1)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1)).squeeze(1)


def toy_trainer(micro=None, objective=None, batch=8):
    torch.manual_seed(0)
    state = make_state(ToyG(), ToyD(), lr_G=1e-3, lr_D=1e-3, betas=(0.0, 0.9), seed=1)
    images = torch.randint(0, 256, (32, 3, 8, 8), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    return Trainer(state, images, objective or GANObjective("hinge", None), total_kimg=1, batch_D=batch,
                   batch_G=batch, n_dis=2, ema_decay=0.9, mirror=True, micro_batch=micro)


def params(state):
    return {k: v.clone() for net in ("G", "D", "G_ema") for k, v in getattr(state, net).state_dict().items()
            for k in [f"{net}.{k}"]}


def test_micro_batches_accumulate_the_gradient_of_the_whole_batch():
    ref, acc = toy_trainer(None), toy_trainer(3)  # 8 = 3 + 3 + 2: uneven chunks weighted by their share
    for _ in range(3):
        s_ref, s_acc = ref.train_step(), acc.train_step()
    a, b = params(ref.state), params(acc.state)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert s_ref.keys() == s_acc.keys()
    for k in s_ref:
        assert s_acc[k] == pytest.approx(s_ref[k], rel=1e-4, abs=1e-6), k
    assert ref.state.cur_nimg == acc.state.cur_nimg == 3 * 2 * 8
    for name in ("latent", "batch", "augment"):  # the same random draws, whatever the micro-batch
        assert torch.equal(ref.state.generators[name].get_state(), acc.state.generators[name].get_state())


def test_micro_batch_of_the_whole_batch_is_bit_identical():
    ref, same = toy_trainer(None), toy_trainer(8)
    for _ in range(2):
        ref.train_step(), same.train_step()
    a, b = params(ref.state), params(same.state)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_micro_batch_must_be_positive():
    with pytest.raises(ValueError, match="micro_batch"):
        toy_trainer(0)


def test_oom_is_recognised_and_its_size_read():
    assert is_oom(RuntimeError(CPU_OOM)) and requested_bytes(RuntimeError(CPU_OOM)) == 512 * 2 ** 20
    assert is_oom(torch.OutOfMemoryError(CUDA_OOM)) and requested_bytes(torch.OutOfMemoryError(CUDA_OOM)) == 2 * 2 ** 30
    assert not is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_oom(ValueError("out of memory"))  # only the allocator's RuntimeError kinds
    wrapped = RuntimeError("stage failed")
    wrapped.__cause__ = RuntimeError(CPU_OOM)
    assert is_oom(wrapped)


def test_oom_message_names_the_settings_and_a_batch_that_fits():
    e = oom_error(RuntimeError(CPU_OOM), where="the training step at kimg 0.00", model="dcgan", width=0.5,
                  resolution=64, batch=2048, batch_per_process=1024, micro_batch=None, device="cpu")
    msg = str(e)
    assert isinstance(e, OutOfMemoryError) and e.exit_code == 12
    for part in ("out of CPU memory", "dcgan (width 0.5)", "64 px", "batch 2048", "1024 per process",
                 "1024 per pass", "512 MiB", "--batch-gpu 512", "--resume latest"):
        assert part in msg, part
    assert "\n" not in msg
    one = str(oom_error(RuntimeError(CPU_OOM), where="x", model="dcgan", width=1, resolution=64, batch=4,
                        batch_per_process=4, micro_batch=1, device="cpu"))
    assert "Even one image per pass does not fit" in one


class OOMAbove(GANObjective):
    """Refuses (like the CPU allocator) any pass over more than ``limit`` images."""

    def __init__(self, limit):
        super().__init__("hinge", None)
        self.limit = limit

    def d_loss(self, G, D, real, z, generator=None, **kw):
        if real.shape[0] > self.limit:
            raise RuntimeError(CPU_OOM)
        return super().d_loss(G, D, real, z, generator, **kw)

    def g_loss(self, G, D, z, generator=None, **kw):
        if z.shape[0] > self.limit:
            raise RuntimeError(CPU_OOM)
        return super().g_loss(G, D, z, generator, **kw)


def test_probe_keeps_the_largest_micro_batch_that_fits_and_restores_the_state():
    tr = toy_trainer(None, OOMAbove(5), batch=16)
    before = params(tr.state)
    rng = {k: g.get_state() for k, g in tr.state.generators.items()}
    opt_before = tr.state.opt_D.state_dict()
    assert probe_micro_batch(tr, log=lambda *_: None) == 4  # 16 and 8 refused
    after = params(tr.state)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(rng[k], g.get_state()) for k, g in tr.state.generators.items())
    assert tr.state.cur_nimg == 0 and tr.state.step == 0 and tr.state.opt_D.state_dict()["state"] == opt_before["state"]
    assert tr.sync is True and tr.micro_batch == 4
    # the probed run is the run started with --batch-gpu 4
    ref = toy_trainer(4, OOMAbove(5), batch=16)
    tr.train_step(), ref.train_step()
    a, b = params(tr.state), params(ref.state)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_probe_reraises_when_nothing_fits():
    tr = toy_trainer(None, OOMAbove(0), batch=4)
    with pytest.raises(RuntimeError, match="can't allocate"):
        probe_micro_batch(tr, log=lambda *_: None)
    assert tr.state.cur_nimg == 0


def test_feature_extraction_halves_its_batch_on_oom(capsys):
    class Extractor(nn.Module):
        num_features = 2

        def forward(self, x):
            if x.shape[0] > 3:
                raise RuntimeError(CPU_OOM)
            return x.float().mean(dim=(2, 3))[:, :2]

    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    feats = extract_features(images, Extractor(), batch_size=8)
    expected = images.double().mean(dim=(2, 3))[:, :2]
    torch.testing.assert_close(feats, expected)
    assert "continuing with 2 images per pass" in capsys.readouterr().err


TINY = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--kimg", "0.032",
        "--metrics", "none", "--no-progress", "--threads", "1"]


def test_cli_oom_in_training_is_one_message_and_the_run_resumes(tmp_path, monkeypatch):
    real_step = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", lambda self: (_ for _ in ()).throw(torch.OutOfMemoryError(CUDA_OOM)))
    args = ["train", "--data", "faces100", "--outdir", str(tmp_path), *TINY]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 12, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.output
    assert "out of CPU memory in the training step" in lines[0] and "--batch-gpu 4" in lines[0]
    monkeypatch.setattr(Trainer, "train_step", real_step)
    res = CliRunner().invoke(main, args + ["--resume", "latest", "--batch-gpu", "4"])
    assert res.exit_code == 0, res.output
    done = next(tmp_path.glob("*/level_0/done.json")).read_text()
    assert '"micro_batch": 4' in done and '"real_images_shown": 32' in done


def test_cli_batch_gpu_is_checked(tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", "faces100", "--outdir", str(tmp_path), *TINY,
                                    "--batch-gpu", "9"])
    assert res.exit_code == 2 and "--batch-gpu 9 is more than the 8 images per process" in res.output
    res = CliRunner().invoke(main, ["train", "--data", "faces100", "--outdir", str(tmp_path), *TINY,
                                    "--batch-gpu", "many"])
    assert res.exit_code == 2 and "train.batch_gpu must be auto" in res.output
    assert not any(tmp_path.iterdir())


def _limit_memory(limit):
    def pre():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return pre


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux features")
def test_real_allocator_oom_under_rlimit_then_batch_gpu_auto_trains(tmp_path):
    """A batch that cannot fit under a 2.4 GB address-space limit: one message, exit 12; then --batch-gpu auto picks
    a micro-batch that fits and the run finishes with the same total batch."""
    cmd = [sys.executable, "-m", "degan.cli", "train", "--data", "faces100", "--outdir", str(tmp_path), "--model",
           "dcgan", "--resolution", "64", "--batch", "1024", "--kimg", "1", "--metrics", "none", "--no-progress",
           "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    limit = 2_400 * 2 ** 20
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=_limit_memory(limit), timeout=600)
    assert first.returncode == 12, first.stderr[-2000:]
    assert "Traceback" not in first.stderr and "out of CPU memory" in first.stderr and "--batch-gpu" in first.stderr
    second = subprocess.run(cmd + ["--resume", "latest", "--batch-gpu", "auto"], capture_output=True, text=True,
                            env=env, preexec_fn=_limit_memory(limit), timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    done = next(tmp_path.glob("*/level_0/done.json")).read_text()
    import json

    info = json.loads(done)
    assert info["micro_batch"] < 1024 and info["real_images_shown"] == 1024 and info["step"] == 1


def test_cli_oom_in_a_later_step_keeps_the_checkpoints_before_it(tmp_path, monkeypatch):
    real_step, calls = Trainer.train_step, []

    def step(self):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError(CPU_OOM)
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", step)
    res = CliRunner().invoke(main, ["train", "--data", "faces100", "--outdir", str(tmp_path), *TINY,
                                    "--snap", "0.008"])
    assert res.exit_code == 12 and "Traceback" not in res.output
    assert "out of CPU memory in the training step at kimg 0.02" in res.output
    ckpts = sorted(p.name for p in tmp_path.glob("*/level_0/checkpoints/ckpt-*.pt"))
    assert ckpts == ["ckpt-000000008.pt", "ckpt-000000016.pt"]  # the two written before the fault (keep 2)
    for p in tmp_path.glob("*/level_0/checkpoints/ckpt-*.pt"):
        torch.load(p, weights_only=True)


def test_cli_oom_in_the_evaluation_names_the_eval_batch(tmp_path, monkeypatch):
    import degan.lottery.stage as stage

    def oom(*a, **k):
        raise torch.OutOfMemoryError(CUDA_OOM)

    monkeypatch.setattr(stage, "evaluate_generator", oom)
    args = ["train", "--data", "faces100", "--outdir", str(tmp_path), *[a for a in TINY if a != "none"]]
    args[args.index("--metrics") + 1:args.index("--metrics") + 1] = ["kid_train"]
    res = CliRunner().invoke(main, args + ["--num-gen", "64"])
    assert res.exit_code == 12, res.output
    line = [ln for ln in res.output.splitlines() if ln.startswith("error:")][0]
    assert "in the evaluation of level_0" in line and "--set eval.batch_size=32" in line and "2 GiB" in line
    assert next(tmp_path.glob("*/level_0/G_ema.safetensors")).is_file()  # the trained G is kept
