"""The one tf.data input pipeline: person crops and joints for training and evaluation.

Every dataset follows `c2f_vol.data.features`; images stay JPEG bytes until the
parallel map, which decodes only the region the crop needs, augments (training)
and warps it. The pipeline carries images and coordinates only: targets are
built on the accelerator, and images leave here as uint8 (normalised there).

Batch elements (B = per-process batch, S = input_size, J = 17):
  image         uint8 (B, S, S, 3)
  joints_uv     float32 (B, J, 2) crop pixels (pixel centres at integers)
  depth_rel_mm  float32 (B, J) joint depth minus root depth
  affine        float32 (B, 2, 3) image -> crop (`camera.crop_affine`)
  intrinsics    float32 (B, 4) of the stored image
  root_depth_mm float32 (B,)
  joints_3d     float32 (B, J, 3) camera frame, mm (re-labelled with the flip)
  distortion    float32 (B, 5) the lens (k1, k2, k3, p1, p2) of the stored image
  joints_weight float32 (B, J) 1 = supervise the joint, 0 = the source does not locate it
  has_3d        float32 (B,) 1 = depth and 3D are real, 0 = a 2D-only example (MPII)
  mask          float32 (B,) 1 for real examples, 0 for padding
  frame         int32 (B,)
  subject, action, sequence, camera: string (B,), evaluation batches only

Examples made before the contract had distortion, joints_weight, joints_visible, has_3d and
sequence (in-memory ones) read as a pinhole camera, every joint located, 3D, one take per action.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from c2f_vol import camera, skeleton
from c2f_vol.data import augment, builders
from c2f_vol.errors import UserError
from c2f_vol.data.data_config import crop_reach, default_data_config, resolve_data_config  # noqa: F401 (re-exported)

_STRING_KEYS = ("subject", "action", "sequence", "camera")


def _autotune(n: int) -> int:
    return tf.data.AUTOTUNE if n is None or n < 0 else int(n)


# ---------------------------------------------------------------------------
# Builders.


class UnknownSplitError(UserError, KeyError):
    """A split name the prepared dataset does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def load_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder `name` ('c2f_synthetic/procedural', 'human36m', ...).

    Never downloads or builds: an unprepared dataset raises with the command that builds it.
    The families of `builders.BUILDERS` are registered with TFDS; another name must be
    prepared in `data_dir` already.
    """
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise FileNotFoundError(
            f"no dataset {name!r} is registered or prepared in data_dir {data_dir}; known families: "
            f"{sorted(builders.BUILDERS)}. Build it with: {builders.build_command(name)}") from e
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"dataset {name!r} is not prepared in {builder.data_dir}; build it first (nothing is downloaded):\n"
            f"  {builders.build_command(name, builder.data_dir_root)}")
    return builder


def read_examples(builder, split: str, process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
    """This process's contiguous share of `split` in stored order, the image left as JPEG bytes.

    `tfds.even_splits` maps each share onto its own files and records, so a host
    reads 1/process_count of the data instead of filtering the whole split.
    """
    return builder.as_dataset(
        split=_process_split(split, process_index, process_count),
        decoders={"image": tfds.decode.SkipDecoding()}, shuffle_files=False,
        read_config=tfds.ReadConfig(try_autocache=False))


def _process_split(split: str, process_index: int, process_count: int):
    return split if process_count == 1 else tfds.even_splits(split, n=process_count)[process_index]


# ---------------------------------------------------------------------------
# One example.


def _with_defaults(example: dict) -> dict:
    """`example` with the contract's newer fields filled where it lacks them (see the module docstring)."""
    j = skeleton.NUM_JOINTS
    defaults = {"distortion": lambda: tf.zeros([5]), "joints_weight": lambda: tf.ones([j]),
                "joints_visible": lambda: tf.ones([j], tf.bool), "has_3d": lambda: tf.constant(True),
                "sequence": lambda: example["action"]}
    return {**{k: make() for k, make in defaults.items() if k not in example}, **example}


