"""The README and docs/ say only what works: every `python -m nerf_lab.<command> …` in a code
block (or an inline code span) composes with Hydra, as the command would before running
anything; every `make <target>` names a target of the Makefile; every relative link points at
a file that exists (and, into a Markdown page, at one of its headings).

Conventions the pages follow so that this can check them:
* `<…>` is a placeholder (`<run>`, `<scene>`): it is replaced by a word before parsing; one of
  several words standing alone (`<the run's overrides>`) stands for a list, and is dropped.
* A command shown failing is written after a shell prompt, `$ python -m …`, and is not checked
  here (tests/config/test_bad_input.py runs the refusals).
* A line that continues (`\\`) is joined to the next; a `# …` after the command is a comment.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# The config each Hydra command composes (its @hydra.main config_name).
HYDRA_COMMANDS = {"train": "train", "eval": "eval", "render": "render", "bench": "bench"}

FENCE = re.compile(r"^```.*?$(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")


def _page_id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def _without_fences(text: str) -> str:
    return FENCE.sub("", text)


def _command_lines(text: str) -> list[str]:
    """Lines of code blocks and inline code spans that run nerf_lab or make."""
    lines: list[str] = []
    for block in FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line.strip() for line in joined.splitlines()]
    lines += [span.strip() for span in INLINE.findall(_without_fences(text))]
    return lines


def _strip_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def nerf_lab_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, arguments) of each `python -m nerf_lab.<command> …` that is not a failure shown
    after a `$ ` prompt, nor elided with `…`."""
    found = []
    for line in _command_lines(text):
        line = _strip_comment(line)
        match = re.match(r"(?:\.venv/bin/)?python3? -m nerf_lab\.(\w+)(.*)$", line)
        if not match or "…" in line or "..." in line:
            continue
        # A placeholder of several words standing alone (`<the run's overrides>`) stands for
        # a list of arguments, maybe none; one of one word (`--out <folder>`) for one word.
        rest = re.sub(r"(?<!\S)<[^<>]*\s[^<>]*>(?!\S)", " ", match.group(2))
        arguments = shlex.split(PLACEHOLDER.sub("x", rest))
        found.append((match.group(1), arguments))
    return found


def make_targets(text: str) -> list[str]:
    """Targets of each `make …` command (its VAR=value arguments left out)."""
    targets = []
    for line in _command_lines(text):
        line = _strip_comment(line)
        if not line.startswith("make ") or "…" in line:
            continue
        targets += [word for word in shlex.split(line)[1:] if "=" not in word and not word.startswith("-")]
    return targets


