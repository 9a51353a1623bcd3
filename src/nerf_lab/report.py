"""Report on a sweep: `python -m nerf_lab.report <sweep folder> [--out DIR]`.

The work is in `nerf_lab.analysis`; this module is the command."""

from nerf_lab.analysis.report import main

if __name__ == "__main__":
    main()
