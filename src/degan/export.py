"""Compact export of a trained generator: one plain state dict + a JSON description, loadable without degan's masks.

``export_compact(stage_dir, out_dir)`` writes, for any finished stage of a run (an IMP level, a branch, a channel
ticket)::

    out_dir/generator.safetensors   plain state dict: masks folded into the weights (W * mask), no parametrizations,
                                    no mask buffers; channel tickets: the physically smaller network
    out_dir/generator.json          how to rebuild it: model, kwargs, kept_channels (channel tickets, else null),
                                    z_dim, resolution, img_channels, num_classes, degan version, source stage, sizes
    out_dir/generator.pt2           the same network as a ``torch.export`` program: loads in plain PyTorch, without
                                    degan (``torch.export.load(path).module()``); any batch size
    out_dir/LOADING.md              how to load each file, with the shapes and value ranges

An unstructured ticket's zeros are stored like any other weight, so its files are as large as the dense G's
(``weight_density`` in ``generator.json`` says how many weights are non-zero; the files compress well, e.g. with
zip); channel tickets are physically smaller.

``load_compact(out_dir)`` rebuilds it with ``create_model`` (no mask machinery), slices the channels of a channel
ticket with :func:`degan.pruning.slimming.compact_generator`, and loads the state dict strictly. The exported G
computes the same images as the stage's ``G_ema`` (eval mode).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import nn

from ._version import __version__
from .errors import CheckpointError
from .fileio import atomic_path, read_json, write_json, write_text
from .lottery.layout import StageLayout
from .pruning.slimming import build_compact_generator, compact_generator, count_params, strip_parametrizations

__all__ = ["EXPORT_FORMAT", "export_compact", "load_compact", "load_stage_generator"]

EXPORT_FORMAT = "degan-generator/1"
WEIGHTS_FILE = "generator.safetensors"
META_FILE = "generator.json"
PROGRAM_FILE = "generator.pt2"
ONNX_FILE = "generator.onnx"


def _finished(stage_dir: str | Path) -> StageLayout:
    stage = StageLayout(Path(stage_dir))
    if not stage.root.is_dir():
        raise CheckpointError(f"{str(stage.root)!r} does not exist; pass a stage folder "
                              "runs/<run>/level_<k>[_<branch>]")
    if not stage.is_done() or not stage.G_ema.is_file() or not stage.generator_json.is_file():
        raise CheckpointError(f"{stage.root} is not a finished stage (needs done.json, G_ema.safetensors and "
                              "generator.json); finish its training first (degan ... --resume latest)")
    return stage


def load_stage_generator(stage: StageLayout | str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The final ``G_ema`` of a finished stage with its masks, in eval mode; compact for channel tickets.

    Like :func:`degan.lottery.runner.load_generator`, plus stages whose ``generator.json`` has ``kept_channels``
    (channel tickets, :mod:`degan.lottery.channel`): those are rebuilt as the compact network first.

    Raises:
        CheckpointError: not a finished stage, unknown model, or weights that do not fit.
    """
    stage = _finished(stage.root if isinstance(stage, StageLayout) else stage)
    meta = read_json(stage.generator_json)
    kept = meta.get("kept_channels")
    if not kept:
        return load_generator(stage, device)
    try:
        G = build_compact_generator(meta["model"], meta["kwargs"], kept, prunable=meta.get("prunable"),
                                    spectral_norm=meta.get("spectral_norm", False))
    except ValueError as e:
        raise CheckpointError(f"{stage.generator_json} cannot be rebuilt: {e}") from None
    try:
        G.load_state_dict(load_safetensors(str(stage.G_ema)))
    except RuntimeError as e:
        raise CheckpointError(f"{stage.G_ema} does not fit the compact {meta['model']}: "
                              f"{str(e).splitlines()[0][:200]}") from None
    return G.to(device).eval().requires_grad_(False)


