"""Golden hashes: a short run of every technique through the real CLI gives bit-identical weights from commit to
commit (issue 14: a refactor changes nothing for users or numbers, so every result made so far stays valid).

Each case trains a tiny model on the embedded ``faces100`` with one torch thread and a fixed seed, then hashes the
weights its run folder holds: per stage, every ``*.safetensors`` file of the stage (G_ema, masks, Sparse/Dense RG
generators, the best snapshot, CycleGAN's translators) and the discriminator(s) of the stage's last checkpoint,
each as sha256 over the tensors' raw bytes in sorted key order (not the file bytes: metadata may change freely).

Weights depend on the machine: oneDNN picks its kernels by CPU instruction set, and torch versions differ. So the
golden values in ``tests/golden_hashes.json`` are stored per :func:`fingerprint` (torch version, CPU architecture
and the ISA flags that change kernels, one thread). Where the current fingerprint has no entry the cases skip and
say how to record one::

    DEGAN_RECORD_GOLDEN=1 pytest tests/test_golden.py     # writes this machine's entry (each case then skips)

Record on a commit whose numbers are trusted (before a refactor), then every later commit must match it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from datetime import date
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from degan.cli import main

GOLDEN = Path(__file__).with_name("golden_hashes.json")
RECORD = os.environ.get("DEGAN_RECORD_GOLDEN") == "1"
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")

# ---------------------------------------------------------------------------------------------------------- cases

SEED = ["--seed", "3"]
COMMON = ["--data", "faces100", "--batch", "8", "--metrics", "none", "--no-progress", "--set", "train.log_kimg=0.016",
          "--set", "eval.monitor_every_kimg=null", *SEED]
DCGAN = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--kimg", "0.08", "--snap", "0.04", *COMMON]
TICKET = ["ticket", *DCGAN, "--levels", "1"]


def _scripted_metric(values):
    """A stand-in for the best-snapshot metric (no Inception needed): the given values, one per check."""
    calls = []

    def evaluate(self, G_ema):
        calls.append(None)
        return values[len(calls) - 1] if len(calls) <= len(values) else 9.0
    return evaluate


def _patch_best(monkeypatch):
    import degan.lottery.best as best

    monkeypatch.setattr(best.BestSnapshot, "_evaluate", _scripted_metric([5.0, 3.0, 4.0]))


#: case -> (commands; ``{run}`` in a later command is the run folder the first one made, optional patch)
CASES: dict[str, tuple[list[list[str]], object]] = {
    "dense": ([["train", *DCGAN, "--augment", "none"]], None),
    "diffaug": ([["train", *DCGAN]], None),
    "ada": ([["train", *DCGAN, "--augment", "ada:bgc:target=0.1,interval=2,kimg=0.1"]], None),  # p moves fast
    "lecam": ([["train", *DCGAN, "--lecam", "--set", "lecam.start_step=0"]], None),
    "r1": ([["train", *DCGAN, "--r1-gamma", "1", "--set", "r1.interval=2"]], None),
    "advaug": ([["train", *DCGAN, "--advaug"]], None),
    "bf16": ([["train", *DCGAN, "--precision", "bf16"]], None),
    "monitor": ([["train", *DCGAN, "--subset", "64", "--set", "eval.monitor_every_kimg=0.032",
                  "--set", "eval.monitor_num=32"]], None),
    "best": ([["train", *DCGAN, "--best-every", "0.032"]], _patch_best),
    "rg_gan": ([["train", *DCGAN, "--dynamic-prune", "--set", "dynamic.lam=0.05"]], None),
    "imp": ([TICKET], None),
    "imp_gd_kd": ([[*TICKET, "--variant", "IMP_GD_KD"]], None),
    "late_rewind": ([[*TICKET, "--rewind", "step:2"]], None),
    "early_bird": ([[*TICKET, "--early-bird", "--set", "prune.eb_every_kimg=0.008", "--set", "prune.eb_eps=0.99",
                     "--set", "prune.eb_window=2"]], None),
    "channel": ([["train", *DCGAN],
                 ["branch", "{run}/level_0", "channel", "--rho", "0.5", "--prune-fraction", "0.5", "--slim-kimg",
                  "0.016", "--no-progress"]], None),
    "stylegan2_pl_mixing": ([["train", "--model", "stylegan2", "--width", "0.03125", "--resolution", "32",
                              "--set", "model.z_dim=32", "--kimg", "0.032", "--snap", "0.032", *COMMON,
                              "--batch", "4", "--r1-gamma", "1", "--set", "r1.interval=2", "--set", "pl.weight=2",
                              "--set", "pl.interval=2", "--set", "model.mixing_prob=0.9"]], None),
    "progan_grow_gp": ([["train", "--model", "progan", "--resolution", "16", "--width", "0.03125",
                         "--set", "model.z_dim=16", "--kimg", "0.04", "--snap", "0.04", *COMMON, "--batch", "4",
                         "--set", "grow.fade_kimg=0.008", "--set", "grow.stable_kimg=0.008"]], None),
    "fastgan_recon": ([["train", "--model", "fastgan", "--preset", "fastgan_cpu", "--resolution", "32",
                        "--width", "0.0625", "--set", "model.z_dim=16", "--kimg", "0.016", "--snap", "0.016",
                        *COMMON, "--batch", "4"]], None),
    "cyclegan": ([["cyclegan", "--data-a", "faces100", "--data-b", "faces100", "--levels", "1", "--width", "0.125",
                   "--n-blocks", "1", "--resolution", "16", "--kimg", "0.016", "--batch", "2", "--snap", "0.016",
                   "--device", "cpu", "--metrics", "none", "--no-progress", "--set", "model.n_layers=1",
                   "--set", "train.log_kimg=0.004", *SEED]], None),
}


# ------------------------------------------------------------------------------------------------------- hashing

def fingerprint() -> str:
    """What the golden weights depend on besides the code: torch version, CPU architecture, the CPU instruction
    sets that make oneDNN choose other kernels, and the thread count (always 1 here)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = "+".join(f for f in ISA_FLAGS if f in flags) or "none"
    return f"torch={torch.__version__} arch={platform.machine()} isa={isa} threads=1"


