"""The paper's model on Human3.6M, as the released c2f-vol code trains it (DESIGN.md §1a).

The released `hg-stacked-4` network (three residuals per branch, 512-channel hourglass outputs,
lin-lin heads, concatenation feedback; 53.6 M parameters), depth bins (1, 2, 4, 64) over ±1000 mm,
the released Gaussian targets (13-voxel window, sigma 3.25, one-hot z at D <= 4), the per-stack MSE
loss, argmax decoding refined to sub-voxel precision, and Torch7's RMSprop (eps after the square root)
at 2.5e-4, batch 4, no decay. Computes in bfloat16 with float32 parameters and optimiser state
(`--config.model.dtype=float32` for full precision). For accuracy today, see h36m_integral.py.

    python tools/train.py --config=configs/h36m_paper.py --workdir=DIR \
        --config.data.data_dir=~/tensorflow_datasets
"""

from c2f_vol.config import base_config


def get_config():
    c = base_config()
    c.data.name = "human36m"
    c.model.arch = "released"
    c.model.dtype = "bfloat16"
    c.codec.target = "paper"
    c.codec.decoder = "auto"  # argmax_local, following loss.kind = heatmap
    c.loss.kind = "heatmap"
    c.optim.name = "rmsprop"
    c.optim.learning_rate = 2.5e-4
    c.optim.eps_in_sqrt = False
    c.optim.flatten = False  # per-parameter optimiser state: the big network's step is faster (optim.py)
    c.batch_size = 4
    c.num_train_steps = 250_000
    c.checkpoint_every = 2000
    c.eval_every = 10_000
    return c
