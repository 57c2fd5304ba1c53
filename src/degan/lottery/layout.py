"""The only place run-folder paths are spelled.

```
<outdir>/<kind>-<model>-<data>-<hash>/     one run (hash of the non-default training config)
    config.yaml          resolved config, written before training
    env.json             library versions, platform, command line, and what a bit-identical repeat needs
                         ("repeat": threads, world size, CPU, device, precision, seeds; docs/reproduce.md)
    data.json            what was loaded: source, format, counts, skipped files, resize/channel policy
    subset.json          the limited-data indices, reused by every stage
    init.pt              theta_0 / phi_0: the initial weights every level rewinds to
    report.md            table + sample grids (``degan report``)
    report.html, report_files/   the same as one HTML page with its images and plots (``degan report``)
    level_<k>/           one IMP level (``train`` runs have a single level_0)
        masks.safetensors  masks of G and D ("G.<param>", "D.<param>"; bool)
        density.json       per-network and per-layer density
        checkpoints/ckpt-<nimg>.pt   full training state (torch.load(weights_only=True))
        G_ema.safetensors  final EMA generator weights (+ generator.json to rebuild it)
        translators.safetensors  CycleGAN runs: final G_AB, G_BA ("G_AB.<param>", ...; + generator.json)
        stats.jsonl, metrics.jsonl
        samples/reals.png, samples/reals_aug.png, samples/fakes<kimg>.png, samples/fakes_latest.png
        monitor.jsonl, monitor.png     D accuracy on training / held-out reals and fakes over kimg
        memorization.json, memorization.png   nearest training neighbours of samples (``degan eval --memorization``)
        tensorboard/       TensorBoard event files (``eval.tensorboard=true``)
        done.json          written last: the level is finished and is skipped on re-run
        resumed_from.json  ``degan train --resume CKPT``: the checkpoint of another run this stage started from and
                           the optimizer settings changed there
    level_<k>_<branch>/  a branch trained from level k's result, beside it (same files as a level):
                         random_ticket, random_mask, finetune, transfer-<data>, channel, ...
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LEVEL_PATTERN = re.compile(r"^level_(\d+)$")
STAGE_PATTERN = re.compile(r"^level_(\d+)(?:_([A-Za-z0-9][A-Za-z0-9_.-]*))?$")
BRANCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class StageLayout:
    """Paths of one stage (IMP level) folder."""

    root: Path

    @property
    def level(self) -> int:
        m = STAGE_PATTERN.match(self.root.name)
        return int(m.group(1)) if m else 0

    @property
    def branch(self) -> str | None:
        """The branch name of a ``level_<k>_<branch>`` folder, None for a level."""
        m = STAGE_PATTERN.match(self.root.name)
        return m.group(2) if m else None

    masks = property(lambda self: self.root / "masks.safetensors")
    density = property(lambda self: self.root / "density.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    G_ema = property(lambda self: self.root / "G_ema.safetensors")
    translators = property(lambda self: self.root / "translators.safetensors")
    generator_json = property(lambda self: self.root / "generator.json")
    stats = property(lambda self: self.root / "stats.jsonl")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    samples = property(lambda self: self.root / "samples")
    monitor = property(lambda self: self.root / "monitor.jsonl")
    monitor_png = property(lambda self: self.root / "monitor.png")
    memorization = property(lambda self: self.root / "memorization.json")
    memorization_png = property(lambda self: self.root / "memorization.png")
    tensorboard = property(lambda self: self.root / "tensorboard")
    done = property(lambda self: self.root / "done.json")
    resumed_from = property(lambda self: self.root / "resumed_from.json")

    def is_done(self) -> bool:
        return self.done.is_file()


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run folder."""

    root: Path

    config = property(lambda self: self.root / "config.yaml")
    env = property(lambda self: self.root / "env.json")
    data = property(lambda self: self.root / "data.json")
    subset = property(lambda self: self.root / "subset.json")
    init = property(lambda self: self.root / "init.pt")
    report = property(lambda self: self.root / "report.md")
    report_html = property(lambda self: self.root / "report.html")

    def level(self, k: int) -> StageLayout:
        return StageLayout(self.root / f"level_{k}")

    def levels(self) -> list[StageLayout]:
        """Existing level folders, by level number."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if p.is_dir() and (m := LEVEL_PATTERN.match(p.name))]
        return [StageLayout(p) for _, p in sorted(found)]

    def branch(self, k: int, name: str) -> StageLayout:
        """The folder of branch ``name`` of level ``k``: ``level_<k>_<name>``.

        Raises:
            ValueError: a name with characters other than letters, digits, ``_``, ``.``, ``-``.
        """
        if not BRANCH_NAME.match(name):
            raise ValueError(f"branch name {name!r} must be letters, digits, '_', '.', '-'")
        return StageLayout(self.root / f"level_{k}_{name}")

    def branches(self, k: int | None = None) -> list[StageLayout]:
        """Existing branch folders (of level ``k``, or of all levels), by level then name."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            m = STAGE_PATTERN.match(p.name)
            if p.is_dir() and m and m.group(2) and (k is None or int(m.group(1)) == k):
                found.append((int(m.group(1)), m.group(2), p))
        return [StageLayout(p) for _, _, p in sorted(found)]

    def stages(self) -> list[StageLayout]:
        """Levels and their branches: level_0, level_0_<b>..., level_1, ..."""
        out = []
        for lv in self.levels():
            out.append(lv)
            out.extend(self.branches(lv.level))
        return out


def slug(text: str, max_len: int = 24) -> str:
    """A file-name-safe short form of ``text``."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[-max_len:].strip("-") or "data"


def data_label(data_id: str) -> str:
    """Readable part of a dataset id: ``cifar10_prefix_subset.npz-6bf6836294`` -> ``cifar10-prefix-subset``."""
    name = re.sub(r"-[0-9a-f]{10}$", "", data_id)
    name = re.sub(r"(\.(npz|zip|gz|tar|tgz|idx3-ubyte))+$", "", name, flags=re.IGNORECASE)
    return slug(name)[:24].strip("-") or "data"


def run_folder_name(kind: str, model: str, data_id: str, config_hash: str, name: str | None = None) -> str:
    """``<kind>-<model>-<data>-<hash>``, e.g. ``ticket-dcgan-faces100-1a2b3c4d``; with a run ``name`` (``--name``,
    anything but the default ``run``) ``<kind>-<name>-<hash>``, e.g. ``train-my-emoji-1a2b3c4d``. The hash stays,
    so two configs given the same name never share a folder."""
    if name and name != "run":
        return f"{kind}-{slug(name, 40)}-{config_hash}"
    return f"{kind}-{slug(model)}-{data_label(data_id)}-{config_hash}"


def find_stage(path: str | Path) -> tuple[RunLayout, list[StageLayout]]:
    """Interpret a user path as a run folder (all its levels) or one level folder.

    Raises:
        FileNotFoundError: neither a run folder (with config.yaml) nor a level folder inside one.
    """
    p = Path(path)
    if STAGE_PATTERN.match(p.name) and (p.parent / "config.yaml").is_file():
        return RunLayout(p.parent), [StageLayout(p)]
    if (p / "config.yaml").is_file():
        run = RunLayout(p)
        return run, run.levels()
    raise FileNotFoundError(f"{str(p)!r} is not a degan run folder (no config.yaml) nor a level_<k> folder in one; "
                            "pass a folder that `degan train` or `degan ticket` made: runs/<run> or "
                            "runs/<run>/level_<k>")
