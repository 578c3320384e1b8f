"""PyTorch (eager) reference of the c2f_vol network and training step -- BENCHMARK ONLY.

This file is not part of the c2f_vol package and torch is not a project
dependency. It exists to compare training-step throughput (images/s) of the
JAX implementation against a plain PyTorch eager implementation of exactly the
same network, loss and optimiser on the same machine.

What is reproduced (see c2f_vol/model.py, losses.py, codec.py, optim.py):
  * Both architectures of c2f_vol.model, picked by the config's model.arch:
    - 'uniform' (StackedHourglass): stem (7x7/2 conv without bias, BN, ReLU,
      pre-activation bottlenecks and max-pools down to the heatmap size), one
      hourglass per stack, post block (bottlenecks, 1x1 conv without bias, BN,
      ReLU), a 1x1 head with J * D_i channels (channel c = j * D_i + d), and
      the intermediate supervision remaps (features and predictions mapped back
      with 1x1 convs with bias and added to the next stack's input). Convs that
      feed a BN carry no bias, every other conv does. Padding is XLA's 'SAME'
      (asymmetric for the 7x7 stride-2 stem conv on an even input, so the
      input is padded explicitly there).
    - 'released' (ReleasedStackedHourglass, the released c2f-vol hg-stacked-N;
      53,585,847 parameters for configs/h36m_paper.py): the same bottleneck
      with a bias on every conv; stem 7x7/2 conv (padding 3 each side), BN,
      ReLU, Res(f/4 -> f/2), max-pool (the pooled stem features), two
      Res(f/2 -> f/2), Res(f/2 -> f); per stack a ReleasedHourglass (upper
      branch of three residuals, lower branch max-pool + three residuals +
      the next level or a residual + one residual + nearest x2 upsampling)
      to 2f channels, lin(2f -> 2f), lin(2f -> f) (2f for the last stack;
      lin = 1x1 conv with bias, BN, ReLU), the 1x1 head; feedback
      concat(head features, pooled stem features or the previous stack's head
      features) -> 1x1 conv, plus a 1x1 conv of the logits.
    BN momentum is converted from the Flax convention (torch momentum =
    1 - flax momentum) and eps is Flax's 1e-5. Weights use Flax's default
    initialisers (LeCun truncated normal kernels, zero biases, BN scale 1 /
    bias 0).
  * Losses (c2f_vol.losses.compute_loss), every kind: 'heatmap' (per stack
    the MSE between the logits and the codec's Gaussian volume, mean over
    J * D * H * W, as configs/h36m_paper.py trains), 'integral' (one softmax
    over each joint's whole volume, soft-argmax, L1 to the voxel coordinates
    divided by the axis size, summed over axes, mean over joints) and 'both'
    (integral_weight x integral + heatmap_weight x the Jensen-Shannon term
    'js' between the softmax volume and the normalised Gaussian target, as
    configs/h36m_integral.py trains, or the raw MSE 'mse'); masked mean over
    samples, weighted sum over stacks.
  * Targets: the codec's 'continuous' Gaussians (sigma voxels, z sigma
    scaled per level and floored at sigma_z_min) or the released 'paper'
    ones (paper_window-voxel window, relative sigma 0.25, centred on the
    joint's voxel, one-hot z at small D), built inside every step from the
    joints (as the JAX loss does inside its jit) with VolumeCodec's formulas.
    Random joints_uv (crop pixels) and root-relative depths are drawn once
    (same ranges as c2f_vol.benchmark.random_train_batch).
  * Step: uint8 (B, S, S, 3) images normalised with the ImageNet mean/std,
    forward, loss, backward, global gradient norm + finiteness guard (the JAX
    step skips the update on a non-finite loss or gradient), optional
    global-norm clipping, optimiser update (adam / adamw / rmsprop with the
    config's hyper-parameters, optional coupled weight decay as in
    c2f_vol.optim). The learning rate is held at optim.learning_rate (the
    warm-up / decay schedule costs nothing and is left out).

Checks against c2f_vol, before anything is timed: the Flax model is built from
the same config (abstractly) in a child process, and every torch parameter
must match one of its parameters (names, shapes, total count), else the script
exits with an error. `--check_forward` also copies the Flax model's initial
weights into the torch network and compares, in float32 on the CPU, the logits
of every stack on a fixed batch in inference mode and the first stack's in
training mode (see `check_forward` for why not all), and the torch loss of the
Flax logits with the JAX loss (the loss functions alone).

Known differences (none changes the work done per step):
  * torch updates BN running_var with the unbiased batch variance, Flax with
    the biased one (the normalisation itself uses the biased one in both);
  * optim.eps_in_sqrt=True (optax puts eps inside the square root) cannot be
    expressed with torch.optim.RMSprop, which adds it after the root (as the
    paper's config does, eps_in_sqrt=False);
  * the JAX step keeps the old BN statistics too on a non-finite step; here
    only the optimiser update is skipped, and the finiteness test waits for
    the backward pass (a host sync per step; the JAX step tests on device);
  * --dtype=bfloat16: the head conv runs in bfloat16 and is cast to float32
    (Flax accumulates it straight into float32 via preferred_element_type);
    BN under autocast follows torch's own autocast rules.

CUDA: --tf32 (default on) lets float32 matmuls and convolutions use TF32, as
XLA's default precision does on the GPU; --cudnn_benchmark (default on) picks
cuDNN's fastest algorithms during the warm-up steps.

Threads: torch's CPU ops use OpenMP (libgomp). With --threads equal to the
core count and other processes busy on the same cores, steps can stall for
seconds (threads spin/wait at every op's barrier for a descheduled peer);
`other_processes_cpu_cores` in the output reports how busy the rest of the
machine was during the timed steps, and --threads=1 gives a steadier figure
on a shared machine.

The architecture is read from a c2f_vol config (`c2f_vol.config.load`). That
import pulls in JAX, so it runs in a short child process (with this script's
torch directory removed from PYTHONPATH and JAX held to the CPU).
`--c2f_cache=FILE` keeps what the child returned, so further runs of the same
config and overrides skip it (the parameter check still runs against it).

Usage (from the repository root; torch installed outside the project venv,
e.g. `pip install --target /tmp/torchpkgs torch`):

    PYTHONPATH=/tmp/torchpkgs .venv/bin/python benchmarks/torch_reference.py \\
        --config=configs/synthetic_cpu.py --batch_size=16 --steps=20 --warmup=3 \\
        [--no_channels_last] [--dtype=bfloat16] [--device=cuda] [--threads=N] \\
        [--override=model.features=128] [--check_forward] [--output=result.json]

One JSON object with the timings is printed to stdout (progress goes to stderr).
`--serve` instead reads one JSON request per line on stdin (flag names as keys,
e.g. {"config": ..., "batch_size": 64, "dtype": "bfloat16"}) and answers each
with one line `C2F_TORCH_RESULT {json}` (benchmarks/gpu_bench.py drives it).
`--helpfull` lists the flags.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when this file is loaded by path
from bench_overrides import parse_overrides  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "configs/synthetic_cpu.py",
                    "path/to/config.py[:variant], relative to the repository root or absolute.")
flags.DEFINE_multi_string("override", [], "KEY=VALUE config override passed to c2f_vol.config.load "
                          "(repeatable), e.g. --override=model.features=128.")
flags.DEFINE_integer("batch_size", None, "Batch size (default: the config's batch_size).", lower_bound=1)
flags.DEFINE_integer("steps", 20, "Timed steps.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps first.", lower_bound=0)
flags.DEFINE_integer("threads", None, "torch.set_num_threads (default: all usable cores).", lower_bound=0)
flags.DEFINE_enum("device", "cpu", ["cpu", "cuda", "auto"], "Device to run on (auto: cuda where torch sees one).")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"],
                  "Compute dtype (default: the config's model.dtype). bfloat16: torch.autocast compute, "
                  "float32 master weights and float32 loss.")
flags.DEFINE_bool("no_channels_last", False, "Use NCHW (contiguous) instead of channels_last.")
flags.DEFINE_enum("optim_impl", "default", ["default", "foreach", "fused"],
                  "torch optimiser implementation (default: torch's own choice).")
flags.DEFINE_bool("tf32", True, "CUDA: let float32 matmuls and convolutions use TF32 (XLA's default on GPUs).")
flags.DEFINE_bool("cudnn_benchmark", True, "CUDA: torch.backends.cudnn.benchmark (autotune during warm-up).")
flags.DEFINE_integer("seed", 0, "Seed of the weights and of the random batch.")
flags.DEFINE_string("c2f_cache", None, "JSON file caching the config and parameter table read from c2f_vol.")
flags.DEFINE_bool("check_forward", False, "Also compare float32 CPU logits and losses with the Flax model's "
                  "on a batch of 2 with the same weights (slow for the 53.6 M model: about a minute).")
flags.DEFINE_string("output", None, "Also write the JSON result here.")
flags.DEFINE_bool("serve", False, "Answer JSON requests read from stdin, one per line (see the docstring).")

# Same constants as c2f_vol.model (kept literal so this process never imports JAX).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-5  # flax.nnx.BatchNorm default epsilon (also torch's default)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "C2F_TORCH_RESULT "


# --------------------------------------------------------------------------
# Config (and the reference parameter table) from c2f_vol, in a child process.
# --------------------------------------------------------------------------

_CHILD_CODE = r"""
import json, sys
import jax
import numpy as np
from flax import nnx
from c2f_vol import config as cfg, losses, model
from c2f_vol.codec import VolumeCodec

