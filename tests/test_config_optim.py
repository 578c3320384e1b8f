import os

import numpy as np
import pytest

from c2f_vol import config as config_lib, optim
from c2f_vol.codec import VolumeCodec
from conftest import REPO

CONFIGS = REPO / "configs"


@pytest.mark.parametrize("spec", ["h36m_paper.py", "h36m_integral.py", "synthetic_cpu.py", "synthetic_cpu.py:tiny"])
def test_configs_load_locked_and_consistent(spec):
    c = config_lib.load(str(CONFIGS / spec))
    assert c.model.num_stacks == len(c.codec.depth_bins)
    VolumeCodec.for_experiment(c)
    with pytest.raises((AttributeError, KeyError)):
        c.optim.learnig_rate = 1.0  # a misspelt override must fail, not be ignored


def test_paper_config_is_the_paper_model():
    c = config_lib.load(str(CONFIGS / "h36m_paper.py"))
    assert (c.model.num_stacks, c.model.features, c.codec.input_size) == (4, 256, 256)
    assert tuple(c.codec.heatmap_size) == (64, 64) and tuple(c.codec.depth_bins) == (1, 2, 4, 64)
    assert c.codec.depth_range_mm == 1000.0
    assert (c.optim.name, c.optim.learning_rate, c.optim.schedule) == ("rmsprop", 2.5e-4, "constant")
    assert c.optim.eps_in_sqrt is False and c.batch_size == 4
    assert c.optim.flatten is False and config_lib.base_config().optim.flatten is True
    assert (c.model.arch, c.codec.target, c.loss.kind) == ("released", "paper", "heatmap")
    # The paper's loss is decoded the paper's way.
    assert VolumeCodec.for_experiment(c).decoder == "argmax_local"
    assert VolumeCodec.for_experiment(config_lib.load(str(CONFIGS / "h36m_integral.py"))).decoder == "soft_argmax"
    assert c.data.name == "human36m"
    assert c.model.dtype == "bfloat16"  # float32 master weights live in the train state regardless


def test_overrides_and_unknown_keys():
    c = config_lib.load(str(CONFIGS / "synthetic_cpu.py:tiny"), {"optim.learning_rate": 0.5})
    assert c.optim.learning_rate == 0.5
    with pytest.raises(KeyError, match="no such field"):
        config_lib.load(str(CONFIGS / "synthetic_cpu.py"), {"optim.learnig_rate": 0.5})
    with pytest.raises(FileNotFoundError, match="nope.py"):
        config_lib.load(os.path.join(CONFIGS, "nope.py"))


def test_schedules():
    base = dict(learning_rate=1.0, warmup_steps=10)
    const = optim.make_schedule(dict(base, schedule="constant"), 100)
    assert float(const(0)) == 0.0 and float(const(5)) == pytest.approx(0.5) and float(const(50)) == 1.0
    cos = optim.make_schedule(dict(base, schedule="cosine"), 110)
    assert float(cos(10)) == pytest.approx(1.0) and float(cos(110)) == pytest.approx(0.0, abs=1e-6)
    step = optim.make_schedule(dict(base, schedule="step", step_decay_at=(0.5,), step_decay_factor=0.1), 110)
    assert float(step(20)) == pytest.approx(1.0) and float(step(80)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="optim.schedule"):
        optim.make_schedule(dict(base, schedule="linear"), 10)


@pytest.mark.parametrize("name", ["rmsprop", "adam", "adamw"])
def test_optimizers_descend_and_clip(name):
    import jax
    import jax.numpy as jnp
    import optax

    base = config_lib.base_config().optim.to_dict()
    tx, _ = optim.make_optimizer(dict(base, name=name, learning_rate=0.1, grad_clip_norm=1.0, weight_decay=1e-4), 100)
    params = {"w": jnp.array([3.0, -2.0])}
    state = tx.init(params)
    loss = lambda p: jnp.sum(p["w"] ** 2)
    for _ in range(20):
        g = jax.grad(loss)(params)
        upd, state = tx.update(g, state, params)
        params = optax.apply_updates(params, upd)
    assert float(loss(params)) < 13.0 * 0.5
    with pytest.raises(ValueError, match="optim.name"):
        optim.make_optimizer(dict(name="sgd", learning_rate=0.1), 10)


_WITHOUT_TF = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from c2f_vol import benchmark, config, train
# The smallest network the config allows (one stack, 4 features, 8 -> 4x4 crops): compiling the
# init and the step is what this test spends, and that grows with the network.
c = config.load(sys.argv[1], {"batch_size": 2, "model.features": 4, "model.num_stacks": 1, "codec.depth_bins": (4,),
                              "codec.input_size": 8, "codec.heatmap_size": (4, 4)})
r = benchmark.benchmark_train(c, steps=1, warmup=1)
print("ok", r["images_per_sec"] > 0)
"""


def test_config_and_train_step_run_without_tensorflow():
    # Accelerator images often carry JAX but not TensorFlow (too big to ship): the train-step
    # benchmark must not need it. TF stays for data, evaluation and export.
    import subprocess
    import sys

    # XLA's optimisation passes are most of the compile time and nothing here depends on them
    # (8 s -> 5 s; the subprocess only, the rest of the suite compiles as usual).
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_TF, str(CONFIGS / "synthetic_cpu.py:tiny")], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and "ok True" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("eps_in_sqrt", [False, True])
def test_rmsprop_eps_placement_matches_torch7(eps_in_sqrt):
    """Torch7's RMSprop: v = a v + (1 - a) g^2; update = -lr g / (sqrt(v) + eps). optax's default: sqrt(v + eps)."""
    import jax.numpy as jnp

    base = config_lib.base_config().optim.to_dict()
    lr, alpha, eps = 0.01, 0.99, 1e-4
    tx, _ = optim.make_optimizer(dict(base, learning_rate=lr, rmsprop_decay=alpha, eps=eps,
                                      eps_in_sqrt=eps_in_sqrt), 10)
    g = np.array([1e-3, -2e-2, 0.5], np.float32)
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    v = np.zeros(3)
    for _ in range(3):
        upd, state = tx.update({"w": jnp.asarray(g)}, state, params)
        v = alpha * v + (1 - alpha) * g.astype(np.float64) ** 2
    denom = np.sqrt(v + eps) if eps_in_sqrt else np.sqrt(v) + eps
    np.testing.assert_allclose(np.asarray(upd["w"]), -lr * g / denom, rtol=1e-5)


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_flattened_and_per_parameter_state_give_the_same_updates(name):
    """optim.flatten changes only the state's layout: one vector per slot, or one array per parameter."""
    import jax
    import jax.numpy as jnp

    base = dict(config_lib.base_config().optim.to_dict(), name=name, learning_rate=0.01, grad_clip_norm=1.0)
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(rng.normal(size=5), jnp.float32)}
    results = {}
    for flatten in (True, False):
        tx, _ = optim.make_optimizer(dict(base, flatten=flatten), 10)
        state, p = tx.init(params), params
        for step in range(3):
            grads = jax.tree.map(lambda x: jnp.sin(x * (step + 1)), p)
            updates, state = tx.update(grads, state, p)
            p = jax.tree.map(lambda x, u: x + u, p, updates)
        shapes = {x.shape for x in jax.tree.leaves(state) if x.ndim}
        results[flatten] = p
        assert shapes == ({(17,)} if flatten else {(3, 4), (5,)})
    for key in params:
        np.testing.assert_allclose(results[True][key], results[False][key], rtol=1e-6, atol=1e-7)
        assert not np.allclose(results[True][key], params[key])
