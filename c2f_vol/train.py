"""Training: the jitted data-parallel step, checkpoints, logging and the loop.

`train_and_evaluate(config, workdir)` is the whole entry point; tools/train.py
only parses flags and calls it.

The train state is a plain dict pytree:
  step       int32 ()   number of updates applied
  params     dict       float32 parameters (`nnx.to_pure_dict` of the model's nnx.Param state)
  batch_stats dict      BatchNorm running statistics (pure dict of the nnx.BatchStat state)
  opt_state  optax state over `params`
  bad_step   int32 ()   first step whose loss or gradients were not finite, -1 if none
A step with a non-finite loss applies no update, so the state stays the last
good one and the host can stop before saving anything bad.

Parameters are kept as pure dicts of arrays, not nnx.State: every call of the
jitted step flattens and rebuilds the state on the host, and for NNX Variables
that cost ~14 ms per step on the synthetic_cpu model (measured with
jax.profiler), a quarter of the step. Inside the trace `model_from` puts them
back into an NNX module.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import optax
from absl import logging
from flax import nnx

from c2f_vol import checkpoint, fileio, losses, model as model_lib, optim, sharding
from c2f_vol.codec import VolumeCodec

TRAIN_KEYS = ("image", "joints_uv", "depth_rel_mm", "mask")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class Trainer:
    """Holds the model's structure, the optimiser and the jitted steps for one config."""

    def __init__(self, config, mesh: jax.sharding.Mesh | None = None):
        self.config = config
        self.mesh = mesh or sharding.make_mesh(config.get("num_devices"))
        self.codec = VolumeCodec.for_experiment(config)
        self.tx, self.schedule = optim.make_optimizer(config.optim, config.num_train_steps)
        abstract = nnx.eval_shape(lambda: model_lib.create_model(config.model, self.codec, config.seed))
        # The abstract states are the templates that export/evaluation fill with pure dicts.
        self.graphdef, self.abstract_params, self.abstract_stats = nnx.split(abstract, nnx.Param, nnx.BatchStat)
        repl = sharding.replicated(self.mesh)
        batch = sharding.batch_sharded(self.mesh)
        self._init = jax.jit(self._init_state, out_shardings=repl)
        self.train_step = jax.jit(self._train_step, in_shardings=(repl, batch), out_shardings=(repl, repl),
                                  donate_argnums=0)
        self._jitted_crop_fn = None

    # -- pure functions ------------------------------------------------------

    def model_from(self, params: dict, batch_stats: dict) -> nnx.Module:
        """The NNX model holding `params` and `batch_stats` (pure dicts); usable inside jit and grad."""
        params_state = jax.tree.map(lambda x: x, self.abstract_params)
        stats_state = jax.tree.map(lambda x: x, self.abstract_stats)
        nnx.replace_by_pure_dict(params_state, params)
        nnx.replace_by_pure_dict(stats_state, batch_stats)
        return nnx.merge(self.graphdef, params_state, stats_state)

    def _init_state(self) -> dict:
        model = model_lib.create_model(self.config.model, self.codec, self.config.seed)
        _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
        return dict(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=self.tx.init(params), bad_step=jnp.full((), -1, jnp.int32))

    def _train_step(self, state: dict, batch: dict) -> tuple[dict, dict]:
        def loss_fn(params):
            model = self.model_from(params, state["batch_stats"])
            model.train()
            logits = model(batch["image"])
            loss, metrics = losses.compute_loss(logits, batch, self.codec, self.config.loss)
            new_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
            return loss, (metrics, new_stats)

        (loss, (metrics, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, new_opt = self.tx.update(grads, state["opt_state"], state["params"])
        new_params = optax.apply_updates(state["params"], updates)
        grad_norm = optax.global_norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def keep_if_ok(new, old):
            return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)

        step = state["step"]
        new_state = dict(
            step=step + ok.astype(jnp.int32),
            params=keep_if_ok(new_params, state["params"]),
            batch_stats=keep_if_ok(new_stats, state["batch_stats"]),
            opt_state=keep_if_ok(new_opt, state["opt_state"]),
            bad_step=jnp.where((state["bad_step"] < 0) & ~ok, step, state["bad_step"]),
        )
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm, learning_rate=self.schedule(step))
        return new_state, metrics

    def _predict(self, state: dict, images) -> tuple:
        model = self.model_from(state["params"], state["batch_stats"])
        model.eval()
        return model(images)

    # -- host-side helpers ---------------------------------------------------

    def crop_fn(self):
        """The jitted `export.make_crop_fn` of this trainer, compiled once and reused by every evaluation."""
        if self._jitted_crop_fn is None:
            from c2f_vol import export

            self._jitted_crop_fn = jax.jit(export.make_crop_fn(self))
        return self._jitted_crop_fn

    def init_state(self) -> dict:
        """Parameters are built directly in their replicated layout on the mesh."""
        return self._init()

    def put(self, batch: dict, keys=TRAIN_KEYS) -> dict:
        return sharding.put_batch({k: batch[k] for k in keys}, self.mesh)


def _prefetch_to_device(it: Iterator[dict], trainer: Trainer, size: int = 2) -> Iterator[dict]:
    """Keep `size` batches in flight on the devices so host transfer overlaps compute."""
    import collections

    queue = collections.deque()
    for batch in it:
        queue.append(trainer.put(batch))
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


