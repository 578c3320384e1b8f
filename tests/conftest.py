"""Shared test fixtures."""

import os
import pathlib
import shutil
import tempfile

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    """One JAX compilation cache for the whole run: its xdist workers and the tools' subprocesses.

    Many tests compile the same programs (the tiny config's initialiser, train step and predictor): XLA
    compiles each once per run instead of once per test and process. The cache starts empty, so a run
    proves nothing by a previous run's executables, and it is removed at the end. Set by the controller
    before the workers start (they inherit the environment); a cache dir the caller set is kept.
    """
    if hasattr(config, "workerinput"):
        return
    # XLA's CPU kernels for this class of CPU, as every tool chooses them (in the environment, so the
    # workers and the tools' subprocesses run, and share cached executables, alike).
    from c2f_vol import hostcpu

    hostcpu.tune_cpu_backend()
    if os.environ.get(_CACHE_ENV):
        return
    path = tempfile.mkdtemp(prefix="c2f_vol_jax_cache_")
    config._c2f_jax_cache = path
    os.environ[_CACHE_ENV] = path
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_unconfigure(config):
    path = getattr(config, "_c2f_jax_cache", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop(_CACHE_ENV, None)


def cpu_subprocess_env(devices: int) -> dict:
    """The environment for a test's JAX subprocess with `devices` CPU devices.

    It keeps the XLA_FLAGS the tools run with (`hostcpu.tune_cpu_backend`, set in pytest_configure)
    and adds the device count: a reference computed with other CPU kernels differs in its rounding,
    and Adam turns a near-zero gradient's rounding into a full step of either sign.
    """
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)


@pytest.fixture
def shared_data() -> pathlib.Path:
    """../shared/data, or skip with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent; these tests read the shared mocap and image files")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def random_poses(rng: np.random.Generator, n: int, depth_mm: float = 4500.0) -> np.ndarray:
    """(n, 17, 3) camera-frame poses: a root about `depth_mm` ahead, joints within +-800 mm."""
    root = np.stack([rng.uniform(-300, 300, n), rng.uniform(-200, 200, n), rng.uniform(depth_mm - 500, depth_mm + 500, n)], -1)
    offsets = rng.uniform(-800, 800, (n, 17, 3))
    offsets[:, 0] = 0.0
    return root[:, None, :] + offsets


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> pathlib.Path:
    """A TFDS data_dir holding the built `c2f_synthetic/tiny` dataset (built once per session)."""
    from c2f_vol.data import builders

    data_dir = tmp_path_factory.mktemp("tfds")
    builders.build("c2f_synthetic/tiny", str(data_dir))
    return data_dir


def build_from_manual_dir(name: str, config, manual_dir, data_dir):
    """The TFDS builder `name` with `config`, prepared from the source files in `manual_dir`."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, config=config, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def stored_examples(builder, split: str) -> list[dict]:
    """Every example of `split` as numpy, in stored order."""
    import tensorflow_datasets as tfds

    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def text(x) -> str:
    return x.decode() if isinstance(x, bytes) else x
