"""Training across processes, really run: two tools/train.py processes on 127.0.0.1, one CPU device each.

The reference is one process with two CPU devices stepping the same global batches. A run's input
stream depends on its process layout (each process reads its own share of the split, shuffled by
its index; `pipeline.train_dataset`), so the reference builds each global batch from the two
processes' shares, as the mesh does, rather than running tools/train.py with one process.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import REPO, cpu_subprocess_env
from test_train import _train_cmd

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir, data_dir, steps, every, heartbeat=30):
    """Start processes 0 and 1 of a two-process run; their stderr goes to workdir/../p{i}.log."""
    port = _free_port()
    procs = []
    for i in range(2):
        cmd = _train_cmd(workdir, data_dir, steps, every) + [
            "--cpu_devices=1", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
            f"--process_id={i}", f"--heartbeat_timeout={heartbeat}"]
        log = open(os.path.join(os.path.dirname(workdir), f"p{i}.log"), "w")
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                      env=dict(os.environ, JAX_PLATFORMS="cpu")))
    return procs


def _log(workdir, i) -> str:
    with open(os.path.join(os.path.dirname(workdir), f"p{i}.log")) as f:
        return f.read()


def _kill_all(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


REFERENCE = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from c2f_vol import config as config_lib, evaluation, sharding, train, workdir as workdir_lib
    from c2f_vol.data import pipeline
    workdir, data_dir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    assert jax.device_count() == 2 and jax.process_count() == 1, jax.devices()
    restored = workdir_lib.restore(workdir)  # the two-process run's checkpoint, in one process
    config = restored.config
    trainer = train.Trainer(config, sharding.make_mesh(2))
    state = trainer.init_state()
    builder = pipeline.load_builder(config.data.name, config.data.data_dir)
    shares = [pipeline.train_dataset(builder, config.data.train_split, config.data, trainer.codec.input_size,
                                     batch_size=config.batch_size // 2, seed=config.seed, process_index=p,
                                     process_count=2).as_numpy_iterator() for p in range(2)]
    for _ in range(steps):
        parts = [next(s) for s in shares]
        batch = {k: np.concatenate([b[k] for b in parts]) for k in train.TRAIN_KEYS}
        state, _ = trainer.train_step(state, trainer.put(batch))
    ref = [np.asarray(x) for x in jax.tree.leaves(state["params"])]
    got = [np.asarray(x) for x in jax.tree.leaves(restored.state["params"])]
    diff = max(float(np.max(np.abs(a - b) / (1e-6 + np.abs(b)))) for a, b in zip(got, ref))
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    batches = pipeline.eval_batches(builder, config.data, trainer.codec.input_size, config.eval_batch_size,
                                    max_examples=config.eval_max_examples)
    ev = evaluation.evaluate(trainer.network.predict_fn(train.variables_of(state)), batches)
    print("RESULT" + json.dumps({"step": restored.step, "max_rel_diff": diff,
                                 "eval": {k: ev[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "frames")}}))
""")


def test_two_processes_train_like_one_process_with_two_devices(tiny_dataset, tmp_path):
    steps, every = 4, 2
    workdir = str(tmp_path / "run")
    procs = _launch(workdir, tiny_dataset, steps, every)
    try:
        for p in procs:
            p.wait(timeout=400)
    finally:
        _kill_all(procs)
    logs = [_log(workdir, i) for i in range(2)]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    assert "process 0 of 2, 2 devices (1 local)" in logs[0] and "process 1 of 2" in logs[1]
    # Checkpoints once: one folder, the expected steps, nothing else written beside the workdir.
    assert sorted(os.listdir(tmp_path)) == ["p0.log", "p1.log", "run"]
    assert [d for d, subdirs, _ in os.walk(tmp_path) if os.path.basename(d) == "checkpoints"] == [
        os.path.join(workdir, "checkpoints")]
    assert sorted(d for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == ["2", "4"]
    assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 1  # events from process 0 only
    # The end-of-training evaluation: every process scores the whole split, and both agree.
    final = [json.loads(re.search(r"final evaluation at step 4: (\{.*\})", log).group(1)) for log in logs]
    assert final[0] == final[1]
    # One process, two devices: restores the checkpoint, and the same global batches give the same
    # parameters and the same evaluation.
    proc = subprocess.run([sys.executable, "-c", REFERENCE, workdir, str(tiny_dataset), str(steps)], cwd=REPO,
                          env=cpu_subprocess_env(2),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = json.loads(proc.stdout.split("RESULT")[-1])
    print(f"two processes vs one: max relative parameter difference {ref['max_rel_diff']:.2e}")
    assert ref["step"] == steps
    assert ref["eval"]["frames"] == final[0]["frames"] > 0
    for k in ("mpjpe_mm", "pa_mpjpe_mm"):
        assert final[0][k] == pytest.approx(ref["eval"][k], rel=1e-5)


def test_killing_one_process_stops_the_other(tiny_dataset, tmp_path):
    workdir = str(tmp_path / "run")
    heartbeat = 10
    procs = _launch(workdir, tiny_dataset, 100000, 2, heartbeat=heartbeat)
    try:
        ckpts = os.path.join(workdir, "checkpoints")
        deadline = time.time() + 300
        while time.time() < deadline and not (os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts))):
            assert all(p.poll() is None for p in procs), _log(workdir, 0)[-3000:]
            time.sleep(0.1)
        assert os.path.isdir(ckpts), "no checkpoint within 300 s"
        procs[1].send_signal(signal.SIGKILL)
        killed = time.time()
        procs[1].wait()
        procs[0].wait(timeout=120)
        elapsed = time.time() - killed
    finally:
        _kill_all(procs)
    log = _log(workdir, 0)
    print(f"process 0 exited {elapsed:.1f} s after process 1 was killed, status {procs[0].returncode}")
    print(log[-1500:])
    assert procs[0].returncode != 0
    assert elapsed < 120
