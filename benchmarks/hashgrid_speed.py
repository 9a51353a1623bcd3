"""Time the hash grid's three ways of reading dense levels (nerf_lab.nerf.hashgrid): forward +
backward of a batch of random points, in points/s, each variant on the same table.

    PYTHONPATH=src python benchmarks/hashgrid_speed.py [--points 65536] [--repeats 5]

Prints one line a variant and a configuration (the small CPU grid and the paper's), with the
load average beside it: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from nerf_lab.nerf.hashgrid import DENSE_LOOKUPS, HashGridEncoding

BOX = [[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]]
CONFIGS = {
    "cpu (L=8, F=2, T=2^15, 16..256)": dict(n_levels=8, n_features=2, log2_table_size=15, min_resolution=16, max_resolution=256),
    "paper (L=16, F=2, T=2^19, 16..2048)": dict(n_levels=16, n_features=2, log2_table_size=19, min_resolution=16, max_resolution=2048),
}


def points_per_second(encoding: HashGridEncoding, points: torch.Tensor, repeats: int) -> float:
    for _ in range(2):  # warm-up
        encoding(points).square().sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        encoding.table.grad = None
        encoding(points).square().sum().backward()
    return repeats * points.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    points = torch.rand(args.points, 3) * 3.0 - 1.5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.points} points, forward + backward")
    for name, settings in CONFIGS.items():
        for lookup in DENSE_LOOKUPS:
            encoding = HashGridEncoding(BOX, dense_lookup=lookup, **settings)
            rate = points_per_second(encoding, points, args.repeats)
            print(f"{name:38s} {lookup:14s} {rate / 1e3:8.1f} k points/s   load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
