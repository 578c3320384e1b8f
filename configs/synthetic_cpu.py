"""A small model that learns the built-in synthetic data on 2 CPU cores: about 7 minutes of training on
the AVX-512 class and about 14 on the AVX2 class (4500 steps of batch 16).

Trained with the integral loss plus DSNT's Jensen-Shannon regulariser ('both'), decoded by soft-argmax:
on this data the mix reached 130 mm test MPJPE at 3000 steps where the integral loss alone reached
142-146 mm, and 4500 steps took it to 117 mm (README, "Demo").

    python tools/train.py --config=configs/synthetic_cpu.py --workdir=DIR
    python tools/train.py --config=configs/synthetic_cpu.py:tiny --workdir=DIR   # seconds; for tests

The `tiny` variant shrinks everything so one step takes well under a second.
"""

from c2f_vol.config import base_config


def get_config(variant: str = ""):
    c = base_config()
    c.data.name = "c2f_synthetic/procedural"
    c.codec.input_size = 64
    c.codec.heatmap_size = (16, 16)
    c.codec.depth_bins = (2, 16)
    c.codec.sigma = 1.0
    c.loss.kind = "both"
    c.model.num_stacks = 2
    c.model.features = 64
    c.model.hourglass_depth = 2
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.batch_size = 16
    c.num_train_steps = 4500
    c.log_every = 50
    c.checkpoint_every = 500
    c.eval_every = 1500
    c.eval_batch_size = 32
    c.eval_max_examples = 0
    if variant == "tiny":
        c.codec.input_size = 32
        c.codec.heatmap_size = (8, 8)
        c.codec.depth_bins = (1, 4)
        c.model.features = 16
        c.model.hourglass_depth = 1
        c.optim.warmup_steps = 0
        c.batch_size = 4
        c.num_train_steps = 6
        c.log_every = 2
        c.checkpoint_every = 2
        c.eval_every = 0
        c.eval_batch_size = 4
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of synthetic_cpu; use '' or 'tiny'")
    return c
