"""Faults of the machine (a full disk, a file-size limit, a file where a folder should be, a
read-only or forbidden folder) are one line naming the path and the cause, exit status 2, and
`error.txt` holds the reason first. Faults that root cannot meet for real (permissions,
read-only folders, a full disk) are injected as the OSError with its errno."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import pytest
from conftest import FAST_OVERRIDES
from user_commands import one_line_error, run_command

from nerf_lab.data.builtin_scene import builtin_scene_dir, ensure_builtin_scene
from nerf_lab.errors import EnvironmentFault, environment_fault
from nerf_lab.runs import records as runs
from nerf_lab.runs.records import read_run, read_sweep, record_failure

QUICK = [*FAST_OVERRIDES, "trainer.max_steps=2", "test=false"]


def test_the_cache_naming_a_file_is_one_line_and_error_txt_says_it_first(tmp_path, cache_dir):
    (tmp_path / "afile").write_text("not a folder")
    result = run_command("nerf_lab.train", *QUICK, "hydra.run.dir=run", cwd=tmp_path, cache=tmp_path / "afile")
    line = one_line_error(result)
    assert line == f"error: {tmp_path / 'afile' / 'scenes'}: not a folder (a file is in the way) (ENOTDIR): expected a writable folder with room for the run"
    assert (tmp_path / "run" / "error.txt").read_text().splitlines()[0] == "EnvironmentFault: " + line.removeprefix("error: ")
    assert read_run(tmp_path / "run").status == "failed"


@pytest.mark.slow  # a process start for a second kind of the same fault
def test_a_run_folder_under_a_file_is_one_line_and_no_folder(tmp_path, cache_dir):
    (tmp_path / "afile").write_text("not a folder")
    result = run_command("nerf_lab.train", *QUICK, "hydra.run.dir=afile/run", cwd=tmp_path, cache=cache_dir)
    assert one_line_error(result) == "error: afile/run: not a folder (a file is in the way) (ENOTDIR): expected a writable folder with room for the run"


@pytest.mark.slow  # a short training process
def test_a_file_size_limit_is_one_line_naming_the_file(tmp_path, cache_dir):
    result = run_command("nerf_lab.train", *QUICK, "hydra.run.dir=run", cwd=tmp_path, cache=tmp_path / "cache", file_size_limit=100_000)
    line = one_line_error(result)
    assert line.startswith(f"error: {tmp_path}/") and ": file too large (a file-size limit such as ulimit -f?) (EFBIG)" in line
    assert (tmp_path / "run" / "error.txt").read_text().startswith("EnvironmentFault: ")
    assert not list(tmp_path.rglob(".*.partial"))


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (errno.ENOSPC, "no space left on the device (ENOSPC)"),
        (errno.EFBIG, "file too large (a file-size limit such as ulimit -f?) (EFBIG)"),
        (errno.ENOTDIR, "not a folder (a file is in the way) (ENOTDIR)"),
        (errno.EROFS, "read-only file system (EROFS)"),
        (errno.EACCES, "permission denied (EACCES)"),
    ],
)
def test_each_fault_of_the_machine_is_named_with_its_path(code, cause):
    error = OSError(code, os.strerror(code), "/runs/x/tensorboard/events.out")
    assert str(environment_fault(error)) == f"/runs/x/tensorboard/events.out: {cause}: expected a writable folder with room for the run"
    # Also where the OSError is the cause of another error (Hydra's interpolation, Lightning's hooks).
    try:
        try:
            raise error
        except OSError as inner:
            raise RuntimeError("while writing") from inner
    except RuntimeError as outer:
        assert isinstance(environment_fault(outer), EnvironmentFault)
    assert environment_fault(ValueError("a bug")) is None
    assert environment_fault(OSError(errno.ECONNRESET, "reset")) is None  # not the machine's disk


@pytest.mark.parametrize(
    "folder", ["checkpoints", pytest.param("tensorboard", marks=pytest.mark.slow), pytest.param(".", marks=pytest.mark.slow)]
)
def test_an_unwritable_run_checkpoint_or_tensorboard_folder_is_one_line(make_cfg, monkeypatch, folder):
    """Injected: as root, a folder's permissions are not enforced. The first write into the
    folder raises EACCES, as it would for another user."""
    from nerf_lab.train import train

    cfg = make_cfg()
    target = (Path(cfg.paths.output_dir) / folder).resolve()
    real_open, real_os_open, real_rename, real_replace = io.open, os.open, os.rename, os.replace

    def refuse(file) -> None:
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve().parent == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(file, flags, *args, **kwargs):  # temporary files (fsspec, tempfile)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(file)
        return real_os_open(file, flags, *args, **kwargs)

    def guarded_rename(source, destination, *args, **kwargs):  # a file moved into the folder
        refuse(destination)
        return (real_replace if kwargs.pop("_replace", False) else real_rename)(source, destination, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    monkeypatch.setattr(os, "rename", guarded_rename)
    monkeypatch.setattr(os, "replace", lambda s, d, *a, **k: guarded_rename(s, d, *a, _replace=True, **k))
    with pytest.raises(Exception) as caught:
        train(cfg)
    fault = environment_fault(caught.value)
    assert fault is not None and str(fault).startswith(str(target)) and "permission denied (EACCES)" in str(fault)


def test_a_full_disk_still_records_the_reason_first(tmp_path, monkeypatch):
    """A disk with room for 300 bytes: the one line lands, the traceback does not, and the
    report reads the reason."""
    real_open = open

    class FullDisk(io.StringIO):
        def __init__(self, path):
            super().__init__()
            self.path, self.room = path, 300

        def write(self, text):
            if self.tell() + len(text) > self.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            return super().write(text)

        def close(self):
            with real_open(self.path, "w") as file:
                file.write(self.getvalue())
            super().close()

    monkeypatch.setattr(runs, "open", lambda path, mode="r": FullDisk(path), raising=False)
    run = tmp_path / "job"
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run / "checkpoints" / "last.ckpt"))
    except OSError as error:
        line = record_failure(run, error, line=f"EnvironmentFault: {environment_fault(error)}")
    assert (run / "error.txt").read_text() == line + "\n"
    assert read_run(run).error == line and "no space left on the device (ENOSPC)" in line


def test_the_report_takes_damaged_job_folders_as_failed_jobs_with_their_reason(tmp_path):
    def job(name: str, files: dict[str, str]) -> None:
        folder = tmp_path / name
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
        for file, text in files.items():
            (folder / file).write_text(text)

    job("0_seed=0", {"metrics.json": json.dumps({"steps": 3, "status": "completed"})})
    job("1_seed=1", {"metrics.json": '{"steps": 3, "val/ps'})  # truncated by a full disk
    job("2_seed=2", {".hydra/overrides.yaml": "- [unclosed\n"})
    job("3_seed=3", {"error.txt": ""})  # a full disk left it empty
    jobs = read_sweep(tmp_path)
    assert [j.status for j in jobs] == ["completed", "failed", "failed", "failed"]
    assert jobs[1].error.startswith(f"{tmp_path / '1_seed=1' / 'metrics.json'} is damaged (JSONDecodeError")
    assert jobs[2].error.startswith(f"{tmp_path / '2_seed=2' / '.hydra' / 'overrides.yaml'} is damaged (")
    assert jobs[3].error == f"{tmp_path / '3_seed=3' / 'error.txt'} is empty: the run failed without a recorded reason (a full disk?)"


def test_report_out_naming_a_file_is_one_line(tmp_path, cache_dir):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "afile").write_text("x")
    result = run_command("nerf_lab.report", "sweep", "--out", "afile", "--no-render", cwd=tmp_path, cache=cache_dir)
    assert one_line_error(result) == "error: --out afile is a file: expected a folder for the report (it is made if missing)"


def test_a_resolution_below_ssims_window_is_refused_before_the_run(tmp_path, cache_dir):
    result = run_command("nerf_lab.train", "data.resolution=4", cwd=tmp_path, cache=cache_dir)
    assert one_line_error(result) == (
        "error: data.resolution=4 is not allowed: expected a positive integer of at least 11 "
        "(image width in pixels: SSIM's 11-pixel window must fit)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_killed_renders_partial_folder_is_removed_at_the_next_start(tmp_path):
    scene = builtin_scene_dir(tmp_path, 16)
    scene.parent.mkdir(parents=True)
    dead = scene.with_name(f".{scene.name}.999999999.partial")  # no such process
    (dead / "train").mkdir(parents=True)
    (dead / "train" / "r_0.png").write_bytes(b"half a png")
    alive = scene.with_name(f".{scene.name}.{os.getpid()}x.partial")  # not a pid: also stale
    alive.mkdir()
    ensure_builtin_scene(tmp_path, 16)
    assert not dead.exists() and not alive.exists()
    assert (scene / "transforms_test.json").is_file()
