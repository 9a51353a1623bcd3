"""Time loading the Lego scene's training split, cold (empty cache: decode and resize every
PNG) and warm (read the cached array), at 100 and 800 px.

    python benchmarks/data_loading.py [--scene DIR] [--resolutions 100 800] [--repeats 3]

Prints a table; the figures in docs/data.md came from this script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from nerf_lab.data.blender import load_split
from nerf_lab.runs.records import format_table


def main() -> None:
    default_scene = Path(os.environ.get("NERF_SYNTHETIC_DIR", "../shared/data/nerf_synthetic")) / "lego"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", type=Path, default=default_scene)
    parser.add_argument("--split", default="train")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[100, 800])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rows = []
    for resolution in args.resolutions:
        cold, warm = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                start = time.perf_counter()
                split = load_split(args.scene, args.split, resolution, cache_dir=cache)
                cold.append(time.perf_counter() - start)
                start = time.perf_counter()
                load_split(args.scene, args.split, resolution, cache_dir=cache)
                warm.append(time.perf_counter() - start)
        rows.append(
            [
                f"{resolution} px",
                f"{len(split)} × {split.height}×{split.width}",
                f"{statistics.median(cold):.2f} s",
                f"{statistics.median(warm):.2f} s",
                f"{statistics.median(cold) / statistics.median(warm):.0f}×",
            ]
        )
    print(f"{args.scene} ({args.split} split), median of {args.repeats}, {os.cpu_count()} CPUs")
    print(format_table(rows, ["resolution", "images", "cold (decode)", "warm (cache)", "cold / warm"]))


if __name__ == "__main__":
    main()
