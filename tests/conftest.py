"""Shared test fixtures."""

import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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