def preprocess(example: dict, index, data_config, input_size: int, train: bool, seed=0,
               process_index=0) -> dict:
    """One example of the contract -> one element of a batch (see the module docstring).

    Args:
      example: image (JPEG bytes or (H, W, 3) uint8), joints_2d (J, 2), joints_3d
        (J, 3), intrinsics (4,), subject, action, camera, frame.
      index: () int, the example's position in this process's stream; with
        `seed` and `process_index` it decides the augmentation.
      data_config: `default_data_config()`-like (a ConfigDict with its fields).
      input_size: S.
      train: augment when True; otherwise the plain person box, and the
        string metadata (subject, action, camera) is kept.
    """
    data_config = resolve_data_config(data_config)
    example = _with_defaults(example)
    joints_2d = tf.cast(example["joints_2d"], tf.float32)
    joints_3d = tf.cast(example["joints_3d"], tf.float32)
    weight = tf.cast(example["joints_weight"], tf.float32)
    if train:
        params = augment.sample_augmentation(augment.example_seed(seed, process_index, index), data_config)
    else:
        params = augment.identity_augmentation()
    center, side = augment.person_box(joints_2d, data_config.box_margin, weight)
    affine = camera.crop_affine(center, side * params["scale"], input_size, params["rotation_deg"], params["flip"])
    affine = tf.cast(affine, tf.float32)
    joints_uv, joints_3d = augment.crop_joints(affine, joints_2d, joints_3d, params["flip"])
    (weight,) = augment.flip_labels(params["flip"], weight)
    pixels = augment.crop_image(example["image"], affine, input_size)
    image = augment.apply_color_gain(pixels, params["color_gain"]) if train else tf.saturate_cast(
        tf.round(pixels), tf.uint8)
    root_depth = joints_3d[skeleton.ROOT, 2]
    out = {
        "image": tf.ensure_shape(image, [input_size, input_size, 3]),
        "joints_uv": joints_uv,
        "depth_rel_mm": joints_3d[:, 2] - root_depth,
        "affine": affine,
        "intrinsics": tf.cast(example["intrinsics"], tf.float32),
        "root_depth_mm": root_depth,
        "joints_3d": joints_3d,
        "distortion": tf.cast(example["distortion"], tf.float32),
        "joints_weight": weight,
        "has_3d": tf.cast(example["has_3d"], tf.float32),
        "mask": tf.constant(1.0),
        "frame": tf.cast(example["frame"], tf.int32),
    }
    if not train:  # training batches stay all-numeric, so they can go to the devices whole
        for k in _STRING_KEYS:
            out[k] = tf.convert_to_tensor(example[k], tf.string)
    return out


# ---------------------------------------------------------------------------
# Datasets.


def _process(process_index, process_count) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # only here: tests and tools may build datasets without touching jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must be in [0, process_count={process_count})")
    return int(process_index), int(process_count)


