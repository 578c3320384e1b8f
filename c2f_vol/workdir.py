"""A training workdir: its recorded config and its checkpoints, read back for evaluation, export and prediction.

    WORKDIR/config.json            the experiment config of the run (written by `write_config`)
    WORKDIR/checkpoints/<step>/    orbax checkpoints of the train state (`c2f_vol.train_state`)
    WORKDIR/bone_lengths_mm.json   mean training bone lengths (`c2f_vol.data.stats`)

Nothing here imports TensorFlow or the training step.
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections

from c2f_vol import checkpoint, config as config_lib, fileio, optim, sharding, train_state
from c2f_vol.inference import Network, variables_of

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"

# Fields added to the config after workdirs were first written, with the value those older runs trained
# with where it differs from today's default. A field missing from a stored config gets this value, else
# `config.base_config()`'s.
LEGACY_VALUES = {
    "optim.eps_in_sqrt": True,   # optax's default, before Torch7's RMSprop became the default
    "loss.mix_heatmap": "mse",   # the raw-logit MSE, before the Jensen-Shannon mix
}


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, CHECKPOINTS)


def write_config(config, workdir: str) -> str:
    return fileio.write_text(os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2, sort_keys=True))


def _merge(base: dict, stored: dict, prefix: str = "") -> dict:
    out = dict(base)
    for key, value in stored.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value, f"{prefix}{key}.")
        else:
            out[key] = value
    for key in base:
        if key not in stored and f"{prefix}{key}" in LEGACY_VALUES:
            out[key] = LEGACY_VALUES[f"{prefix}{key}"]
    return out


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The ConfigDict a training run wrote to `workdir`/config.json, completed with today's fields."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir (tools/train.py --workdir)?")
    with open(path) as f:
        try:
            stored = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); it is written by tools/train.py") from None
    return ml_collections.ConfigDict(_merge(config_lib.base_config().to_dict(), stored))


@dataclasses.dataclass
class Restored:
    config: ml_collections.ConfigDict
    network: Network
    state: dict
    step: int

    @property
    def variables(self) -> dict:
        return variables_of(self.state)


def restore(workdir: str, config=None, step: int | None = None) -> Restored:
    """The train state of the latest (or given) checkpoint of `workdir`, replicated over the local devices."""
    config = config or read_config(workdir)
    network = Network(config)
    tx, _ = optim.make_optimizer(config.optim, config.num_train_steps)
    template = train_state.abstract(network, tx, sharding.replicated(sharding.make_mesh(config.num_devices)))
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory} not found: {workdir} has no checkpoints; train first "
                                "(tools/train.py --workdir=...)")
    manager = checkpoint.Manager(directory, config.keep_checkpoints)
    try:
        step = manager.latest_step() if step is None else step
        state = manager.restore(step, template)
    finally:
        manager.close()
    return Restored(config, network, state, int(step))
