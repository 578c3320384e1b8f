"""The released c2f-vol network of h36m_paper.py on Human3.6M, trained for accuracy: the integral loss
with DSNT's Jensen-Shannon heatmap regulariser ('both'), continuous targets, soft-argmax decoding,
Adam 1e-3 with x0.1 steps at 90% and 97% of training (integral regression's recipe), batch 32.

    python tools/train.py --config=configs/h36m_integral.py --workdir=DIR \
        --config.data.data_dir=~/tensorflow_datasets

The `mpii` variant trains on Human3.6M and MPII half and half (every batch 16 + 16; MPII supervises
x and y only), as integral regression did for its 49.6 mm; it evaluates on Human3.6M as before:

    python tools/train.py --config=configs/h36m_integral.py:mpii --workdir=DIR
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h36m_paper  # noqa: E402  (configs/ is not a package; config_flags loads files by path)


def get_config(variant: str = ""):
    c = h36m_paper.get_config()
    c.codec.target = "continuous"
    c.loss.kind = "both"      # codec.decoder 'auto' -> soft_argmax
    c.loss.mix_heatmap = "js"
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "step"
    c.optim.step_decay_at = (0.9, 0.97)
    c.batch_size = 32
    c.num_train_steps = 150_000
    if variant == "mpii":
        c.data.mix = ((c.data.name, 0.5), ("mpii", 0.5))
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of h36m_integral; use '' or 'mpii'")
    return c