def _num_examples(ds: tf.data.Dataset) -> int:
    n = int(ds.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        raise ValueError("the example source is infinite; pass a finite split")
    if n < 0:  # unknown (e.g. after a filter): one pass over the undecoded records
        n = int(ds.reduce(tf.constant(0, tf.int64), lambda c, _: c + 1))
    return n


def _options(ds: tf.data.Dataset, data_config) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    if int(data_config.threads) > 0:
        options.threading.private_threadpool_size = int(data_config.threads)
    # Parallelism comes from the map's parallel calls; ops inside it stay single-threaded.
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def _train_batches(shard: tf.data.Dataset, num_examples: int, data_config, input_size: int, batch_size: int,
                   seed: int, start_step: int, process_index: int) -> tf.data.Dataset:
    """The infinite training stream of one process's `shard` (undecoded examples)."""
    data_config = resolve_data_config(data_config)
    if num_examples == 0:
        raise ValueError(f"process {process_index} has no training examples")
    if batch_size < 1 or start_step < 0:
        raise ValueError(f"need batch_size >= 1 and start_step >= 0; got {batch_size}, {start_step}")
    start = int(start_step) * int(batch_size)
    first_epoch, offset = divmod(start, num_examples)
    buffer = max(1, min(int(data_config.shuffle_buffer), num_examples))

    def epoch(e):
        # A fixed shuffle per (seed, process, epoch): epoch e can be rebuilt without replaying 0..e-1.
        key = augment.example_seed(seed, process_index, -1 - e)  # negative: disjoint from example positions
        shuffle_seed = tf.random.stateless_uniform([], key, minval=None, maxval=None, dtype=tf.int64)
        return shard.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)

    ds = tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(epoch)
    # Skipping happens on undecoded records, so resuming costs at most one epoch of reads.
    ds = ds.skip(offset).enumerate(start=start)
    ds = ds.map(lambda i, ex: preprocess(ex, i, data_config, input_size, True, seed, process_index),
                num_parallel_calls=_autotune(data_config.num_parallel_calls), deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    return _options(ds.prefetch(_autotune(data_config.prefetch)), data_config)


def train_dataset(builder, split: str, data_config, input_size: int, *, batch_size: int, seed: int,
                  start_step: int = 0, process_index: int | None = None,
                  process_count: int | None = None) -> tf.data.Dataset:
    """Infinite, shuffled, augmented batches of `batch_size` (per process) for training.

    Each process reads its own contiguous share of `split`. `start_step=k` yields
    exactly batches k, k+1, ... of an uninterrupted run from step 0 with the same
    seed and process layout.
    """
    process_index, process_count = _process(process_index, process_count)
    check_stored_crops(builder, data_config)
    n = builder.info.splits[_process_split(split, process_index, process_count)].num_examples
    return _train_batches(read_examples(builder, split, process_index, process_count), n, data_config, input_size,
                          batch_size, seed, start_step, process_index)


def train_dataset_from_examples(examples: tf.data.Dataset, data_config, input_size: int, *, batch_size: int,
                                seed: int, start_step: int = 0, process_index: int = 0,
                                process_count: int = 1) -> tf.data.Dataset:
    """`train_dataset` on a finite dataset of contract examples (images as JPEG bytes), e.g. in memory.

    Process p takes every process_count-th example starting at p.
    """
    shard = examples.shard(process_count, process_index)
    return _train_batches(shard, _num_examples(shard), data_config, input_size, batch_size, seed, start_step,
                          process_index)


class StoredCropError(UserError, ValueError):
    """A dataset's stored person crops are smaller than the training crops would need."""


def check_stored_crops(builder, data_config) -> None:
    """Refuse to train on person crops (`info.metadata['box_margin']`) too small for this config's augmentation.

    A builder that stores person crops records their box_margin; a crop cut beyond it would read black
    where the frame had pixels, which the test crops never show. Whole frames (no record) always fit.
    """
    stored = builder.info.metadata.get("box_margin") if builder.info.metadata else None
    if stored is None:
        return
    need = crop_reach(data_config)
    if float(stored) + 1e-6 < need:
        raise StoredCropError(
            f"{builder.info.full_name} in {builder.data_dir} stores person crops of {float(stored):g} x the joints' "
            f"extent, but this config's training crops reach {need:.3f} x (data.box_margin {data_config.box_margin} "
            f"x scale up to {max(data_config.scale_clip[1], 1.0):g} x the rotated corners): they would read black "
            f"beyond the stored pixels. Rebuild the dataset with a builder config whose box_margin >= {need:.3f}, "
            f"or lower data.box_margin, data.scale_clip or data.rotation_clip_deg.")


def mix_batch_sizes(mix, batch_size: int) -> list[int]:
    """How many of each batch's `batch_size` examples each ((name, share), ...) of data.mix gives.

    Shares are normalised and rounded by largest remainder, so the sizes sum to `batch_size`; a dataset
    whose share rounds to no example at this batch size is refused.
    """
    names = [str(n) for n, _ in mix]
    shares = np.asarray([float(w) for _, w in mix], np.float64)
    if len(set(names)) != len(names) or not np.all(shares > 0):
        raise UserError(f"data.mix must name distinct datasets with shares > 0; got {list(mix)}")
    exact = shares / shares.sum() * batch_size
    sizes = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - sizes), kind="stable")[:batch_size - sizes.sum()]:
        sizes[i] += 1
    if np.any(sizes == 0):
        raise UserError(f"data.mix {list(mix)} at a per-process batch of {batch_size} gives "
                        f"{dict(zip(names, sizes.tolist()))} examples per batch; every dataset needs at least 1: "
                        f"raise batch_size or the smaller shares")
    return sizes.tolist()