def tensor_digest(tensors: dict[str, torch.Tensor], h=None):
    """sha256 over ``name|dtype|shape|raw bytes`` of every tensor in sorted name order (updates ``h`` if given)."""
    h = h if h is not None else hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h


def stage_digest(stage: Path) -> str:
    """The stage's weights: every ``*.safetensors`` file in it, then the discriminator(s) of its last checkpoint."""
    h = hashlib.sha256()
    for f in sorted(stage.glob("*.safetensors")):
        h.update(f"file {f.name}\n".encode())
        tensor_digest(load_file(str(f)), h)
    ckpts = sorted((stage / "checkpoints").glob("ckpt-*.pt"))
    if ckpts:
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)["state"]
        nets = state.get("nets", state)  # CycleGAN keeps its four networks under "nets"
        for name in sorted(n for n in nets if n == "D" or n.startswith("D_")):
            h.update(f"checkpoint {ckpts[-1].name} {name}\n".encode())
            tensor_digest(nets[name], h)
    return h.hexdigest()


def run_digests(run: Path) -> dict[str, str]:
    """``{stage folder name: digest}`` for every finished stage of the run folder."""
    stages = sorted(p for p in run.iterdir() if p.is_dir() and (p / "done.json").is_file())
    assert stages, f"{run} has no finished stage"
    return {s.name: stage_digest(s) for s in stages}


def compare(expected: dict[str, str], got: dict[str, str]) -> list[str]:
    """What differs between two ``{stage: digest}`` maps, one line per stage (empty: bit-identical)."""
    out = [f"{s}: missing (expected {expected[s][:12]})" for s in sorted(set(expected) - set(got))]
    out += [f"{s}: not expected (got {got[s][:12]})" for s in sorted(set(got) - set(expected))]
    out += [f"{s}: weights differ (expected {expected[s][:12]}, got {got[s][:12]})"
            for s in sorted(set(expected) & set(got)) if expected[s] != got[s]]
    return out


# ----------------------------------------------------------------------------------------------------- running