def relative_links(text: str) -> list[str]:
    return [target for target in LINK.findall(_without_fences(text)) if not re.match(r"[a-z]+:", target)]


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to '-'."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", _without_fences(text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        anchors.add(slug)
    return anchors


def _sweep_variants(arguments: list[str]) -> list[list[str]]:
    """A `-m` command line as single runs: each swept value once (Hydra's compose takes no
    sweep), with the flags left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [argument for argument in arguments if not argument.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for override, written in zip(parsed, overrides):
        if override.is_sweep_override():
            prefix = written.split("=", 1)[0]
            choices.append([f"{prefix}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([written])
    width = max((len(values) for values in choices), default=1)
    return [[values[i % len(values)] for values in choices] for i in range(width)]


def compose_command(command: str, arguments: list[str]) -> None:
    """Compose the command's config with these overrides, as the command does before it runs;
    raises what Hydra raises."""
    from hydra import compose, initialize_config_dir

    from nerf_lab.config import resolvers  # noqa: F401 (registers the config's resolvers, as each command does)

    for overrides in _sweep_variants(arguments):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            compose(config_name=HYDRA_COMMANDS[command], overrides=overrides, return_hydra_config=True)


def report_usage_error(arguments: list[str], monkeypatch, capsys) -> str | None:
    """`nerf_lab.report` takes argparse arguments: argparse's complaint about them, or None.
    Nothing is built: the report itself is replaced, and a folder that is not there ends the
    command after parsing."""
    import nerf_lab.report as report

    def no_report(*args, **kwargs):
        raise SystemExit(0)

    monkeypatch.setattr(report, "build_report", no_report)
    capsys.readouterr()
    try:
        report.main(arguments)
    except SystemExit:
        pass
    stderr = capsys.readouterr().err
    return stderr.strip() if "usage:" in stderr else None


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_nerf_lab_command_of_the_page_parses(page, monkeypatch, capsys):
    commands = nerf_lab_commands(page.read_text())
    for command, arguments in commands:
        where = f"{_page_id(page)}: python -m nerf_lab.{command} {' '.join(arguments)}"
        if command == "report":
            problem = report_usage_error(arguments, monkeypatch, capsys)
            assert problem is None, f"{where}: {problem}"
        else:
            assert command in HYDRA_COMMANDS, f"{where}: no such command"
            try:
                compose_command(command, arguments)
            except Exception as error:  # noqa: BLE001 (any of Hydra's errors is the failure)
                pytest.fail(f"{where}: does not compose: {type(error).__name__}: {error}")


def makefile_targets() -> set[str]:
    """The targets the Makefile defines, from make's own database (`-p`; `-q` runs nothing,
    `-R -r` leaves out the built-in rules): a file or folder of the same name is no target."""
    database = subprocess.run(["make", "-qpRr"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    targets: set[str] = set()
    not_a_target = False
    for line in database.splitlines():
        match = re.match(r"([A-Za-z0-9][^$#/\t=]*):(?:[^=]|$)", line)
        if match and not not_a_target:
            targets.update(match.group(1).split())
        not_a_target = line.startswith("# Not a target")
    return targets


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_make_target_of_the_page_exists(page):
    targets = makefile_targets()
    for target in sorted(set(make_targets(page.read_text()))):
        assert target in targets, f"{_page_id(page)}: make {target}: the Makefile has no such target"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_relative_link_of_the_page_exists(page):
    for target in relative_links(page.read_text()):
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        assert linked.exists(), f"{_page_id(page)}: link {target} points at nothing"
        if anchor and linked.suffix == ".md":
            anchors = heading_anchors(linked.read_text())
            assert anchor in anchors, f"{_page_id(page)}: link {target}: no heading #{anchor} in {linked.name}"


def test_the_checks_see_what_they_check(monkeypatch, capsys):
    """The extractors on a page of known content: a broken link, a missing target and a
    command that does not compose are each found (so the tests above can fail)."""
    page = (
        "See [a page](docs/nowhere.md) and [a site](https://example.org).\n\n"
        "```bash\npython -m nerf_lab.train model=original sampling.n_c=8   # a comment\n"
        "$ python -m nerf_lab.train model=huge\nmake install no_such_target TORCH=torch\n```\n"
        "Inline: `python -m nerf_lab.eval ckpt_path=<run>/checkpoints/best.ckpt`,\n"
        "`python -m nerf_lab.train <the run's overrides> seed=1`, `python -m nerf_lab.report <sweep> --out <folder>`.\n"
    )
    assert relative_links(page) == ["docs/nowhere.md"]
    assert make_targets(page) == ["install", "no_such_target"]
    assert nerf_lab_commands(page) == [
        ("train", ["model=original", "sampling.n_c=8"]),
        ("eval", ["ckpt_path=x/checkpoints/best.ckpt"]),
        ("train", ["seed=1"]),
        ("report", ["x", "--out", "x"]),
    ]
    compose_command("train", ["-m", "model.depth=2,4", "sampling.n_c=64,128"])
    with pytest.raises(Exception, match="huge"):
        compose_command("train", ["model=huge"])
    with pytest.raises(Exception):
        compose_command("train", ["model.detph=2"])
    assert _sweep_variants(["-m", "model.depth=2,4", "sampling.n_c=64"]) == [
        ["model.depth=2", "sampling.n_c=64"],
        ["model.depth=4", "sampling.n_c=64"],
    ]
    assert report_usage_error(["outputs/multirun/x", "--out", "y"], monkeypatch, capsys) is None
    assert "unrecognized arguments: --no-such-flag" in report_usage_error(["x", "--no-such-flag"], monkeypatch, capsys)
    if shutil.which("make"):
        assert {"install", "test", "test-full", "ablation_depth"} <= makefile_targets()
        assert "tests" not in makefile_targets()  # a folder, not a target
    assert {"how-it-fits-together", "the-run-folder"} <= heading_anchors("## How it fits together\n### The run folder\n")