def training_batches(data_config, input_size: int, *, batch_size: int, seed: int, start_step: int = 0,
                     builder=None, process_index: int | None = None,
                     process_count: int | None = None) -> tf.data.Dataset:
    """The training stream of a config: `train_dataset` of data.name (`builder` when given), or of data.mix.

    With data.mix every batch is the concatenation of one batch of each dataset (`mix_batch_sizes`), each
    from its own `train_dataset` stream with its own seed, so the mix is deterministic and a resume at
    `start_step` rebuilds it exactly.
    """
    data_config = resolve_data_config(data_config)
    if not data_config.mix:
        builder = builder or load_builder(data_config.name, data_config.data_dir)
        return train_dataset(builder, data_config.train_split, data_config, input_size, batch_size=batch_size,
                             seed=seed, start_step=start_step, process_index=process_index,
                             process_count=process_count)
    streams = []
    for i, ((name, _), size) in enumerate(zip(data_config.mix, mix_batch_sizes(data_config.mix, batch_size))):
        source = load_builder(str(name), data_config.data_dir)
        streams.append(train_dataset(source, data_config.train_split, data_config, input_size, batch_size=size,
                                     seed=seed + 7919 * i, start_step=start_step, process_index=process_index,
                                     process_count=process_count))
    ds = tf.data.Dataset.zip(tuple(streams)).map(
        lambda *parts: {k: tf.concat([p[k] for p in parts], axis=0) for k in parts[0]})
    return _options(ds.prefetch(_autotune(data_config.prefetch)), data_config)


def _pad_batch(batch: dict, batch_size: int) -> dict:
    """Pad a possibly short batch to `batch_size` (mask 0) and give every tensor a static batch dim."""
    out = {}
    for k, v in batch.items():
        missing = batch_size - tf.shape(v)[0]
        pad = tf.concat([[[0, missing]], tf.zeros([len(v.shape) - 1, 2], tf.int32)], axis=0)
        out[k] = tf.ensure_shape(tf.pad(v, pad), [batch_size] + v.shape[1:].as_list())
    return out


def _keep_frames(examples: tf.data.Dataset, frame_stride: int) -> tf.data.Dataset:
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1; got {frame_stride}")
    if frame_stride == 1:
        return examples
    return examples.filter(lambda ex: tf.cast(ex["frame"], tf.int64) % frame_stride == 0)


def _eval_batches(shard: tf.data.Dataset, data_config, input_size: int, batch_size: int,
                  num_batches: int | None) -> tf.data.Dataset:
    """Preprocessed, padded batches of `shard`; with `num_batches`, all-padding batches are appended up to it."""
    data_config = resolve_data_config(data_config)
    ds = shard.map(lambda ex: preprocess(ex, 0, data_config, input_size, False),
                   num_parallel_calls=_autotune(data_config.num_parallel_calls), deterministic=True)
    ds = ds.batch(batch_size).map(lambda b: _pad_batch(b, batch_size))
    if num_batches is not None:
        zeros = {k: tf.zeros(spec.shape, spec.dtype) for k, spec in ds.element_spec.items()}
        ds = ds.concatenate(tf.data.Dataset.from_tensors(zeros).repeat()).take(num_batches)
    return _options(ds.prefetch(_autotune(data_config.prefetch)), data_config)