class _Preemption:
    """Turns SIGTERM into a flag the loop checks between steps."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, nothing to restore
            self._old = None
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and stopping after this step.")
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


def _write_config(config, workdir: str) -> None:
    fileio.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2, sort_keys=True))


def train_and_evaluate(config, workdir: str) -> dict:
    """Train `config` in `workdir`, resuming from its latest checkpoint.

    Returns dict(step, train (last logged metrics), eval (last evaluation), state, history (this run's
    logged train metrics and evaluations, each a dict with 'step' and 'kind' 'train' | 'eval')).

    SIGTERM (preemption) at any point saves a checkpoint after the current step and returns.
    """
    with _Preemption() as preempt:
        return _train(config, workdir, preempt)


def _train(config, workdir: str, preempt: "_Preemption") -> dict:
    from c2f_vol import evaluation
    from c2f_vol.data import pipeline, stats
    import tensorflow as tf

    os.makedirs(workdir, exist_ok=True)
    trainer = Trainer(config)
    mesh = trainer.mesh
    local_batch = sharding.check_batch_size(config.batch_size, mesh)
    if jax.process_index() == 0:
        _write_config(config, workdir)

    manager = checkpoint.Manager(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    state = trainer.init_state()
    start_step = manager.latest_step() or 0
    if start_step:
        state = manager.restore(start_step, state)
        logging.info("Resumed from %s at step %d.", manager.directory, start_step)
    start_step = int(state["step"])

    builder = pipeline.load_builder(config.data.name, config.data.data_dir)
    if jax.process_index() == 0 and not os.path.isfile(os.path.join(workdir, stats.BONE_LENGTHS_FILE)):
        # Kept with the model: the limb-length root-depth search needs them at test time.
        poses, _ = stats.load_poses(builder, config.data.train_split, config.bone_length_examples)
        stats.write_bone_lengths(workdir, stats.mean_bone_lengths(poses),
                                 f"{config.data.name}:{config.data.train_split} ({len(poses)} examples)")
    train_ds = pipeline.train_dataset(builder, config.data.train_split, config.data, trainer.codec.input_size,
                                      batch_size=local_batch, seed=config.seed, start_step=start_step)
    writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard")) if jax.process_index() == 0 else None
    eval_metrics: dict = {}
    last_metrics: dict = {}
    history: list[dict] = []  # this run's logged train metrics and evaluations, in step order
    t_start, t_last, step_last = time.time(), time.time(), start_step
    step = start_step
    total = config.num_train_steps

    batches = _prefetch_to_device(train_ds.as_numpy_iterator(), trainer)
    for step in range(start_step + 1, total + 1):
        state, metrics = trainer.train_step(state, next(batches))
        is_last = step == total
        stop = preempt.requested
        if step % config.log_every == 0 or is_last or stop or step % config.checkpoint_every == 0:
            bad = int(state["bad_step"])
            if bad >= 0:
                raise NonFiniteLossError(
                    f"loss or gradients became NaN/inf at step {bad + 1} (workdir {workdir}); the state was "
                    f"kept at the last good step and no checkpoint after step {manager.latest_step()} was "
                    "written. Lower optim.learning_rate or enable optim.grad_clip_norm, then resume.")
            last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            now = time.time()
            ips = (step - step_last) * config.batch_size / max(now - t_last, 1e-9)
            eta = (total - step) * config.batch_size / max(ips, 1e-9)
            last_metrics["images_per_sec"] = ips
            history.append(dict(last_metrics, step=step, kind="train"))
            logging.info("step %d/%d  loss %.5f  %.1f images/s  ETA %s", step, total, last_metrics["loss"],
                         ips, time.strftime("%H:%M:%S", time.gmtime(eta)))
            if writer is not None:
                with writer.as_default(step=step):
                    for k, v in last_metrics.items():
                        tf.summary.scalar(f"train/{k}", v)
            t_last, step_last = now, step
        if step % config.checkpoint_every == 0 or is_last or stop:
            manager.save(step, state, force=stop or is_last)
        if (config.eval_every and step % config.eval_every == 0) or is_last:
            eval_metrics = evaluation.evaluate_state(trainer, state, builder, config,
                                                     max_examples=config.eval_max_examples)
            logging.info("eval at step %d: MPJPE %.1f mm, PA-MPJPE %.1f mm over %d frames", step,
                         eval_metrics["mpjpe_mm"], eval_metrics["pa_mpjpe_mm"], eval_metrics["frames"])
            history.append(dict(step=step, kind="eval", mpjpe_mm=eval_metrics["mpjpe_mm"],
                                pa_mpjpe_mm=eval_metrics["pa_mpjpe_mm"]))
            if writer is not None:
                with writer.as_default(step=step):
                    for k in ("mpjpe_mm", "pa_mpjpe_mm"):
                        tf.summary.scalar(f"eval/{k}", eval_metrics[k])
        if stop:
            logging.warning("Stopped by SIGTERM at step %d; checkpoint saved.", step)
            break
    manager.close()
    if writer is not None:
        writer.flush()
    logging.info("Training finished at step %d in %.1f s.", step, time.time() - t_start)
    return dict(step=step, train=last_metrics, eval=eval_metrics, state=state, history=history)
