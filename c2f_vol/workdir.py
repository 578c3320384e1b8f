"""A training workdir: its recorded config and its checkpoints, read back for evaluation, export and prediction.

    WORKDIR/config.json            the config of the newest checkpoints' run
    WORKDIR/config.<step>.json     the config of the run that started at <step> (the history)
    WORKDIR/checkpoints/<step>/    orbax checkpoints of the train state (`c2f_vol.train_state`)
    WORKDIR/bone_lengths_mm.json   mean training bone lengths (`c2f_vol.data.stats`)

Nothing here imports TensorFlow or the training step.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections
from flax import nnx

from c2f_vol import checkpoint, config as config_lib, fileio, optim, sharding, train_state
from c2f_vol.errors import UserError
from c2f_vol.inference import Network, variables_of

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"

# What a resume may change, each change logged: these leave the train state's layout, the model and the
# examples it sees as they were. Everything else (model, codec, loss, data, seed) must match the record.
# A change here that alters the optimiser state's layout (e.g. turning weight decay or clipping on) is
# still refused, by comparing the two configs' state templates.
RESUME_MAY_CHANGE = (
    "optim.learning_rate", "optim.schedule", "optim.warmup_steps", "optim.final_lr_fraction",
    "optim.step_decay_at", "optim.step_decay_factor", "optim.b1", "optim.b2", "optim.eps",
    "optim.rmsprop_decay", "optim.eps_in_sqrt", "optim.grad_clip_norm", "optim.weight_decay",
    "num_train_steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "eval_every",
    "eval_batch_size", "eval_max_examples", "bone_length_examples", "num_devices",
    "data.data_dir", "data.threads", "data.num_parallel_calls", "data.prefetch", "data.shuffle_buffer",
)


class ResumeConfigError(UserError, ValueError):
    """A run's config cannot continue the checkpoints of a workdir."""


class WorkdirError(UserError, ValueError):
    """A workdir path or file that is not what a training run writes."""


def check_workdir(workdir: str) -> None:
    """Raise WorkdirError if `workdir` exists but is not a folder."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir={workdir} is a file; expected a folder (a new one, or one tools/train.py "
                           "wrote)")

# Fields added to the config after workdirs were first written, with the value those older runs trained
# with where it differs from today's default. A field missing from a stored config gets this value, else
# `config.base_config()`'s.
LEGACY_VALUES = {
    "optim.eps_in_sqrt": True,   # optax's default, before Torch7's RMSprop became the default
    "loss.mix_heatmap": "mse",   # the raw-logit MSE, before the Jensen-Shannon mix
    "optim.flatten": True,       # every config's optimiser state was one flat vector per slot
}


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, CHECKPOINTS)


def has_checkpoints(workdir: str) -> bool:
    """Whether `workdir` holds a complete checkpoint (a step folder; orbax's temporary ones end otherwise)."""
    directory = checkpoint_dir(workdir)
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def write_config(config, workdir: str, start_step: int) -> None:
    """Record `config` as the workdir's config and as the config of the run starting at `start_step`."""
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if start_step and not _history(workdir) and os.path.isfile(os.path.join(workdir, CONFIG_FILE)):
        # A workdir from before the history: keep the config it recorded as the first entry.
        with open(os.path.join(workdir, CONFIG_FILE)) as f:
            fileio.write_text(os.path.join(workdir, "config.0.json"), f.read())
    fileio.write_text(os.path.join(workdir, f"config.{start_step}.json"), text)
    fileio.write_text(os.path.join(workdir, CONFIG_FILE), text)


def _history(workdir: str) -> list[str]:
    return sorted(f for f in os.listdir(workdir) if f.startswith("config.") and f[7:-5].isdigit()
                  and f.endswith(".json"))


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _normalised(config) -> dict:
    """The config as its JSON record reads back (tuples as lists), completed like `read_config`."""
    return _flat(_merge(config_lib.base_config().to_dict(), json.loads(config.to_json_best_effort())))


def check_resume(config, workdir: str) -> list[str]:
    """The changes `config` makes to the config recorded in `workdir` (one line each, for the log).

    Raises ResumeConfigError naming every field that may not change, before anything is written.
    """
    stored = read_config(workdir)
    old, new = _normalised(stored), _normalised(config)
    missing = object()
    changed = sorted(k for k in set(old) | set(new) if old.get(k, missing) != new.get(k, missing))
    refused = [k for k in changed if k not in RESUME_MAY_CHANGE]
    path = os.path.join(workdir, CONFIG_FILE)
    if refused:
        detail = "; ".join(f"{k}: recorded {old.get(k)!r}, this run {new.get(k)!r}" for k in refused)
        flags = " ".join(f"--config.{k}={_flag_value(old[k])}" for k in refused if k in old)
        raise ResumeConfigError(
            f"{path} records another experiment than this run: {detail}. These fields define the model, "
            f"its data or the train state's layout, so the checkpoints in {workdir} cannot continue with "
            f"them: resume with the recorded values ({flags or 'drop the overrides'}), or train in a new "
            "--workdir. Nothing in the workdir was changed.")
    if changed:
        tx_old, _ = optim.make_optimizer(stored.optim, stored.num_train_steps)
        tx_new, _ = optim.make_optimizer(config.optim, config.num_train_steps)
        params = Network(config).abstract_params
        layouts = [jax.tree.map(lambda x: (x.shape, str(x.dtype)), jax.eval_shape(tx.init, nnx.to_pure_dict(params)))
                   for tx in (tx_old, tx_new)]
        if jax.tree.structure(layouts[0]) != jax.tree.structure(layouts[1]) or layouts[0] != layouts[1]:
            raise ResumeConfigError(
                f"this run's optimiser keeps other state than the one recorded in {path} "
                f"({', '.join(k for k in changed if k.startswith('optim.'))} changed): its checkpoints cannot "
                "be continued with it. Resume with the recorded optimiser, or train in a new --workdir. "
                "Nothing in the workdir was changed.")
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed]


def _flag_value(value) -> str:
    """`value` as a --config.<field>= command-line value."""
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_flag_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


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
            raise WorkdirError(f"{path} is not valid JSON ({e}); it is written by tools/train.py: restore it "
                               f"from config.<step>.json beside it, or train in a new workdir") from None
    if not isinstance(stored, dict):
        raise WorkdirError(f"{path} holds a JSON {type(stored).__name__}; expected the config object "
                           "tools/train.py writes")
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
        step, state = manager.restore_newest(template, step)
    finally:
        manager.close()
    return Restored(config, network, state, int(step))
