"""A small model that learns the built-in synthetic data on 2 CPU cores: about 6 minutes of training on
the AVX-512 class and about 14 on the AVX2 class (3600 steps of batch 16).

Trained with the integral loss plus DSNT's Jensen-Shannon regulariser ('both'), decoded by soft-argmax,
Adam 3e-3 with cosine decay. Measured on the test split (README, "Measured figures"): the mix reached
130 mm MPJPE at 3000 steps at 1e-3 where the integral loss alone reached 142-146 mm; at 1e-3 4500 steps
gave 117 mm, and at 3e-3 3600 steps gave 103 mm (2e-3: 108 mm).

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
    c.optim.learning_rate = 3e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.batch_size = 16
    c.num_train_steps = 3600
    c.log_every = 50
    c.checkpoint_every = 600
    c.eval_every = 1800
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
