"""Report on a sweep: `python -m nerf_lab.report <sweep folder> [--out DIR]`.

The work is in `nerf_lab.analysis` (see `nerf_lab.analysis.report`); this module is the command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nerf_lab.analysis.report import build_report
from nerf_lab.errors import USAGE_ERROR_EXIT_CODE, NerfLabError, environment_fault


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nerf_lab.report", description="Report on a sweep: tables, Welch verdicts, curves, test views."
    )
    parser.add_argument("sweep_dir", type=Path, help="a sweep's folder, e.g. outputs/multirun/<date>/<time>")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: <sweep>/report)")
    parser.add_argument("--title", default=None, help="the report's heading")
    parser.add_argument("--no-render", action="store_true", help="skip the test-view grid and orbit (no checkpoints needed)")
    parser.add_argument("--no-orbit", action="store_true", help="skip the orbit GIF only (24 renders an arm)")
    parser.add_argument(
        "--reference", default=None, metavar="ARM",
        help="compare every arm with this one (its name as the report writes it, e.g. table2=complete) instead of the best",
    )
    args = parser.parse_args(argv)
    try:
        if not args.sweep_dir.is_dir():
            raise NerfLabError(f"sweep folder {args.sweep_dir} does not exist")
        out_dir = args.out or args.sweep_dir / "report"
        if out_dir.exists() and not out_dir.is_dir():
            raise NerfLabError(f"--out {out_dir} is a file: expected a folder for the report (it is made if missing)")
        summary = build_report(
            args.sweep_dir, out_dir, args.title, render=not args.no_render, orbit=not args.no_orbit, reference=args.reference
        )
    except NerfLabError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR_EXIT_CODE) from None
    except OSError as error:
        fault = environment_fault(error, where=str(args.out or args.sweep_dir))
        if fault is None:
            raise
        print(f"error: {fault}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR_EXIT_CODE) from None
    print((out_dir / "report.md").read_text())
    print(f"report in {out_dir} ({', '.join(['report.md', 'report.json', *summary['figures']])})")


if __name__ == "__main__":
    main()