def _cli(args: list[str]) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def run_case(name: str, outdir: Path, monkeypatch, replace: dict[str, str] | None = None) -> dict[str, str]:
    """Run the case's commands into ``outdir`` (``replace`` swaps argument values, e.g. another seed) and return
    its stage digests."""
    commands, patch = CASES[name]
    if patch is not None:
        patch(monkeypatch)
    run = None
    for i, cmd in enumerate(commands):
        cmd = [replace.get(a, a) for a in cmd] if replace else list(cmd)
        cmd = [a.replace("{run}", str(run)) for a in cmd]
        _cli([*cmd, "--outdir", str(outdir)] if i == 0 else cmd)
        if i == 0:
            (run,) = [p for p in outdir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_digests(run)


@pytest.fixture
def one_thread():
    """One torch thread for the test (kernels and reduction orders depend on the count); restored after."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _load() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {"entries": {}}


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


FORMAT = ("entries[fingerprint].cases[case][stage] = sha256 over the stage's *.safetensors files (sorted by name) "
          "and the D networks of its last checkpoint, each tensor as name|dtype|shape|raw bytes in sorted key order; "
          "see tests/test_golden.py")


def _record(name: str, digests: dict[str, str]) -> None:
    data = _load()
    data.setdefault("note", f"recorded with DEGAN_RECORD_GOLDEN=1 pytest tests/test_golden.py at {_commit()}")
    data["format"] = FORMAT
    entry = data.setdefault("entries", {}).setdefault(fingerprint(), {"cases": {}})
    entry.update(commit=_commit(), recorded=date.today().isoformat())
    entry["cases"][name] = digests
    GOLDEN.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _golden_or_skip(name: str) -> dict[str, str]:
    entry = _load().get("entries", {}).get(fingerprint())
    if entry is None or name not in entry.get("cases", {}):
        pytest.skip(f"no golden hash for case {name!r} on this machine ({fingerprint()}); record them from a "
                    f"trusted commit with: DEGAN_RECORD_GOLDEN=1 pytest tests/test_golden.py")
    return entry["cases"][name]


# --------------------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("name", list(CASES))  # all 19 cases: ~15 s on one thread
def test_golden_weights(name, tmp_path, monkeypatch, one_thread):
    expected = None if RECORD else _golden_or_skip(name)
    got = run_case(name, tmp_path / name, monkeypatch)
    if RECORD:
        _record(name, got)
        pytest.skip(f"recorded the golden hashes of {name!r} for {fingerprint()} in {GOLDEN.name}")
    diffs = compare(expected, got)
    assert not diffs, f"case {name!r} is no longer bit-identical to its golden hashes:\n  " + "\n  ".join(diffs)


def test_every_case_is_recorded_together():
    """An entry holds every case (a partial recording would skip the missing ones silently ever after)."""
    entry = _load().get("entries", {}).get(fingerprint())
    if entry is None:
        pytest.skip(f"no golden hashes for this machine ({fingerprint()}); record them from a trusted commit with: "
                    "DEGAN_RECORD_GOLDEN=1 pytest tests/test_golden.py")
    assert sorted(entry["cases"]) == sorted(CASES)


def test_the_check_can_fail(tmp_path, monkeypatch, one_thread):
    """The comparison reports a changed run: the dense case with another seed differs stage by stage from the
    golden (or, on a machine without an entry, from the recorded seed's run), and one flipped bit changes a
    digest."""
    got = run_case("dense", tmp_path / "other", monkeypatch, replace={"3": "4"})
    entry = _load().get("entries", {}).get(fingerprint())
    if entry is not None and "dense" in entry["cases"]:
        expected = entry["cases"]["dense"]
    else:
        expected = run_case("dense", tmp_path / "same", monkeypatch)
    assert compare(expected, got) == [f"level_0: weights differ (expected {expected['level_0'][:12]}, "
                                      f"got {got['level_0'][:12]})"]
    assert compare(expected, dict(expected)) == []
    assert compare(expected, {}) == [f"level_0: missing (expected {expected['level_0'][:12]})"]
    w = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "m": torch.tensor([True, False])}
    flipped = dict(w, a=w["a"].clone())
    flipped["a"].view(torch.int32)[1, 2] ^= 1  # the lowest mantissa bit of one weight
    assert tensor_digest(w).hexdigest() == tensor_digest({k: v.clone() for k, v in w.items()}).hexdigest()
    assert tensor_digest(w).hexdigest() != tensor_digest(flipped).hexdigest()