def _common_num_batches(shards: list[tf.data.Dataset], batch_size: int) -> int | None:
    """The batch count every process must step through: that of the largest shard (None for one process)."""
    if len(shards) == 1:
        return None
    return max(-(-_num_examples(s) // batch_size) for s in shards)


def eval_dataset(builder, split: str, data_config, input_size: int, *, batch_size: int,
                 process_index: int | None = None, process_count: int | None = None,
                 frame_stride: int = 1) -> tf.data.Dataset:
    """Finite, deterministic, unaugmented batches; the last is padded to `batch_size` with mask 0.

    `frame_stride` keeps examples whose `frame` is a multiple of it (e.g. 64 for
    Sun et al.'s protocol); 1 keeps all. With several processes (hosts) every one
    gets the same number of batches, as a sharded step needs, by appending
    all-padding batches; with a stride > 1 the counts take one pass over the
    whole split's undecoded records.
    """
    process_index, process_count = _process(process_index, process_count)
    shards = [_keep_frames(read_examples(builder, split, p, process_count), frame_stride)
              for p in range(process_count)]
    return _eval_batches(shards[process_index], data_config, input_size, batch_size,
                         _common_num_batches(shards, batch_size))


def eval_dataset_from_examples(examples: tf.data.Dataset, data_config, input_size: int, *, batch_size: int,
                               process_index: int = 0, process_count: int = 1,
                               frame_stride: int = 1) -> tf.data.Dataset:
    """`eval_dataset` on a finite dataset of contract examples (images as JPEG bytes), e.g. in memory.

    Process p takes every process_count-th kept example starting at p.
    """
    kept = _keep_frames(examples, frame_stride)
    shards = [kept.shard(process_count, p) for p in range(process_count)]
    return _eval_batches(shards[process_index], data_config, input_size, batch_size,
                         _common_num_batches(shards, batch_size))


def split_values(builder, split: str, keys=("subject", "action")) -> dict[str, list[str]]:
    """The distinct values of string features of `split` (e.g. its subjects and actions), images not decoded."""
    if split not in builder.info.splits:
        raise UnknownSplitError(f"{builder.info.full_name} in {builder.data_dir} has no split {split!r}; its splits: "
                                f"{sorted(builder.info.splits)}")
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()}, shuffle_files=False)
    ds = ds.map(lambda ex: {k: ex[k] for k in keys})
    values: dict[str, set] = {k: set() for k in keys}
    for batch in ds.batch(4096).as_numpy_iterator():
        for k in keys:
            values[k].update(v.decode() for v in np.unique(batch[k]))
    return {k: sorted(v) for k, v in values.items()}


def eval_batches(builder, data_config, input_size: int, batch_size: int, *, split: str | None = None,
                 frame_stride: int = 1, max_examples: int = 0, subjects=(), actions=(),
                 process_index: int | None = None, process_count: int | None = None):
    """Numpy `eval_dataset` batches of `split` (default: data_config.eval_split), for `evaluation.evaluate`.

    `max_examples` > 0 stops after the batches holding that many examples; `subjects` and `actions`, when
    given, set the mask of every other example to 0. `process_index`/`process_count` as in `eval_dataset`
    (default: this process's share); (0, 1) gives every process the whole split.
    """
    ds = eval_dataset(builder, split or data_config.eval_split, data_config, input_size, batch_size=batch_size,
                      frame_stride=frame_stride, process_index=process_index, process_count=process_count)
    if max_examples:
        ds = ds.take(-(-max_examples // batch_size))
    for batch in ds.as_numpy_iterator():
        if subjects or actions:
            sel = np.ones(len(batch["mask"]), bool)
            if subjects:
                sel &= np.isin([s.decode() for s in batch["subject"]], list(subjects))
            if actions:
                sel &= np.isin([a.decode() for a in batch["action"]], list(actions))
            batch["mask"] = np.where(sel, batch["mask"], 0).astype(np.float32)
        yield batch


def measure_throughput(dataset: tf.data.Dataset, num_batches: int) -> float:
    """Examples per second over `num_batches` batches, after one warm-up batch (tracing, buffer fill).

    The batch size is read from the leading dimension of each batch's first tensor.
    """
    it = iter(dataset)
    next(it)
    images = 0
    t0 = time.perf_counter()
    for _ in range(num_batches):
        images += int(tf.nest.flatten(next(it))[0].shape[0])
    return images / (time.perf_counter() - t0)
