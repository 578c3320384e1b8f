"""Checkpoints and workdirs: damaged steps, resumes that would change the experiment, bad workdirs."""

import numpy as np
import pytest

from c2f_vol import checkpoint, train, workdir as workdir_lib
from test_train import _tiny_config


def test_restoring_a_checkpoint_of_another_layout_says_what_to_do(tmp_path):
    manager = checkpoint.Manager(str(tmp_path / "ckpt"), 2)
    manager.save(1, {"params": {"w": np.ones(3, np.float32)}, "opt": [np.zeros(3, np.float32)]}, force=True)
    manager.wait()
    with pytest.raises(ValueError, match="different layout.*new workdir"):
        manager.restore(1, {"params": {"w": np.ones(3, np.float32)}, "opt": np.zeros(3, np.float32)})
    manager.close()


def _saved_steps(directory, steps):
    manager = checkpoint.Manager(str(directory), 10)
    for step in steps:
        w = np.random.default_rng(step).normal(size=4096).astype(np.float32)
        w[0] = step
        manager.save(step, {"w": w, "b": np.arange(3, dtype=np.int32)}, force=True)
    manager.close()
    return {"w": np.zeros(4096, np.float32), "b": np.zeros(3, np.int32)}


def _damage(step_dir):
    """Truncate the data files of a saved step (what a full disk or a bad copy leaves)."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and "ocdbt.process" in str(p) and p.parent.name == "d"]
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(16)


def test_a_damaged_newest_checkpoint_costs_one_step(tmp_path, caplog):
    ckpt = tmp_path / "checkpoints"
    template = _saved_steps(ckpt, (1, 2, 3))
    _damage(ckpt / "3")
    (ckpt / "2" / "default" / "_METADATA").unlink()
    manager = checkpoint.Manager(str(ckpt), 10)
    with caplog.at_level("WARNING"):
        step, state = manager.restore_newest(template)
    assert step == 1 and float(state["w"][0]) == 1.0
    # Both damaged steps were moved aside, not deleted, and named in the log with their cause.
    assert sorted(p.name for p in ckpt.iterdir()) == ["1"] and manager.steps() == [1]
    assert sorted(p.name for p in (tmp_path / "checkpoints.damaged").iterdir()) == ["2", "3"]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "step 3" in text and "OUT_OF_RANGE" in text and "step 2" in text and "checkpoints.damaged" in text
    # Saving goes on from there.
    manager.save(4, dict(template, w=np.full(4096, 4.0, np.float32)), force=True)
    manager.wait()
    assert manager.steps() == [4, 1]
    manager.close()


def test_unreadable_checkpoints_move_nothing_and_name_every_cause(tmp_path):
    ckpt = tmp_path / "checkpoints"
    template = _saved_steps(ckpt, (1, 2))
    _damage(ckpt / "1")
    _damage(ckpt / "2")
    manager = checkpoint.Manager(str(ckpt), 10)
    with pytest.raises(checkpoint.CheckpointReadError, match=r"nothing was moved.*step 2: .*OUT_OF_RANGE.*step 1: "):
        manager.restore_newest(template)
    assert sorted(p.name for p in ckpt.iterdir()) == ["1", "2"] and not (tmp_path / "checkpoints.damaged").exists()
    # An explicit step has no fallback; a step that is not there says which are.
    with pytest.raises(checkpoint.CheckpointReadError, match="step 2 .*cannot be read: .*OUT_OF_RANGE"):
        manager.restore_newest(template, step=2)
    with pytest.raises(checkpoint.CheckpointReadError, match=r"no checkpoint of step 7 .*\[2, 1\]"):
        manager.restore_newest(template, step=7)
    manager.close()


def test_a_resume_that_changes_the_experiment_is_refused_before_anything_is_written(tiny_dataset, tmp_path):
    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "4").mkdir(parents=True)
    config = _tiny_config(tiny_dataset)
    workdir_lib.write_config(config, str(workdir), 0)
    before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
    for override in ({"model.features": 8}, {"codec.depth_bins": (1, 2)}, {"data.box_margin": 2.0},
                     {"optim.name": "rmsprop"}):
        with pytest.raises(workdir_lib.ResumeConfigError, match="Nothing in the workdir was changed") as err:
            train.train_and_evaluate(_tiny_config(tiny_dataset, **override), str(workdir))
        assert next(iter(override)) in str(err.value)
    # The message gives the recorded values as flags to resume with.
    with pytest.raises(workdir_lib.ResumeConfigError) as err:
        workdir_lib.check_resume(_tiny_config(tiny_dataset, **{"model.features": 8, "codec.depth_bins": (1, 2)}),
                                 str(workdir))
    assert f"--config.model.features={config.model.features}" in str(err.value)
    assert "--config.codec.depth_bins=(" + ",".join(map(str, config.codec.depth_bins)) + ")" in str(err.value)
    # Turning weight decay on changes the optimiser's state: refused too, though weight_decay may change.
    with pytest.raises(workdir_lib.ResumeConfigError, match="optimiser keeps other state"):
        workdir_lib.check_resume(_tiny_config(tiny_dataset, **{"optim.weight_decay": 1e-4}), str(workdir))
    assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()} == before
    # Loop and learning-rate changes are allowed and listed.
    changes = workdir_lib.check_resume(_tiny_config(tiny_dataset, num_train_steps=9, **{"optim.learning_rate": 1e-4}),
                                       str(workdir))
    assert [c.split(":")[0] for c in changes] == ["num_train_steps", "optim.learning_rate"]


def test_restoring_a_workdir_without_checkpoints_creates_nothing(tiny_dataset, tmp_path):
    workdir_lib.write_config(_tiny_config(tiny_dataset), str(tmp_path), 0)
    with pytest.raises(FileNotFoundError, match="has no checkpoints; train first"):
        workdir_lib.restore(str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_a_bad_workdir_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(workdir_lib.WorkdirError, match="is a file; expected a folder"):
        workdir_lib.check_workdir(str(tmp_path / "file"))
    (tmp_path / "config.json").write_text("{bad")
    with pytest.raises(workdir_lib.WorkdirError, match=r"config.json is not valid JSON .*config.<step>.json"):
        workdir_lib.read_config(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(workdir_lib.WorkdirError, match="holds a JSON list"):
        workdir_lib.read_config(str(tmp_path))


def test_a_workdir_recorded_before_optim_flatten_resumes_flattened(tiny_dataset, tmp_path):
    """Workdirs written before the field trained with flat optimiser state: they read back that way."""
    import json

    config = _tiny_config(tiny_dataset, **{"optim.flatten": False})
    workdir_lib.write_config(config, str(tmp_path), 0)
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["optim"]["flatten"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert workdir_lib.read_config(str(tmp_path)).optim.flatten is True
    with pytest.raises(workdir_lib.ResumeConfigError, match=r"optim.flatten: recorded True.*--config.optim.flatten=True"):
        workdir_lib.check_resume(config, str(tmp_path))