def export_compact(stage_dir: str | Path, out_dir: str | Path, onnx: bool = False) -> Path:
    """Export the final ``G_ema`` of a finished stage as a plain generator (see the module docstring).

    Args:
        stage_dir: ``runs/<run>/level_<k>`` or a branch folder ``level_<k>_<branch>`` (e.g. ``level_0_channel``).
        out_dir: folder to write ``generator.safetensors`` and ``generator.json`` into (created; existing files of
            those names are replaced atomically).
        onnx: also write ``generator.onnx`` (:func:`write_onnx`; needs the ``onnx`` and ``onnxscript`` packages).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        CheckpointError: not a finished stage, or its generator cannot be rebuilt.
        DeganError: ``onnx=True`` without the ``onnx`` / ``onnxscript`` packages, or a G ONNX cannot express.
    """
    stage = _finished(stage_dir)
    meta = read_json(stage.generator_json)
    G = load_stage_generator(stage)
    plain = strip_parametrizations(copy.deepcopy(G), allow_spectral_norm=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in plain.state_dict().items()}
    prunable = [p for n, p in plain.named_parameters() if n.endswith("weight") and p.dim() > 1]
    total = sum(p.numel() for p in prunable)
    nonzero = sum(int(p.count_nonzero()) for p in prunable)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_safetensors(sd, str(tmp))
    write_json(out / META_FILE, {
        "format": EXPORT_FORMAT, "model": meta["model"], "kwargs": meta["kwargs"],
        "kept_channels": meta.get("kept_channels") or None,
        "z_dim": int(G.z_dim), "resolution": int(G.resolution), "img_channels": int(G.img_channels),
        "num_classes": int(getattr(G, "num_classes", 0)), "degan_version": __version__,
        "source_stage": str(stage.root.resolve()), "source_run": stage.root.parent.name,
        "trained_with": meta.get("degan_version"), "params": count_params(plain),
        "weight_density": nonzero / total if total else 1.0,
    })
    traced = _write_program(plain.eval(), out / PROGRAM_FILE)
    wrote_onnx = onnx and write_onnx(plain.eval(), out / ONNX_FILE)
    write_text(out / "LOADING.md", _loading_text(out, G, traced, wrote_onnx))
    return out


def write_onnx(G: nn.Module, path: Path) -> bool:
    """Export ``G`` (eval mode) as ONNX (opset 18, ``torch.onnx.export(dynamo=True)``; batch size dynamic, input
    ``z`` float32 ``[N, z_dim]`` (+ ``c`` int64 ``[N]`` for a conditional G), output ``images`` float32
    ``[N, C, R, R]`` in [-1, 1]) into ``path`` atomically; checked with ``onnx.checker``.

    Raises:
        DeganError: the ``onnx`` or ``onnxscript`` package is missing (the message says what to install), or the
            network cannot be exported (the reason).
    """
    import importlib.util
    import inspect

    from .errors import DeganError

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise DeganError(f"ONNX export needs the packages {' and '.join(missing)}: pip install onnx onnxscript "
                         "(then re-run degan export --onnx)")
    import onnx as onnx_lib

    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    cond = bool(getattr(G, "num_classes", 0))
    args = (z,) if not cond else (z, torch.zeros(2, dtype=torch.long))
    names = list(inspect.signature(G.forward).parameters)[:len(args)]
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with atomic_path(path) as tmp, torch.no_grad():
            torch.onnx.export(G, args, str(tmp), dynamo=True, verbose=False, opset_version=18,
                              input_names=["z", "c"][:len(args)], output_names=["images"],
                              dynamic_shapes={n: {0: batch} for n in names})
            onnx_lib.checker.check_model(onnx_lib.load(str(tmp)))
    except DeganError:
        raise
    except Exception as e:  # noqa: BLE001 - an exporter failure is reported as one line
        raise DeganError(f"could not export {type(G).__name__} to ONNX: {str(e).splitlines()[0][:200]}") from None
    return True


def _write_program(G: nn.Module, path: Path) -> bool:
    """Export ``G`` (eval mode) with ``torch.export`` (batch size dynamic) into ``path``; False (with a warning)
    where this network cannot be exported."""
    import inspect
    import warnings

    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    args = (z,) if not getattr(G, "num_classes", 0) else (z, torch.zeros(2, dtype=torch.long))
    try:
        batch = torch.export.Dim("batch", min=1, max=65536)
        names = list(inspect.signature(G.forward).parameters)[:len(args)]
        with torch.no_grad():
            program = torch.export.export(G, args, dynamic_shapes={n: {0: batch} for n in names})
        with atomic_path(path) as tmp:
            torch.export.save(program, str(tmp))
        return True
    except Exception as e:  # noqa: BLE001 - the safetensors export stands without it
        warnings.warn(f"could not export {type(G).__name__} into {path.name} ({str(e).splitlines()[0][:160]}); "
                      f"load {WEIGHTS_FILE} with degan.export.load_compact instead", stacklevel=2)
        return False