spec, overrides, forward_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
c = cfg.load(spec, overrides)
codec = VolumeCodec.for_experiment(c)
abstract = nnx.eval_shape(lambda: model.create_model(c.model, codec, c.seed))
params = {}
for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(abstract, nnx.Param))[0]:
    params[".".join(str(p.key) for p in path if hasattr(p, "key"))] = list(leaf.shape)
base = cfg.base_config()
out = dict(
    # Every block complete: the fields a config leaves out take the base config's values.
    model={**base.model.to_dict(), **dict(c.model)},
    codec=dict(input_size=codec.input_size, heatmap_size=list(codec.heatmap_size),
               depth_bins=list(codec.depth_bins), depth_range_mm=codec.depth_range_mm, sigma=codec.sigma,
               sigma_z_min=codec.sigma_z_min, target=codec.target, paper_window=codec.paper_window),
    optim={**json.loads(base.optim.to_json_best_effort()), **json.loads(c.optim.to_json_best_effort())},
    loss={**json.loads(base.loss.to_json_best_effort()), **json.loads(c.loss.to_json_best_effort())},
    batch_size=int(c.batch_size),
    seed=int(c.seed),
    param_count=int(sum(int(np.prod(s)) for s in params.values())),
    params=params,
)
if forward_dir:
    # Float32, training mode, the config's initial weights, a fixed batch: the torch side loads these
    # weights and compares its logits and loss with these.
    c.model.dtype = "float32"
    m = model.create_model(c.model, codec, c.seed)
    weights = {}  # the initial ones, before a training-mode call updates the batch statistics
    for kind in (nnx.Param, nnx.BatchStat):
        for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(m, kind))[0]:
            weights[".".join(str(p.key) for p in path if hasattr(p, "key"))] = np.array(leaf)
    np.savez(forward_dir + "/weights.npz", **weights)
    data = np.load(forward_dir + "/batch.npz")
    m.eval()
    np.savez(forward_dir + "/logits_eval.npz", *[np.asarray(x) for x in m(data["images"])])
    m.train()
    logits = m(data["images"])
    np.savez(forward_dir + "/logits_train.npz", *[np.asarray(x) for x in logits])
    batch = {k: data[k] for k in ("joints_uv", "depth_rel_mm", "mask")}
    loss, _ = losses.compute_loss(logits, batch, codec, c.loss)
    out["forward_loss"] = float(loss)
