"""The paper's model on Human3.6M: 4 stacks, 256 features, 256² input, 64² heatmaps,
depth bins (1, 2, 4, 64) over ±1000 mm, RMSprop 2.5e-4, no decay. Computes in bfloat16 with float32
parameters and optimiser state (for GPUs and TPUs; `--config.model.dtype=float32` for full precision).
The loss is the integral (soft-argmax L1) loss that matches the soft-argmax decoding; `--config.loss.kind=heatmap` gives the
paper's Gaussian MSE (see c2f_vol/config.py for why that is not the default).

    python tools/train.py --config=configs/h36m_paper.py --workdir=DIR \
        --config.data.data_dir=~/tensorflow_datasets --config.batch_size=32
"""

from c2f_vol.config import base_config


def get_config():
    c = base_config()
    c.data.name = "human36m"
    c.model.dtype = "bfloat16"
    c.num_train_steps = 250_000
    c.checkpoint_every = 2000
    c.eval_every = 10_000
    return c
