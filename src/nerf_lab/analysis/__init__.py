"""What runs and sweeps say, one concept a module:

* `stats`: jobs grouped into arms, each arm's mean and spread, Welch's t-test and its verdict;
* `curves`: scalars from the event files, resumed runs spliced, val PSNR at the first validation;
* `figures`: curve plots, one test view from every arm, the orbit GIF (checkpoints via `load_trained`);
* `summary`: the report's content as one dataclass tree, to and from `report.json`;
* `report`: `build_report` (a sweep folder in, `report.md`, `report.json` and figures out).
"""
