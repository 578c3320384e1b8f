"""Training: the jitted data-parallel step, checkpoints, logging and the loop.

`train_and_evaluate(config, workdir)` is the whole entry point; tools/train.py
only parses flags and calls it.

The train state is `c2f_vol.train_state`'s dict; the network and its inference
functions are `c2f_vol.inference`'s. A step with a non-finite loss applies no
update, so the state stays the last good one and the host can stop before
saving anything bad.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import optax
import tqdm
from absl import logging
from flax import nnx

from c2f_vol import checkpoint, evaluation, losses, optim, sharding, train_state, workdir as workdir_lib
from c2f_vol.errors import UserError
from c2f_vol.inference import Network, variables_of

TRAIN_KEYS = ("image", "joints_uv", "depth_rel_mm", "joints_weight", "has_3d", "mask")
# A batch may leave these out (then every joint is supervised, in 3D): the loss's defaults.
OPTIONAL_TRAIN_KEYS = ("joints_weight", "has_3d")


def train_keys(config) -> tuple[str, ...]:
    """The batch keys the train step takes: has_3d only when data.mix can bring 2D-only examples, since
    with it the loss computes the 2D forms beside the 3D ones (losses module docstring)."""
    return TRAIN_KEYS if config.data.get("mix") else tuple(k for k in TRAIN_KEYS if k != "has_3d")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class Trainer:
    """The network, the optimiser and the jitted data-parallel step for one config."""

    def __init__(self, config, mesh: jax.sharding.Mesh | None = None):
        self.config = config
        self.mesh = mesh or sharding.make_mesh(config.num_devices)
        self.network = Network(config)
        self.codec = self.network.codec
        self.keys = train_keys(config)
        self.tx, self.schedule = optim.make_optimizer(config.optim, config.num_train_steps)
        repl = sharding.replicated(self.mesh)
        batch = sharding.batch_sharded(self.mesh)
        self._init = jax.jit(lambda: train_state.create(self.network, self.tx), out_shardings=repl)
        self.train_step = jax.jit(self._train_step, in_shardings=(repl, batch), out_shardings=(repl, repl),
                                  donate_argnums=0)

    def _train_step(self, state: dict, batch: dict) -> tuple[dict, dict]:
        def loss_fn(params):
            model = self.network.module(params, state["batch_stats"])
            model.train()
            logits = model(batch["image"])
            loss, metrics = losses.compute_loss(logits, batch, self.codec, self.config.loss)
            new_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
            return loss, (metrics, new_stats)

        (loss, (metrics, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, new_opt = self.tx.update(grads, state["opt_state"], state["params"])
        new_params = optax.apply_updates(state["params"], updates)
        grad_norm = optax.tree.norm(grads)
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

    def init_state(self) -> dict:
        """A fresh train state, built directly in its replicated layout on the mesh."""
        return self._init()

    def put(self, batch: dict) -> dict:
        return sharding.put_batch({k: batch[k] for k in self.keys if k in batch or k not in OPTIONAL_TRAIN_KEYS},
                                  self.mesh)


def _prefetch_to_device(it: Iterator[dict], trainer: Trainer, size: int = 2) -> Iterator[dict]:
    """Keep `size` batches in flight on the devices so host transfer overlaps compute."""
    queue = collections.deque()
    for batch in it:
        queue.append(trainer.put(batch))
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


class _Progress:
    """Training progress for a person: one bar on a terminal, a line every log_every steps otherwise.

    The bar shows step, loss, images/s and ETA; evaluations and warnings print above it.
    """

    def __init__(self, total: int, start: int, batch_size: int, terminal: bool):
        self.total, self.batch_size = total, batch_size
        self.bar = (tqdm.tqdm(total=total, initial=start, unit="step", desc="train", file=sys.stderr,
                              dynamic_ncols=True, mininterval=0.5, smoothing=0.1) if terminal else None)

    def step(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def log(self, step: int, loss: float, ips: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}, {ips:.1f} images/s", refresh=False)
            return
        eta = (self.total - step) * self.batch_size / max(ips, 1e-9)
        logging.info("step %d/%d  loss %.5f  %.1f images/s  ETA %s", step, self.total, loss, ips,
                     time.strftime("%H:%M:%S", time.gmtime(eta)))

    def line(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            logging.info("%s", msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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


def train_and_evaluate(config, workdir: str, restore_step: int | None = None) -> dict:
    """Train `config` in `workdir`, resuming from its newest readable checkpoint (or `restore_step`).

    Before anything is written the run is checked: the dataset must be prepared and, on a resume, the
    config must continue the recorded one (`workdir.check_resume`). A resume's changes are recorded
    (config.json and config.<step>.json) only once it has saved a checkpoint, so a run that fails
    first leaves the workdir as it was.

    Returns dict(step, train (last logged metrics), eval (last evaluation), state, history (this run's
    logged train metrics and evaluations, each a dict with 'step' and 'kind' 'train' | 'eval'),
    preempted (stopped by SIGTERM before the last step)).

    SIGTERM (preemption) at any point saves a checkpoint after the current step and returns.
    """
    with _Preemption() as preempt:
        return _train(config, workdir, preempt, restore_step)


def _train(config, workdir: str, preempt: "_Preemption", restore_step: int | None) -> dict:
    import tensorflow as tf

    # Function-level: keeps TensorFlow off the Trainer, which the GPU benchmark runs without it.
    from c2f_vol.data import builders, pipeline, stats

    # Everything that can refuse the run comes before the first write to the workdir.
    workdir_lib.check_workdir(workdir)
    builder = pipeline.load_builder(config.data.name, config.data.data_dir)
    if not config.data.get("mix") and builders.family(config.data.name) in builders.TWO_D_ONLY:
        raise UserError(f"data.name={config.data.name!r} has 2D poses only; train on it beside a 3D dataset with "
                        f"data.mix (e.g. configs/h36m_integral.py:mpii), and keep a 3D dataset as data.name "
                        "(it is evaluated and gives the bone lengths)")
    resuming = workdir_lib.has_checkpoints(workdir)
    changes = workdir_lib.check_resume(config, workdir) if resuming else []
    trainer = Trainer(config)
    local_batch = sharding.check_batch_size(config.batch_size, trainer.mesh)
    os.makedirs(workdir, exist_ok=True)

    manager = checkpoint.Manager(workdir_lib.checkpoint_dir(workdir), config.keep_checkpoints)
    state = trainer.init_state()
    if manager.steps() or restore_step is not None:
        restored_step, state = manager.restore_newest(state, restore_step)
        logging.info("Resumed from step %d of %s.", restored_step, manager.directory)
    start_step = int(state["step"])
    for change in changes:
        logging.warning("resuming %s with a changed config: %s", workdir, change)
    # A fresh run records its config at once; a changed resume at its first checkpoint (see the loop).
    if not resuming and jax.process_index() == 0:
        workdir_lib.write_config(config, workdir, start_step)
    config_pending = bool(changes)

    if jax.process_index() == 0 and not os.path.isfile(os.path.join(workdir, stats.BONE_LENGTHS_FILE)):
        # Kept with the model: the limb-length root-depth search needs them at test time.
        poses, _ = stats.load_poses(builder, config.data.train_split, config.bone_length_examples)
        stats.write_bone_lengths(workdir, stats.mean_bone_lengths(poses),
                                 f"{config.data.name}:{config.data.train_split} ({len(poses)} examples)")
    train_ds = pipeline.training_batches(config.data, trainer.codec.input_size, batch_size=local_batch,
                                         seed=config.seed, start_step=start_step, builder=builder)
    writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard")) if jax.process_index() == 0 else None
    eval_metrics: dict = {}
    last_metrics: dict = {}
    history: list[dict] = []  # this run's logged train metrics and evaluations, in step order
    t_start, t_last, step_last = time.time(), time.time(), start_step
    step = start_step
    total = config.num_train_steps

    batches = _prefetch_to_device(train_ds.as_numpy_iterator(), trainer)
    progress = _Progress(total, start_step, config.batch_size, terminal=jax.process_index() == 0 and sys.stderr.isatty())
    for step in range(start_step + 1, total + 1):
        state, metrics = trainer.train_step(state, next(batches))
        progress.step(step)
        is_last = step == total
        stop = preempt.requested
        if step % config.log_every == 0 or is_last or stop or step % config.checkpoint_every == 0:
            bad = int(state["bad_step"])
            if bad >= 0:
                progress.close()
                last = manager.latest_step()
                kept = f"the newest checkpoint is still step {last}" if last else "no checkpoint was written"
                raise NonFiniteLossError(
                    f"loss or gradients became NaN/inf at step {bad + 1} (workdir {workdir}); no update was "
                    f"applied from then on and {kept}. Lower optim.learning_rate or enable "
                    "optim.grad_clip_norm, then resume.")
            last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            now = time.time()
            ips = (step - step_last) * config.batch_size / max(now - t_last, 1e-9)
            last_metrics["images_per_sec"] = ips
            history.append(dict(last_metrics, step=step, kind="train"))
            progress.log(step, last_metrics["loss"], ips)
            if writer is not None:
                with writer.as_default(step=step):
                    for k, v in last_metrics.items():
                        tf.summary.scalar(f"train/{k}", v)
            t_last, step_last = now, step
        if step % config.checkpoint_every == 0 or is_last or stop:
            manager.save(step, state, force=stop or is_last)
            if config_pending and jax.process_index() == 0:
                workdir_lib.write_config(config, workdir, start_step)
                config_pending = False
        if (config.eval_every and step % config.eval_every == 0) or is_last:
            # Every process scores the whole eval split with its own copy of the (replicated) state: the
            # metrics are those of one process, and no collective runs outside the train step.
            eval_data = pipeline.eval_batches(builder, config.data, trainer.codec.input_size, config.eval_batch_size,
                                              max_examples=config.eval_max_examples, process_index=0,
                                              process_count=1)
            eval_metrics = evaluation.evaluate(
                trainer.network.predict_fn(sharding.host_local(variables_of(state))), eval_data)
            progress.line(f"eval at step {step}: MPJPE {eval_metrics['mpjpe_mm']:.1f} mm, PA-MPJPE "
                          f"{eval_metrics['pa_mpjpe_mm']:.1f} mm over {eval_metrics['frames']} frames")
            history.append(dict(step=step, kind="eval", mpjpe_mm=eval_metrics["mpjpe_mm"],
                                pa_mpjpe_mm=eval_metrics["pa_mpjpe_mm"]))
            if writer is not None:
                with writer.as_default(step=step):
                    for k in ("mpjpe_mm", "pa_mpjpe_mm"):
                        tf.summary.scalar(f"eval/{k}", eval_metrics[k])
        if stop:
            progress.close()
            logging.warning("Stopped by SIGTERM at step %d; checkpoint saved.", step)
            break
    progress.close()
    manager.close()
    if writer is not None:
        writer.flush()
    logging.info("Training finished at step %d in %.1f s.", step, time.time() - t_start)
    return dict(step=step, train=last_metrics, eval=eval_metrics, state=state, history=history,
                preempted=preempt.requested)
