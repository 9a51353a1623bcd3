"""The committed studies' verdicts redone with Welch's t-test: `python experiments/recheck_verdicts.py`.

The reports in results/ were written when a verdict meant "beyond 2 standard errors", and
their sweep folders are gone, so they cannot be rebuilt. Their report.json files keep each
arm's mean, standard deviation and number of runs, which is all Welch's test needs for the
comparisons over all runs. The depth study's comparison over the runs that trained needs the
runs' own values: for test PSNR they are in report.md's run table (to 0.01 dB); the val PSNR
of each run at the first validation was not kept (see experiments/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from nerf_lab.analysis.stats import MeanStd, describe, welch

RESULTS = Path(__file__).resolve().parent / "results"


def trained_test_psnr(report_md: str) -> dict[str, list[float]]:
    """{arm: test PSNR of each run that trained}, from report.md's run table."""
    values: dict[str, list[float]] = {}
    for line in report_md.split("## Runs", 1)[1].split("##", 1)[0].splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 7 and cells[5] == "completed":
            values.setdefault(cells[0], []).append(float(cells[3]))
    return values


def main() -> None:
    for folder in sorted(RESULTS.iterdir()):
        data = json.loads((folder / "report.json").read_text())
        arms = {arm["name"]: arm for arm in data["arms"]}
        print(f"## {folder.name}")
        early = {name: {"val/psnr_early": stats} for name, stats in data["early"]["arms"].items()}
        for comparisons, table in [(data["comparisons"], arms), (data["early"]["comparisons"], early)]:
            for c in comparisons:
                test = welch(MeanStd(**table[c["against"]][c["metric"]]), MeanStd(**table[c["arm"]][c["metric"]]))
                print(f"- {c['metric']}, {c['arm']} against {c['against']}, all runs: {describe(test, c['against'], c['arm'], 'dB')}")
                if "white minimum" in c["verdict"] and c["metric"] == "test/psnr":
                    trained = trained_test_psnr((folder / "report.md").read_text())
                    test = welch(MeanStd.of(trained[c["against"]]), MeanStd.of(trained[c["arm"]]))
                    print(f"  runs that trained (values to 0.01 dB): {describe(test, c['against'], c['arm'], 'dB')}")
                print(f"  was: {c['verdict']}")


if __name__ == "__main__":
    main()
