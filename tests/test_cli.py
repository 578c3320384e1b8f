"""The tools' shared console: library INFO dropped, project lines kept short, progress in a pipe."""

import logging as pylog
import os
import pathlib
import subprocess
import sys

import pytest

from absl import logging

from c2f_vol import cli


def _record(level, pathname, msg="hello"):
    return pylog.LogRecord("absl", level, pathname, 1, msg, None, None)


def test_console_keeps_project_lines_and_library_warnings_only():
    handler = logging.get_absl_handler().python_handler
    try:
        cli.configure_console(verbose=False)
        ours = os.path.join(os.path.dirname(cli.__file__), "train.py")
        library = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
        assert handler.filter(_record(pylog.INFO, ours))
        assert not handler.filter(_record(pylog.INFO, library))
        assert not handler.filter(_record(pylog.WARNING, library))  # orbax: restore_newest reports its own line
        assert handler.filter(_record(pylog.ERROR, library))
        assert handler.filter(_record(pylog.WARNING, "/site-packages/tensorflow_datasets/core/reader.py"))
        assert handler.format(_record(pylog.WARNING, ours, "disk full")) == "WARNING: disk full"
        assert handler.format(_record(pylog.INFO, ours, "step 5")).endswith(" step 5")
        cli.configure_console(verbose=True)  # --verbosity: everything, in absl's own format
        assert handler.filter(_record(pylog.INFO, library))
        assert "checkpoint_manager.py:1] hello" in handler.format(_record(pylog.INFO, library))
    finally:
        cli.configure_console(verbose=True)


def test_tensorflow_start_up_notices_are_held_back_and_nothing_else():
    assert cli.is_tf_import_notice("WARNING: All log messages before absl::InitializeLog() is called are written")
    assert cli.is_tf_import_notice("I0000 00:00:1.2   1 port.cc:153] oneDNN custom operations are on. You may")
    assert not cli.is_tf_import_notice("E0000 cuda_dnn.cc:8] Unable to load libcudnn")
    assert not cli.is_tf_import_notice("ImportError: numpy.core.multiarray failed to import")


def test_progress_lines_without_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(cli.Progress, "min_gap_s", 0.0)
    with cli.Progress("building x", 20, unit="examples") as progress:
        assert list(progress.count(range(20))) == list(range(20))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        f"building x: {n}/20 examples ({n * 5}%)" for n in range(2, 21, 2)]
    monkeypatch.setattr(cli.Progress, "every_s", 0.0)
    with cli.Progress("building y", None, unit="examples") as progress:  # total unknown (human36m)
        list(progress.count(range(3)))
    assert [line.split(",")[0] for line in capsys.readouterr().err.splitlines()] == [
        f"building y: {n} examples" for n in (1, 2, 3)]
    monkeypatch.setattr(cli.Progress, "min_gap_s", 1e9)  # a fast job in a pipe: only its last line
    with cli.Progress("eval", 64, unit="frames") as progress:
        for _ in range(4):
            progress.update(16)
    assert [line.split(",")[0] for line in capsys.readouterr().err.splitlines()] == ["eval: 64/64 frames (100%)"]


# Flag mistakes are caught before a tool imports anything heavy (about a second each); the others load
# JAX or TensorFlow first (5-10 s each), so they run with the slow tests.
_SLOW = pytest.mark.slow
CASES = [
    ("train.py", ["--config={tiny}", "--workdir={tmp}/w", "--config.model.featuers=3"], 'Did you mean "features"', ()),
    ("train.py", ["--config={tmp}/none.py", "--workdir={tmp}/w"], "none.py", ()),
    ("train.py", ["--config={tiny}", "--workdir={tmp}/w", "--no_such_flag"], "no_such_flag", ()),
    ("evaluate.py", ["--workdir={tmp}/nowhere", "--frame_stride=0"], "frame_stride", ()),
    ("train.py", ["--config={tiny}", "--workdir={tmp}/w", "--config.data.data_dir={tmp}/empty"], "is not prepared",
     _SLOW),
    ("evaluate.py", ["--workdir={tmp}/nowhere"], "config.json not found", _SLOW),
    ("export.py", ["--workdir={tmp}/nowhere", "--output={tmp}/missing/sm"], "does not exist (create it first)", _SLOW),
    ("build_dataset.py", ["--dataset=human36m", "--data_dir={tmp}/d", "--manual_dir={tmp}/no_download"],
     "is not a folder", _SLOW),
]
PARAMS = [pytest.param(tool, args, message, marks=marks, id=f"{tool}-{message[:20]}")
          for tool, args, message, marks in CASES]


@pytest.mark.parametrize("tool,args,message", PARAMS)
def test_every_tool_reports_a_user_mistake_in_one_line(tmp_path, tool, args, message):
    repo = pathlib.Path(__file__).resolve().parents[1]
    tiny = repo / "configs" / "synthetic_cpu.py"
    cmd = [sys.executable, str(repo / "tools" / tool)] + [a.format(tmp=tmp_path, tiny=f"{tiny}:tiny") for a in args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=repo)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr) < 2000, proc.stderr[-2000:]
    assert not (tmp_path / "w").exists()  # nothing was written for a run that was refused
