"""Data: any supported source -> uint8 ``[N, C, R, R]`` images + labels, and deterministic subsets.

Public API::

    load_dataset(source, resolution=..., channels=3, resize="center_crop", split="train", min_images=2,
                 background="black") -> ImageSet
    select_subset(num_images, spec, seed=0, mode="random", labels=None, balance=False) -> int64 indices
    parse_subset(spec) -> ("fraction", f) | ("count", n) | None
    dataset_id(source, background="black") -> str
    parse_background(spec) -> "black" | "white" | "gray" | "random" | "#rrggbb" | "keep-alpha"   (DataError otherwise)
    parse_resolution(spec) -> int side R from 64, "64" or "64x64"   (DataError for W != H: training is square)

Formats are plug-ins in :data:`FORMATS` (see :mod:`degan.data.formats`); builtin names in :data:`BUILTINS`.
"""

from degan.data.dataset import (
    RESIZE_POLICIES,
    SUBSET_MODES,
    ImageSet,
    dataset_id,
    load_dataset,
    parse_resolution,
    parse_subset,
    select_subset,
)
from degan.data.formats import (
    BACKGROUNDS,
    BUILTINS,
    FORMATS,
    IMAGE_EXTENSIONS,
    Builtin,
    RawData,
    Reader,
    detect_format,
    parse_background,
    supported_formats,
)

__all__ = [
    "BACKGROUNDS",
    "BUILTINS",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "RESIZE_POLICIES",
    "SUBSET_MODES",
    "Builtin",
    "ImageSet",
    "RawData",
    "Reader",
    "dataset_id",
    "detect_format",
    "load_dataset",
    "parse_background",
    "parse_resolution",
    "parse_subset",
    "select_subset",
    "supported_formats",
]
