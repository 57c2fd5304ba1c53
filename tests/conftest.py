import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

# Reference-feature caches of the tests go to a throw-away folder, never to the user's ~/.cache/degan.
if "DEGAN_CACHE" not in os.environ:
    import tempfile

    os.environ["DEGAN_CACHE"] = tempfile.mkdtemp(prefix="degan-test-cache-")

# The shared real data lives beside the repository (../shared/data) or where $DEGAN_SHARED_DATA points.
SHARED = Path(os.environ.get("DEGAN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The shared real-data folder; the test is skipped (with the reason) where it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent (set DEGAN_SHARED_DATA)")
    return SHARED