print("C2F_CONFIG_JSON " + json.dumps(out))
"""


def _child_env() -> dict:
    env = dict(os.environ)
    torch_dir = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))
    # Keep torch's private site dir (which also carries newer typing_extensions,
    # setuptools, ...) out of the JAX process.
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and os.path.abspath(p) != torch_dir]
    env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *path])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["JAX_PLATFORMS"] = "cpu"  # only shapes (and the CPU forward check) are needed; never grab an accelerator
    return env


def load_c2f_config(spec: str, overrides: dict, cache: str | None = None, forward_dir: str = "") -> dict:
    """`c2f_vol.config.load(spec, overrides)` and the Flax model's parameter table, from a child process.

    With `cache`, a previous answer for the same spec and overrides is read from that file (and a new one
    written there). With `forward_dir` (which holds batch.npz), the child also writes the model's initial
    weights and float32 training-mode logits there (never cached).
    """
    key = {"config": spec, "overrides": overrides}
    if cache and not forward_dir and os.path.isfile(cache):
        with open(cache) as fh:
            stored = json.load(fh)
        if stored.get("key") == key:
            return stored["value"]
    proc = subprocess.run([sys.executable, "-c", _CHILD_CODE, spec, json.dumps(overrides), forward_dir],
                          cwd=REPO_ROOT, env=_child_env(), capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("C2F_CONFIG_JSON "):
            value = json.loads(line[len("C2F_CONFIG_JSON "):])
            if cache and not forward_dir:
                tmp = f"{cache}.{os.getpid()}.tmp"
                with open(tmp, "w") as fh:
                    json.dump({"key": key, "value": value}, fh)
                os.replace(tmp, cache)
            return value
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    raise SystemExit(f"loading config {spec!r} through c2f_vol failed (exit code {proc.returncode})")


# --------------------------------------------------------------------------
# The network.
# --------------------------------------------------------------------------

def _flax_init_(module: nn.Module) -> None:
    """Flax defaults: lecun_normal kernels (truncated normal), zero biases; BN scale 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            # variance_scaling(1, 'fan_in', 'truncated_normal'): std corrected for the truncation at 2 sigma.
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
            nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _bn(channels: int, flax_momentum: float) -> nn.BatchNorm2d:
    # Flax: ra = m * ra + (1 - m) * batch; torch: ra = (1 - m') * ra + m' * batch.
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=1.0 - flax_momentum)


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> nn.Conv2d:
    # Stride 1, odd kernel: XLA 'SAME' padding is symmetric, k // 2 each side.
    return nn.Conv2d(cin, cout, k, stride=1, padding=k // 2, bias=bias)


def _upsample2(x):
    """Nearest-neighbour x2 (the JAX broadcast + reshape)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


class Bottleneck(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1 (bias); 1x1
    projection (bias) on the skip when cin != cout. conv_bias: the first two convs carry a bias
    too (the released arch) or not (the uniform one, where a BN follows each)."""

    def __init__(self, cin: int, cout: int, momentum: float, conv_bias: bool = False):
        super().__init__()
        mid = max(cout // 2, 1)
        self.bn1 = _bn(cin, momentum)
        self.conv1 = _conv(cin, mid, 1, bias=conv_bias)
        self.bn2 = _bn(mid, momentum)
        self.conv2 = _conv(mid, mid, 3, bias=conv_bias)
        self.bn3 = _bn(mid, momentum)
        self.conv3 = _conv(mid, cout, 1)
        self.skip = _conv(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(h)))
        h = self.conv3(F.relu(self.bn3(h)))
        return h + (x if self.skip is None else self.skip(x))


def _blocks(n: int, cin: int, cout: int, momentum: float, conv_bias: bool = False) -> nn.Sequential:
    # nn.Sequential names its children 0, 1, ... like the Flax nnx.List.
    return nn.Sequential(*[Bottleneck(cin if k == 0 else cout, cout, momentum, conv_bias) for k in range(n)])


class Hourglass(nn.Module):
    """skip branch at full resolution + (max-pool, down blocks, inner hourglass or
    blocks, up blocks, nearest x2 upsample); the two are added."""

    def __init__(self, depth: int, features: int, num_residual: int, momentum: float):
        super().__init__()
        self.skip = _blocks(num_residual, features, features, momentum)
        self.down = _blocks(num_residual, features, features, momentum)
        if depth > 1:
            self.inner = Hourglass(depth - 1, features, num_residual, momentum)
        else:
            self.inner = _blocks(num_residual, features, features, momentum)
        self.up = _blocks(num_residual, features, features, momentum)

    def forward(self, x):
        skip = self.skip(x)
        low = self.down(F.max_pool2d(x, 2, 2))
        low = self.inner(low)
        return skip + _upsample2(self.up(low))


class _Network(nn.Module):
    """What both architectures share: the config's sizes, input normalisation, the head layout."""

    def __init__(self, model_cfg: dict, codec_cfg: dict):
        super().__init__()
        self.num_joints = int(model_cfg["num_joints"])
        self.depth_bins = tuple(int(d) for d in codec_cfg["depth_bins"])
        self.input_size = int(codec_cfg["input_size"])
        self.heatmap_size = tuple(int(v) for v in codec_cfg["heatmap_size"])
        if len(self.depth_bins) != int(model_cfg["num_stacks"]):
            raise ValueError("num_stacks must equal len(codec.depth_bins)")
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor, memory_format) -> torch.Tensor:
        """(B, S, S, 3) uint8 -> (B, 3, S, S) float32 (x / 255 - mean) / std.

        permute() of an NHWC tensor already has channels_last strides; otherwise
        it is made contiguous (NCHW)."""
        x = images.permute(0, 3, 1, 2)
        x = x.contiguous(memory_format=memory_format)
        return (x.float() / 255.0 - self.mean) / self.std

    def volume(self, pred, d: int):
        """head_to_volume: (B, J*d, H, W) -> (B, J, d, H, W), float32 (copies under channels_last)."""
        h_, w_ = self.heatmap_size
        return pred.reshape(pred.shape[0], self.num_joints, d, h_, w_).float()


