"""The tools' shared console: library INFO dropped, project lines kept short, progress in a pipe."""

import logging as pylog
import os

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
        assert handler.filter(_record(pylog.WARNING, library))
        assert handler.format(_record(pylog.WARNING, library, "disk full")) == "WARNING: disk full"
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