def _loading_text(out: Path, G: nn.Module, traced: bool, onnx: bool = False) -> str:
    cond = int(getattr(G, "num_classes", 0))
    call = "G(z)" if not cond else f"G(z, c)  # c: int64 [N] class labels in [0, {cond})"
    shape = f"[N, {G.img_channels}, {G.resolution}, {G.resolution}]"
    parts = [f"# Generator exported by degan {__version__}", "",
             f"`G` maps z, float32 [N, {G.z_dim}] ~ N(0, I), to images, float32 {shape} in [-1, 1].", ""]
    if traced:
        parts += ["Plain PyTorch, no degan needed (`torch.export`; any batch size):", "", "```python", "import torch",
                  f"G = torch.export.load('{out.name}/{PROGRAM_FILE}').module()",
                  f"z = torch.randn(16, {G.z_dim})", "with torch.no_grad():", f"    x = {call}",
                  "images = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # uint8 " + shape, "```", ""]
    if onnx:
        feeds = "{'z': z}" if not cond else "{'z': z, 'c': c}"
        parts += ["ONNX (any ONNX runtime; batch size dynamic; inputs `z` float32"
                  + (", `c` int64 [N]" if cond else "") + ", output `images`):", "", "```python",
                  "import numpy as np, onnxruntime as ort",
                  f"sess = ort.InferenceSession('{out.name}/{ONNX_FILE}')",
                  f"z = np.random.randn(16, {G.z_dim}).astype(np.float32)"
                  + ("" if not cond else "; c = np.zeros(16, dtype=np.int64)"),
                  f"(x,) = sess.run(None, {feeds})  # float32 {shape} in [-1, 1]", "```", ""]
    parts += ["With degan installed (the network as a Python module, e.g. to fine-tune it):", "", "```python",
              "from degan.export import load_compact", f"G = load_compact('{out.name}')  # eval mode", "```", ""]
    return "\n".join(parts)


def load_compact(out_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a generator written by :func:`export_compact`, without degan's mask machinery.

    ``create_model(model, spectral_norm=False, **kwargs)`` (no ``pre_sn_hook``), then the channel slicing of
    ``kept_channels`` if any, then ``load_state_dict(strict=True)``.

    Args:
        out_dir: the export folder.
        device: where to put the network.

    Returns:
        The generator in eval mode without gradients: ``G(z)`` maps float ``[N, z_dim]`` to float
        ``[N, img_channels, resolution, resolution]`` in [-1, 1].

    Raises:
        CheckpointError: missing files, another format, an unknown model (the message lists the known ones), or a
            state dict that does not fit.
    """
    from .models import create_model, list_models

    out = Path(out_dir)
    if not (out / META_FILE).is_file() or not (out / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{str(out)!r} has no {META_FILE} + {WEIGHTS_FILE}; write them with "
                              "degan.export.export_compact (degan export RUN_DIR --compact)")
    meta = read_json(out / META_FILE)
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{out / META_FILE} has format {meta.get('format')!r}; this degan reads "
                              f"{EXPORT_FORMAT!r}")
    if meta.get("model") not in list_models():
        raise CheckpointError(f"{out / META_FILE} is for model {meta.get('model')!r}, which this degan does not "
                              f"have; known models: {', '.join(list_models())}")
    try:
        G, _ = create_model(meta["model"], spectral_norm=False, **meta["kwargs"])
        if meta.get("kept_channels"):
            name, config = G.name, G.config
            G = compact_generator(G, meta["kept_channels"])
            G.name, G.config = name, config
    except ValueError as e:
        raise CheckpointError(f"{out / META_FILE} cannot be rebuilt: {e}") from None
    try:
        state = load_safetensors(str(out / WEIGHTS_FILE))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{out / WEIGHTS_FILE} cannot be read ({e})") from None
    try:
        G.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{out / WEIGHTS_FILE} does not fit {meta['model']} {meta['kwargs']}"
                              f"{' (compact)' if meta.get('kept_channels') else ''}: "
                              f"{str(e).strip().splitlines()[0][:200]}") from None
    return G.to(device).eval().requires_grad_(False)


def load_generator(stage: StageLayout, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the final G_ema of a finished stage from ``G_ema.safetensors`` + ``generator.json``.

    Raises:
        CheckpointError: the stage has no final generator.
    """
    if not stage.G_ema.is_file() or not stage.generator_json.is_file():
        raise CheckpointError(f"{stage.root} has no final generator (G_ema.safetensors); has it finished training?")
    meta = read_json(stage.generator_json)
    if meta.get("kept_channels"):  # a channel-pruned ticket: rebuilt as the smaller network
        return load_stage_generator(stage, device)
    from .models import create_model
    from .pruning import add_masks

    hook = None if meta.get("plain") else (lambda net: add_masks(net, meta["prunable"]))
    G, _ = create_model(meta["model"], spectral_norm=meta["spectral_norm"], pre_sn_hook=hook, **meta["kwargs"])
    try:
        G.load_state_dict(load_safetensors(str(stage.G_ema)))
    except RuntimeError as e:
        raise CheckpointError(f"{stage.G_ema} does not fit {meta['model']}: {str(e).splitlines()[0][:200]}") from None
    return G.to(device).eval().requires_grad_(False)