class StackedHourglass(_Network):
    """arch 'uniform': (B, S, S, 3) uint8 images -> list of float32 (B, J, D_i, H, W) logits, one per stack.

    Module names mirror the Flax model (stem_conv, stem_bn, stem_res1,
    stem_pooled, stem_res2, hourglasses, post, heads, remap_features,
    remap_preds) so parameters can be matched to it one to one.
    """

    def __init__(self, model_cfg: dict, codec_cfg: dict):
        super().__init__(model_cfg, codec_cfg)
        f = int(model_cfg["features"])
        nres = int(model_cfg["num_residual"])
        mom = float(model_cfg["bn_momentum"])
        c1, c2 = f // 4, f // 2
        num_pools = int(round(math.log2(self.input_size // self.heatmap_size[0]))) - 1
        # 7x7 stride-2 stem conv; padding applied in forward() (XLA 'SAME').
        self.stem_conv = nn.Conv2d(3, c1, 7, stride=2, padding=0, bias=False)
        s = self.input_size
        total = max((-(-s // 2) - 1) * 2 + 7 - s, 0)
        self._stem_pad = (total // 2, total - total // 2)  # (low, high): (2, 3) for even S
        self.stem_bn = _bn(c1, mom)
        self.stem_res1 = Bottleneck(c1, c2, mom)
        self.stem_pooled = nn.Sequential(*[Bottleneck(c2, c2, mom) for _ in range(num_pools)])
        self.stem_res2 = Bottleneck(c2, f, mom)

        self.hourglasses = nn.ModuleList()
        self.post = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.remap_features = nn.ModuleList()
        self.remap_preds = nn.ModuleList()
        for i, d in enumerate(self.depth_bins):
            self.hourglasses.append(Hourglass(int(model_cfg["hourglass_depth"]), f, nres, mom))
            self.post.append(nn.Sequential(
                *[Bottleneck(f, f, mom) for _ in range(nres)],
                _conv(f, f, 1, bias=False),
                _bn(f, mom),
                nn.ReLU(),  # no parameters, so it does not disturb the name matching
            ))
            self.heads.append(_conv(f, self.num_joints * d, 1))  # channel c = j * d + bin
            if i + 1 < len(self.depth_bins):
                self.remap_features.append(_conv(f, f, 1))
                self.remap_preds.append(_conv(self.num_joints * d, f, 1))
        _flax_init_(self)

    def forward(self, images: torch.Tensor, memory_format=torch.contiguous_format):
        x = self.normalize(images, memory_format)
        lo, hi = self._stem_pad
        x = F.pad(x, (lo, hi, lo, hi))
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        x = self.stem_res1(x)
        for block in self.stem_pooled:
            x = block(F.max_pool2d(x, 2, 2))
        x = self.stem_res2(x)

        outputs = []
        for i, d in enumerate(self.depth_bins):
            h = self.post[i](self.hourglasses[i](x))
            pred = self.heads[i](h)  # (B, J * d, H, W), compute dtype
            outputs.append(self.volume(pred, d))
            if i + 1 < len(self.depth_bins):
                x = x + self.remap_features[i](h) + self.remap_preds[i](pred)
        return outputs


class Lin(nn.Module):
    """The released code's `lin`: 1x1 conv (with bias), BN, ReLU."""

    def __init__(self, cin: int, cout: int, momentum: float):
        super().__init__()
        self.conv = _conv(cin, cout, 1)
        self.bn = _bn(cout, momentum)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class ReleasedHourglass(nn.Module):
    """The released `hourglass(n, numIn, numOut)`: (B, cin, H, W) -> (B, cout, H, W).

    Upper branch: Res(cin->f), Res(f->f), Res(f->cout). Lower branch: max-pool,
    Res(cin->f), Res(f->f), Res(f->f), the next level (or Res(f->cout) at the
    bottom), Res(cout->cout), nearest x2 upsampling. Output: the sum.
    """

    def __init__(self, depth: int, cin: int, cout: int, features: int, momentum: float):
        super().__init__()
        f, m = features, momentum
        self.upper = nn.Sequential(Bottleneck(cin, f, m, True), Bottleneck(f, f, m, True),
                                   Bottleneck(f, cout, m, True))
        self.lower = nn.Sequential(Bottleneck(cin, f, m, True), Bottleneck(f, f, m, True),
                                   Bottleneck(f, f, m, True))
        if depth > 1:
            self.inner = ReleasedHourglass(depth - 1, f, cout, f, m)
        else:
            self.inner = Bottleneck(f, cout, m, True)
        self.lower_out = Bottleneck(cout, cout, m, True)

    def forward(self, x):
        upper = self.upper(x)
        low = self.lower_out(self.inner(self.lower(F.max_pool2d(x, 2, 2))))
        return upper + _upsample2(low)


class ReleasedStackedHourglass(_Network):
    """arch 'released': c2f_vol.model.ReleasedStackedHourglass, the same names and shapes."""

    def __init__(self, model_cfg: dict, codec_cfg: dict):
        super().__init__(model_cfg, codec_cfg)
        f = int(model_cfg["features"])
        mom = float(model_cfg["bn_momentum"])
        quarter, half, wide = f // 4, f // 2, 2 * f
        if self.input_size != 4 * self.heatmap_size[0]:
            raise ValueError("arch 'released' needs input_size == 4 * heatmap side")
        # Torch7's padding: 3 on every side of the 7x7 stride-2 conv.
        self.stem_conv = nn.Conv2d(3, quarter, 7, stride=2, padding=3, bias=True)
        self.stem_bn = _bn(quarter, mom)
        self.stem_res1 = Bottleneck(quarter, half, mom, True)
        self.stem_pooled = nn.Sequential(Bottleneck(half, half, mom, True), Bottleneck(half, half, mom, True))
        self.stem_res2 = Bottleneck(half, f, mom, True)

        self.hourglasses = nn.ModuleList()
        self.post = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.remap_features = nn.ModuleList()
        self.remap_preds = nn.ModuleList()
        last = len(self.depth_bins) - 1
        for i, d in enumerate(self.depth_bins):
            cin = f if i == 0 else (f + half if i == 1 else wide)
            self.hourglasses.append(ReleasedHourglass(int(model_cfg["hourglass_depth"]), cin, wide, f, mom))
            feat = wide if i == last else f
            self.post.append(nn.Sequential(Lin(wide, wide, mom), Lin(wide, feat, mom)))
            self.heads.append(_conv(feat, self.num_joints * d, 1))  # channel c = j * d + bin
            if i < last:
                width = f + half if i == 0 else wide
                self.remap_features.append(_conv(width, width, 1))
                self.remap_preds.append(_conv(self.num_joints * d, width, 1))
        _flax_init_(self)

    def forward(self, images: torch.Tensor, memory_format=torch.contiguous_format):
        x = self.normalize(images, memory_format)
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        pooled = F.max_pool2d(self.stem_res1(x), 2, 2)  # (B, f/2, H, W)
        x = self.stem_res2(self.stem_pooled(pooled))

        outputs = []
        previous = pooled  # what stack 1's head features are concatenated with
        for i, d in enumerate(self.depth_bins):
            h = self.post[i](self.hourglasses[i](x))
            pred = self.heads[i](h)
            outputs.append(self.volume(pred, d))
            if i + 1 < len(self.depth_bins):
                x = self.remap_features[i](torch.cat([h, previous], dim=1)) + self.remap_preds[i](pred)
                previous = h
        return outputs


ARCHITECTURES = {"uniform": StackedHourglass, "released": ReleasedStackedHourglass}


def build_network(model_cfg: dict, codec_cfg: dict) -> nn.Module:
    arch = model_cfg.get("arch", "uniform")
    if arch not in ARCHITECTURES:
        raise SystemExit(f"model.arch {arch!r} is not reproduced; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](model_cfg, codec_cfg)


def _flax_name(net: nn.Module, name: str) -> tuple[str, callable]:
    """A torch parameter or buffer name -> (the Flax path, torch tensor -> the Flax array's layout)."""
    *mods, leaf = name.split(".")
    owner = net.get_submodule(".".join(mods))
    if isinstance(owner, nn.BatchNorm2d):
        fname = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}[leaf]
        return ".".join([*mods, fname]), lambda t: t
    if isinstance(owner, nn.Conv2d):
        if leaf == "weight":  # torch (O, I, kh, kw) <-> flax (kh, kw, I, O)
            return ".".join([*mods, "kernel"]), lambda t: t.permute(2, 3, 1, 0)
        return ".".join([*mods, "bias"]), lambda t: t
    raise RuntimeError(f"unexpected parameter {name}")


def check_against_flax(net: nn.Module, flax_params: dict) -> int:
    """Match every torch parameter to the Flax one of the same path; return the total count."""
    mapped = {}
    for name, p in net.named_parameters():
        fname, layout = _flax_name(net, name)
        mapped[fname] = list(layout(p.detach()).shape)
    missing = sorted(set(flax_params) - set(mapped))
    extra = sorted(set(mapped) - set(flax_params))
    wrong = sorted(k for k in set(mapped) & set(flax_params) if list(mapped[k]) != list(flax_params[k]))
    if missing or extra or wrong:
        raise SystemExit(f"torch model does not match c2f_vol's: missing {missing[:10]}, extra {extra[:10]}, "
                         f"shape mismatch {[(k, mapped[k], flax_params[k]) for k in wrong[:10]]}")
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def load_flax_weights(net: nn.Module, weights: dict) -> None:
    """Copy Flax arrays (path -> numpy, parameters and batch statistics) into the torch network."""
    with torch.no_grad():
        for name, t in [*net.named_parameters(), *net.named_buffers()]:
            if name.endswith("num_batches_tracked") or name in ("mean", "std"):
                continue
            fname, layout = _flax_name(net, name)
            layout(t).copy_(torch.from_numpy(np.array(weights[fname], dtype=np.float32)))


# --------------------------------------------------------------------------
# Codec + losses (c2f_vol.codec.VolumeCodec.encode / gaussian_targets / soft_argmax, c2f_vol.losses).
# --------------------------------------------------------------------------

def encode(joints_uv, depth_mm, codec_cfg: dict):
    """VolumeCodec.encode: (B, J, 2) crop pixels, (B, J) mm -> per level (B, J, 3) or (B, J, 2)."""
    s = float(codec_cfg["input_size"])
    h, w = codec_cfg["heatmap_size"]
    r = float(codec_cfg["depth_range_mm"])
    xy = torch.stack([(joints_uv[..., 0] + 0.5) * (w / s) - 0.5,
                      (joints_uv[..., 1] + 0.5) * (h / s) - 0.5], dim=-1)
    out = []
    for d in codec_cfg["depth_bins"]:
        if d == 1:
            out.append(xy)
        else:
            z = (depth_mm + r) * (d / (2.0 * r)) - 0.5
            out.append(torch.cat([xy, z[..., None]], dim=-1))
    return out


def gaussian_targets(coords, level: int, codec_cfg: dict):
    """VolumeCodec.gaussian_targets: (B, J, 3|2) voxel coordinates -> (B, J, D, H, W) float32, peak 1."""
    h, w = codec_cfg["heatmap_size"]
    bins = codec_cfg["depth_bins"]
    d = bins[level]
    dev = coords.device

    def profile(c, n, s, half=None):
        grid = torch.arange(n, dtype=torch.float32, device=dev)
        if half is None:
            return torch.exp(-0.5 * ((grid - c[..., None]) / s) ** 2)
        off = grid - torch.floor(c[..., None] + 0.5)  # distance to the joint's voxel centre
        return torch.where(off.abs() <= half, torch.exp(-0.5 * (off / s) ** 2), torch.zeros((), device=dev))

    if codec_cfg["target"] == "paper":
        win_xy = int(codec_cfg["paper_window"])
        win_z = 2 * int(((win_xy - 1) * d / w + 1) // 2) + 1  # VolumeCodec.paper_window_z
        xy_args, z_args = (0.25 * win_xy, (win_xy - 1) // 2), (0.25 * win_z, (win_z - 1) // 2)
    else:
        sigma = float(codec_cfg["sigma"])
        xy_args, z_args = (sigma,), (max(sigma * d / max(bins), float(codec_cfg["sigma_z_min"])),)
    gx = profile(coords[..., 0], w, *xy_args)
    gy = profile(coords[..., 1], h, *xy_args)
    if d == 1:
        gz = torch.ones(*coords.shape[:-1], 1, dtype=torch.float32, device=dev)
    else:
        gz = profile(coords[..., 2], d, *z_args)
    return gz[..., :, None, None] * gy[..., None, :, None] * gx[..., None, None, :]


def soft_argmax(logits):
    """(B, J, D, H, W) -> (B, J, 3) (x, y, z), or (B, J, 2) where D = 1; one softmax per joint volume."""
    *lead, d, h, w = logits.shape
    p = torch.softmax(logits.reshape(*lead, d * h * w).float(), dim=-1).reshape(*lead, d, h, w)
    dev = logits.device
    x = torch.einsum("bjdhw,w->bj", p, torch.arange(w, dtype=torch.float32, device=dev))
    y = torch.einsum("bjdhw,h->bj", p, torch.arange(h, dtype=torch.float32, device=dev))
    if d == 1:
        return torch.stack([x, y], dim=-1)
    z = torch.einsum("bjdhw,d->bj", p, torch.arange(d, dtype=torch.float32, device=dev))
    return torch.stack([x, y, z], dim=-1)


def heatmap_mse(logits, coords, level: int, codec_cfg: dict):
    """losses.heatmap_mse: (B,) mean over J, D, H, W of the squared error to the Gaussian targets."""
    return ((logits.float() - gaussian_targets(coords, level, codec_cfg)) ** 2).mean(dim=(1, 2, 3, 4))


def js_divergence(logits, coords, level: int, codec_cfg: dict):
    """losses.js_divergence: (B,) mean over joints of JS(softmax(logits) || normalised target), nats."""
    b, j = logits.shape[:2]
    log_p = torch.log_softmax(logits.float().reshape(b, j, -1), dim=-1)
    p = log_p.exp()
    q = gaussian_targets(coords, level, codec_cfg).reshape(b, j, -1)
    q = q / q.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    log_m = torch.log(0.5 * (p + q) + 1e-30)
    kl_pm = (p * (log_p - log_m)).sum(dim=-1)
    kl_qm = (torch.xlogy(q, q) - q * log_m).sum(dim=-1)
    return (0.5 * (kl_pm + kl_qm)).mean(dim=-1)


def integral_l1(logits, coords, level: int, codec_cfg: dict):
    """losses.integral_l1: (B,) per joint the sum over axes of |error| / axis size, averaged over J."""
    h, w = codec_cfg["heatmap_size"]
    d = codec_cfg["depth_bins"][level]
    sizes = torch.tensor((w, h) if d == 1 else (w, h, d), dtype=torch.float32, device=logits.device)
    err = (soft_argmax(logits) - coords[..., : sizes.shape[0]]).abs() / sizes
    return err.sum(-1).mean(-1)


LOSS_KINDS = ("heatmap", "integral", "both")


def compute_loss(logits, joints_uv, depth_mm, mask, codec_cfg: dict, loss_cfg: dict):
    """c2f_vol.losses.compute_loss (float32): the weighted sum over terms and stacks of masked means."""
    kind, mix = loss_cfg["kind"], loss_cfg.get("mix_heatmap", "js")
    if kind not in LOSS_KINDS or mix not in ("js", "mse"):
        raise SystemExit(f"loss kind {kind!r} / mix_heatmap {mix!r} not reproduced")
    levels = len(codec_cfg["depth_bins"])
    stack_weights = [float(v) for v in (loss_cfg.get("stack_weights") or [1.0] * levels)]
    hm_weight, int_weight = float(loss_cfg["heatmap_weight"]), float(loss_cfg["integral_weight"])
    terms = [(heatmap_mse, hm_weight)] if kind == "heatmap" else []
    if kind in ("integral", "both"):
        terms.append((integral_l1, int_weight))
    if kind == "both":
        terms.append((js_divergence if mix == "js" else heatmap_mse, hm_weight))
    coords = encode(joints_uv, depth_mm, codec_cfg)
    denom = mask.sum().clamp_min(1.0)
    loss = torch.zeros((), dtype=torch.float32, device=mask.device)
    for fn, weight in terms:
        total = torch.zeros((), dtype=torch.float32, device=mask.device)
        for i, (lg, c) in enumerate(zip(logits, coords)):
            total = total + stack_weights[i] * (fn(lg, c, i, codec_cfg) * mask).sum() / denom
        loss = loss + weight * total
    return loss


# --------------------------------------------------------------------------
# Optimiser (c2f_vol.optim.make_optimizer, constant learning rate).
# --------------------------------------------------------------------------

def make_optimizer(params, optim_cfg: dict, impl: str):
    lr = float(optim_cfg["learning_rate"])
    wd = float(optim_cfg.get("weight_decay", 0.0))
    eps = float(optim_cfg.get("eps", 1e-8))
    betas = (float(optim_cfg.get("b1", 0.9)), float(optim_cfg.get("b2", 0.999)))
    kw = {} if impl == "default" else {impl: True}
    name = optim_cfg.get("name", "rmsprop")
    if name == "rmsprop":
        # Torch's RMSprop adds eps after the square root: c2f_vol's eps_in_sqrt=False (the paper's Torch7
        # RMSprop); with eps_in_sqrt=True optax puts it inside (the same cost).
        # optax.add_decayed_weights before the core == torch's coupled weight_decay.
        return torch.optim.RMSprop(params, lr=lr, alpha=float(optim_cfg.get("rmsprop_decay", 0.99)),
                                   eps=eps, weight_decay=wd, **kw)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd, **kw)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=wd, **kw)
    raise SystemExit(f"unknown optim.name {name!r}")


# --------------------------------------------------------------------------
# Benchmark.
# --------------------------------------------------------------------------

def _busy_cpu_seconds():
    """Machine-wide busy CPU seconds from /proc/stat (None where unavailable)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds():
    t = os.times()
    return t.user + t.system


def random_batch(batch: int, codec_cfg: dict, num_joints: int, seed: int) -> dict:
    """A host batch with the value ranges of c2f_vol.benchmark.random_train_batch: uint8 images, joints
    uniform in [0.1 S, 0.9 S] crop pixels, root-relative depths uniform in +-0.8 R mm (root joint 0),
    every sample real (mask 1)."""
    g = torch.Generator().manual_seed(seed)
    s, r = int(codec_cfg["input_size"]), float(codec_cfg["depth_range_mm"])
    depth = 0.8 * r * (2 * torch.rand(batch, num_joints, generator=g) - 1)
    depth[:, 0] = 0.0
    return {"images": torch.randint(0, 256, (batch, s, s, 3), dtype=torch.uint8, generator=g),
            "joints_uv": s * (0.1 + 0.8 * torch.rand(batch, num_joints, 2, generator=g)),
            "depth_rel_mm": depth, "mask": torch.ones(batch)}


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def check_forward(spec: str, overrides: dict, seed: int) -> dict:
    """Float32 CPU logits and losses of torch vs Flax with the same weights; exits on a mismatch.

    Inference mode (BatchNorm with its running statistics) checks the structure: every stack's logits
    must agree to 1e-3. Training mode (batch statistics) is compared at the first stack only: at
    initialisation, with BatchNorm over a batch of 2, these networks amplify float32 rounding from stack
    to stack (for the paper model torch's own float32 and float64 forward passes differ by ~10% at the last
    stack), so later stacks are reported, not checked. The loss functions are compared exactly: torch's
    loss of the Flax logits against c2f_vol's.
    """
    with tempfile.TemporaryDirectory(prefix="c2f_torch_check_") as tmp:
        probe = load_c2f_config(spec, overrides)
        batch = random_batch(2, probe["codec"], int(probe["model"]["num_joints"]), seed)
        np.savez(os.path.join(tmp, "batch.npz"), **{k: v.numpy() for k, v in batch.items()})
        c2f = load_c2f_config(spec, overrides, forward_dir=tmp)
        weights = dict(np.load(os.path.join(tmp, "weights.npz")))
        flax = {mode: [v for _, v in sorted(np.load(os.path.join(tmp, f"logits_{mode}.npz")).items(),
                                            key=lambda kv: int(kv[0].split("_")[1]))] for mode in ("train", "eval")}
    net = build_network(c2f["model"], c2f["codec"])
    check_against_flax(net, c2f["params"])
    load_flax_weights(net, weights)
    codec_cfg, loss_cfg = c2f["codec"], c2f["loss"]
    args = (batch["joints_uv"], batch["depth_rel_mm"], batch["mask"], codec_cfg, loss_cfg)
    with torch.no_grad():
        ours = {"eval": net.eval()(batch["images"]), "train": net.train()(batch["images"])}
        loss = float(compute_loss(ours["train"], *args))
        loss_of_flax_logits = float(compute_loss([torch.from_numpy(x) for x in flax["train"]], *args))
    out = {f"{mode}_rel_err": [_rel(t.numpy(), f) for t, f in zip(ours[mode], flax[mode])] for mode in ours}
    out.update(loss_torch=loss, loss_c2f_vol=c2f["forward_loss"], loss_of_flax_logits=loss_of_flax_logits,
               loss_fn_rel_err=abs(loss_of_flax_logits - c2f["forward_loss"]) / max(abs(c2f["forward_loss"]), 1e-30))
    print("forward check, relative error of the logits per stack: inference mode "
          f"{['%.1e' % e for e in out['eval_rel_err']]}, training mode {['%.1e' % e for e in out['train_rel_err']]}; "
          f"losses: torch {loss:.6g}, c2f_vol {c2f['forward_loss']:.6g}, torch's of the Flax logits "
          f"{loss_of_flax_logits:.6g}", file=sys.stderr)
    if max(out["eval_rel_err"]) > 1e-3 or out["train_rel_err"][0] > 1e-3 or out["loss_fn_rel_err"] > 1e-5:
        raise SystemExit(f"torch forward does not match c2f_vol's: {out}")
    return out


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device=cuda but torch.cuda.is_available() is False")
    return name


def run_benchmark(args) -> dict:
    """Build, check and time the torch step; print the JSON result and return it.

    `args` carries the flag values as attributes (FLAGS, or any namespace with the same names).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads or cores)
    torch.manual_seed(args.seed)
    device = torch.device(_device(args.device))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)

    overrides = parse_overrides(args.override)
    forward = check_forward(args.config, overrides, args.seed) if args.check_forward else None
    c2f = load_c2f_config(args.config, overrides, args.c2f_cache)
    model_cfg, codec_cfg, optim_cfg, loss_cfg = c2f["model"], c2f["codec"], c2f["optim"], c2f["loss"]
    batch = args.batch_size or c2f["batch_size"]
    dtype = args.dtype or model_cfg["dtype"]

    net = build_network(model_cfg, codec_cfg)
    n_torch = check_against_flax(net, c2f["params"])
    if n_torch != c2f["param_count"]:
        raise SystemExit(f"parameter count mismatch: torch {n_torch} vs c2f_vol {c2f['param_count']}")
    print(f"params: torch {n_torch}, c2f_vol {c2f['param_count']} (all {len(c2f['params'])} tensors match)",
          file=sys.stderr)

    memory_format = torch.contiguous_format if args.no_channels_last else torch.channels_last
    net = net.to(device=device, memory_format=memory_format).train()
    opt = make_optimizer(net.parameters(), optim_cfg, args.optim_impl)
    clip = float(optim_cfg.get("grad_clip_norm", 0.0))

    # One fixed random batch, resident on the device.
    data = {k: v.to(device) for k, v in random_batch(batch, codec_cfg, int(model_cfg["num_joints"]),
                                                        args.seed).items()}
    use_bf16 = dtype == "bfloat16"
    params = list(net.parameters())

    def train_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = net(data["images"], memory_format)
        with torch.autocast(device_type=device.type, enabled=False):
            loss = compute_loss(logits, data["joints_uv"], data["depth_rel_mm"], data["mask"], codec_cfg, loss_cfg)
        loss.backward()
        if clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        # Like the JAX step: no update (and no BN-stat change kept, which is
        # not reproduced here) when the loss or gradients are not finite.
        ok = bool(torch.isfinite(loss) & torch.isfinite(grad_norm))
        if ok:
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach()), ok

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    load_before = os.getloadavg()
    losses = []
    for k in range(args.warmup):
        t0 = time.perf_counter()
        loss, _ = train_step()
        print(f"warmup {k + 1}/{args.warmup}: {time.perf_counter() - t0:.3f} s  loss {loss:.5f}", file=sys.stderr)
    # Other processes' CPU use over the timed loop: machine-wide busy time
    # minus this process's own (a rough measure of contention).
    busy0, own0, wall0 = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
    times = []
    for k in range(args.steps):
        t0 = time.perf_counter()
        loss, ok = train_step()
        times.append(time.perf_counter() - t0)
        losses.append(loss)
        print(f"step {k + 1}/{args.steps}: {times[-1]:.3f} s  loss {loss:.5f}{'' if ok else '  (non-finite)'}",
              file=sys.stderr)
    load_after = os.getloadavg()
    busy1, own1, wall1 = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
    other_cores = None
    if busy0 is not None and busy1 is not None and wall1 > wall0:
        other_cores = round(max(busy1 - busy0 - (own1 - own0), 0.0) / (wall1 - wall0), 2)

    med = statistics.median(times)
    result = dict(
        implementation="torch_eager",
        config=args.config,
        overrides=list(args.override),
        arch=model_cfg.get("arch", "uniform"),
        loss=loss_cfg["kind"],
        device="cpu" if device.type == "cpu" else f"cuda:{torch.cuda.get_device_name()}",
        dtype=dtype,
        channels_last=not args.no_channels_last,
        batch_size=batch,
        input_size=int(codec_cfg["input_size"]),
        heatmap_size=list(codec_cfg["heatmap_size"]),
        depth_bins=list(codec_cfg["depth_bins"]),
        optimizer=optim_cfg.get("name"),
        optim_impl=args.optim_impl,
        tf32=bool(args.tf32) if device.type == "cuda" else None,
        cudnn_benchmark=bool(args.cudnn_benchmark) if device.type == "cuda" else None,
        steps=args.steps,
        warmup=args.warmup,
        threads=torch.get_num_threads(),
        cpu_cores=cores,
        torch_version=torch.__version__,
        param_count=n_torch,
        param_count_c2f_vol=c2f["param_count"],
        step_time_s=dict(median=med, min=min(times), max=max(times)),
        images_per_sec=batch / med,
        loss_first=losses[0] if losses else None,
        loss_last=losses[-1] if losses else None,
        # torch's caching allocator: the most bytes its tensors held at once, and what it reserved from CUDA.
        peak_allocated_bytes=int(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None,
        peak_reserved_bytes=int(torch.cuda.max_memory_reserved()) if device.type == "cuda" else None,
        loadavg_before=[round(v, 2) for v in load_before],
        loadavg_after=[round(v, 2) for v in load_after],
        other_processes_cpu_cores=other_cores,  # average cores used by others during the timed steps
        forward_check=forward,
    )
    return result  # its tensors go with this frame: serve() then empties torch's cache


def _emit(result: dict, output: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        with open(output, "w") as fh:
            fh.write(text + "\n")


FLAG_NAMES = ("config", "override", "batch_size", "steps", "warmup", "threads", "device", "dtype",
              "no_channels_last", "optim_impl", "tf32", "cudnn_benchmark", "seed", "c2f_cache", "check_forward")


def serve(defaults: dict, stdin=None, stdout=None) -> None:
    """One JSON request per input line (flag names as keys, the flags' values by default) -> one
    `C2F_TORCH_RESULT {json}` line each: the result, or {"error": ...}. An empty line or EOF ends it.
    {"prepare": [{"config": ..., "override": [...], "c2f_cache": ...}, ...]} only loads those configs (and
    initialises the device) ahead of the requests."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    for line in stdin:
        if not line.strip():
            break
        try:
            request = json.loads(line)
            if "prepare" in request:
                for item in request["prepare"]:
                    load_c2f_config(item["config"], parse_overrides(item.get("override")), item.get("c2f_cache"))
                device = _device(request.get("device", defaults["device"]))
                torch.zeros(1, device=device)
                result = {"prepared": True, "device": device}
            else:
                unknown = sorted(set(request) - set(FLAG_NAMES))
                if unknown:
                    raise SystemExit(f"unknown request keys {unknown}")
                result = run_benchmark(argparse.Namespace(**{**defaults, **request}))
        except (Exception, SystemExit) as e:  # one failed request does not end the server
            result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        # Nothing of this request stays on the device for the next one, or for the JAX rows run meanwhile.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
        stdout.flush()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.serve:
        serve({name: FLAGS[name].value for name in FLAG_NAMES})
        return
    _emit(run_benchmark(FLAGS), FLAGS.output)  # not returned: app.run would pass the dict to sys.exit


if __name__ == "__main__":
    app.run(main)
