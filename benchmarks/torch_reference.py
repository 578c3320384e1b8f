"""PyTorch (eager) reference of the c2f_vol network and training step -- BENCHMARK ONLY.

This file is not part of the c2f_vol package and torch is not a project
dependency. It exists to compare training-step throughput (images/s) of the
JAX implementation against a plain PyTorch eager implementation of exactly the
same network, loss and optimiser on the same machine.

What is reproduced (see c2f_vol/model.py, losses.py, codec.py, optim.py):
  * StackedHourglass: stem (7x7/2 conv without bias, BN, ReLU, pre-activation
    bottlenecks and max-pools down to the heatmap size), one hourglass per
    stack, post block (bottlenecks, 1x1 conv without bias, BN, ReLU), a 1x1
    head with J * D_i channels (channel c = j * D_i + d), and the intermediate
    supervision remaps (features and predictions mapped back with 1x1 convs
    with bias and added to the next stack's input). Convs that feed a BN carry
    no bias, every other conv does. BN momentum is converted from the Flax
    convention (torch momentum = 1 - flax momentum) and eps is Flax's 1e-5.
    Padding is XLA's 'SAME' (asymmetric for the 7x7 stride-2 stem conv on an
    even input, so the input is padded explicitly there).
    Weights use Flax's default initialisers (LeCun truncated normal kernels,
    zero biases, BN scale 1 / bias 0).
  * Loss: the 'integral' loss -- per stack one softmax over each joint's whole
    D*H*W volume, soft-argmax, L1 to the voxel coordinates divided by the axis
    size (W, H, D_i; x, y only where D_i = 1), summed over axes, mean over
    joints, masked mean over samples, weighted sum over stacks.
  * Targets: random joints_uv (crop pixels) and root-relative depths are
    drawn once (same ranges as c2f_vol.benchmark.random_train_batch) and
    turned into per-level voxel coordinates inside every step with the same
    formulas as VolumeCodec.encode (as the JAX loss does inside its jit).
  * Step: uint8 (B, S, S, 3) images normalised with the ImageNet mean/std,
    forward, loss, backward, global gradient norm + finiteness guard (the JAX
    step skips the update on a non-finite loss or gradient), optional
    global-norm clipping, optimiser update (adam / adamw / rmsprop with the
    config's hyper-parameters, optional coupled weight decay as in
    c2f_vol.optim). The learning rate is held at optim.learning_rate (the
    warm-up / decay schedule costs nothing and is left out).

Known differences (none changes the work done per step):
  * torch updates BN running_var with the unbiased batch variance, Flax with
    the biased one (the normalisation itself uses the biased one in both);
  * optax.rmsprop adds eps inside the square root, torch.optim.RMSprop outside;
  * the JAX step keeps the old BN statistics too on a non-finite step; here
    only the optimiser update is skipped;
  * --dtype=bfloat16: the head conv runs in bfloat16 and is cast to float32
    (Flax accumulates it straight into float32 via preferred_element_type);
    BN under CPU autocast follows torch's own autocast rules.

Threads: torch's CPU ops use OpenMP (libgomp). With --threads equal to the
core count and other processes busy on the same cores, steps can stall for
seconds (threads spin/wait at every op's barrier for a descheduled peer);
`other_processes_cpu_cores` in the output reports how busy the rest of the
machine was during the timed steps, and --threads=1 gives a steadier figure
on a shared machine.

The architecture is read from a c2f_vol config (`c2f_vol.config.load`). That
import pulls in JAX and TensorFlow, so it runs in a short child process (with
this script's torch directory removed from PYTHONPATH), which also builds the
Flax model and returns every parameter's path and shape: the script checks
that its torch parameters match them one to one (names, shapes, total count)
and exits with an error if they do not.

Usage (from the repository root; torch installed outside the project venv,
e.g. `pip install --target /tmp/torchpkgs torch`):

    PYTHONPATH=/tmp/torchpkgs .venv/bin/python benchmarks/torch_reference.py \
        --config=configs/synthetic_cpu.py --override=loss.kind=integral \
        --batch_size=16 --steps=20 --warmup=3 [--no_channels_last] [--dtype=bfloat16] \
        [--device=cuda] [--threads=N] [--override=model.features=128] [--output=result.json]

Only the 'integral' loss is reproduced, so configs with another loss.kind
(synthetic_cpu.py trains with 'both') need --override=loss.kind=integral.
One JSON object with the timings is printed to stdout (progress goes to stderr).
`--helpfull` lists the flags.
"""

from __future__ import annotations

import ast
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "configs/synthetic_cpu.py",
                    "path/to/config.py[:variant], relative to the repository root or absolute.")
flags.DEFINE_multi_string("override", [], "KEY=VALUE config override passed to c2f_vol.config.load "
                          "(repeatable), e.g. --override=model.features=128.")
flags.DEFINE_integer("batch_size", None, "Batch size (default: the config's batch_size).", lower_bound=1)
flags.DEFINE_integer("steps", 20, "Timed steps.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps first.", lower_bound=0)
flags.DEFINE_integer("threads", None, "torch.set_num_threads (default: all usable cores).", lower_bound=0)
flags.DEFINE_enum("device", "cpu", ["cpu", "cuda"], "Device to run on.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "bfloat16: torch.autocast compute, float32 master weights and float32 loss.")
flags.DEFINE_bool("no_channels_last", False, "Use NCHW (contiguous) instead of channels_last.")
flags.DEFINE_enum("optim_impl", "default", ["default", "foreach", "fused"],
                  "torch optimiser implementation (default: torch's own choice).")
flags.DEFINE_integer("seed", 0, "Seed of the weights and of the random batch.")
flags.DEFINE_string("output", None, "Also write the JSON result here.")

# Same constants as c2f_vol.model (kept literal so this process never imports JAX).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-5  # flax.nnx.BatchNorm default epsilon (also torch's default)
DEFAULT_FLAX_BN_MOMENTUM = 0.9  # c2f_vol.model.OPTIONAL_KEYS["bn_momentum"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------
# Config (and the reference parameter table) from c2f_vol, in a child process.
# --------------------------------------------------------------------------

_CHILD_CODE = r"""
import json, sys
import jax
from flax import nnx
from c2f_vol import config as cfg, model
from c2f_vol.codec import VolumeCodec

spec, overrides = sys.argv[1], json.loads(sys.argv[2])
c = cfg.load(spec, overrides)
codec = VolumeCodec.for_experiment(c)
m = model.create_model(c.model, codec)
# The model keys a config may leave out, with their defaults (model.OPTIONAL_KEYS: a dict of
# defaults, or the key names with the defaults in the base config).
opt = model.OPTIONAL_KEYS
defaults = dict(opt) if isinstance(opt, dict) else {k: cfg.base_config().model[k] for k in opt}
params = {}
for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(m, nnx.Param))[0]:
    keys = [str(p.key) for p in path if hasattr(p, "key")]
    params[".".join(keys)] = list(leaf.shape)
out = dict(
    model={**defaults, **dict(c.model)},
    codec=dict(input_size=codec.input_size, heatmap_size=list(codec.heatmap_size),
               depth_bins=list(codec.depth_bins), depth_range_mm=codec.depth_range_mm),
    optim=json.loads(c.optim.to_json_best_effort()),
    loss=json.loads(c.loss.to_json_best_effort()),
    batch_size=int(c.batch_size),
    param_count=model.count_params(m),
    params=params,
)
print("C2F_CONFIG_JSON " + json.dumps(out))
"""


def load_c2f_config(spec: str, overrides: dict) -> dict:
    """Run `c2f_vol.config.load(spec, overrides)` + the Flax model build in a child process."""
    env = dict(os.environ)
    torch_dir = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))
    # Keep torch's private site dir (which also carries newer typing_extensions,
    # setuptools, ...) out of the JAX/TF process.
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and os.path.abspath(p) != torch_dir]
    env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *path])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["JAX_PLATFORMS"] = "cpu"  # only shapes are needed; never grab an accelerator
    proc = subprocess.run([sys.executable, "-c", _CHILD_CODE, spec, json.dumps(overrides)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("C2F_CONFIG_JSON "):
            return json.loads(line[len("C2F_CONFIG_JSON "):])
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
    """Pre-activation bottleneck: BN-ReLU-conv1x1 (no bias), BN-ReLU-conv3x3 (no bias),
    BN-ReLU-conv1x1 (bias); 1x1 projection (bias) on the skip when cin != cout."""

    def __init__(self, cin: int, cout: int, momentum: float):
        super().__init__()
        mid = max(cout // 2, 1)
        self.bn1 = _bn(cin, momentum)
        self.conv1 = _conv(cin, mid, 1, bias=False)
        self.bn2 = _bn(mid, momentum)
        self.conv2 = _conv(mid, mid, 3, bias=False)
        self.bn3 = _bn(mid, momentum)
        self.conv3 = _conv(mid, cout, 1)
        self.skip = _conv(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(h)))
        h = self.conv3(F.relu(self.bn3(h)))
        return h + (x if self.skip is None else self.skip(x))


def _blocks(n: int, cin: int, cout: int, momentum: float) -> nn.Sequential:
    # nn.Sequential names its children 0, 1, ... like the Flax nnx.List.
    return nn.Sequential(*[Bottleneck(cin if k == 0 else cout, cout, momentum) for k in range(n)])


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


class StackedHourglass(nn.Module):
    """(B, S, S, 3) uint8 images -> list of float32 (B, J, D_i, H, W) logits, one per stack.

    Module names mirror the Flax model (stem_conv, stem_bn, stem_res1,
    stem_pooled, stem_res2, hourglasses, post, heads, remap_features,
    remap_preds) so parameters can be matched to it one to one.
    """

    def __init__(self, model_cfg: dict, codec_cfg: dict):
        super().__init__()
        f = int(model_cfg["features"])
        nres = int(model_cfg["num_residual"])
        mom = float(model_cfg.get("bn_momentum", DEFAULT_FLAX_BN_MOMENTUM))
        self.num_joints = int(model_cfg["num_joints"])
        self.depth_bins = tuple(int(d) for d in codec_cfg["depth_bins"])
        self.input_size = int(codec_cfg["input_size"])
        self.heatmap_size = tuple(int(v) for v in codec_cfg["heatmap_size"])
        if len(self.depth_bins) != int(model_cfg["num_stacks"]):
            raise ValueError("num_stacks must equal len(codec.depth_bins)")

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
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor, memory_format) -> torch.Tensor:
        """(B, S, S, 3) uint8 -> (B, 3, S, S) float32 (x / 255 - mean) / std.

        permute() of an NHWC tensor already has channels_last strides; otherwise
        it is made contiguous (NCHW)."""
        x = images.permute(0, 3, 1, 2)
        x = x.contiguous(memory_format=memory_format)
        return (x.float() / 255.0 - self.mean) / self.std

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
        h_, w_ = self.heatmap_size
        for i, d in enumerate(self.depth_bins):
            h = self.post[i](self.hourglasses[i](x))
            pred = self.heads[i](h)  # (B, J * d, H, W), compute dtype
            # head_to_volume: (B, J*d, H, W) -> (B, J, d, H, W), float32 (copies under channels_last).
            outputs.append(pred.reshape(pred.shape[0], self.num_joints, d, h_, w_).float())
            if i + 1 < len(self.depth_bins):
                x = x + self.remap_features[i](h) + self.remap_preds[i](pred)
        return outputs


def check_against_flax(net: nn.Module, flax_params: dict) -> int:
    """Match every torch parameter to the Flax one of the same path; return the total count."""
    mapped = {}
    for name, p in net.named_parameters():
        *mods, leaf = name.split(".")
        owner = net.get_submodule(".".join(mods))
        if isinstance(owner, nn.BatchNorm2d):
            fname, shape = {"weight": "scale", "bias": "bias"}[leaf], list(p.shape)
        elif isinstance(owner, nn.Conv2d):
            if leaf == "weight":  # torch (O, I, kh, kw) <-> flax (kh, kw, I, O)
                fname, shape = "kernel", [p.shape[2], p.shape[3], p.shape[1], p.shape[0]]
            else:
                fname, shape = "bias", list(p.shape)
        else:
            raise RuntimeError(f"unexpected parameter {name}")
        mapped[".".join([*mods, fname])] = shape
    missing = sorted(set(flax_params) - set(mapped))
    extra = sorted(set(mapped) - set(flax_params))
    wrong = sorted(k for k in set(mapped) & set(flax_params) if list(mapped[k]) != list(flax_params[k]))
    if missing or extra or wrong:
        raise SystemExit(f"torch model does not match c2f_vol's: missing {missing[:10]}, extra {extra[:10]}, "
                         f"shape mismatch {[(k, mapped[k], flax_params[k]) for k in wrong[:10]]}")
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


# --------------------------------------------------------------------------
# Codec + loss (c2f_vol.codec.VolumeCodec.encode / soft_argmax, c2f_vol.losses integral).
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


def integral_loss(logits, joints_uv, depth_mm, mask, codec_cfg: dict, stack_weights):
    """c2f_vol.losses.compute_loss with kind='integral' (float32)."""
    h, w = codec_cfg["heatmap_size"]
    levels = encode(joints_uv, depth_mm, codec_cfg)
    total = torch.zeros((), dtype=torch.float32, device=mask.device)
    for i, (lg, coords) in enumerate(zip(logits, levels)):
        d = codec_cfg["depth_bins"][i]
        sizes = torch.tensor((w, h) if d == 1 else (w, h, d), dtype=torch.float32, device=mask.device)
        err = (soft_argmax(lg) - coords[..., : sizes.shape[0]]).abs() / sizes
        per_sample = err.sum(-1).mean(-1)  # (B,)
        value = (per_sample * mask).sum() / mask.sum().clamp_min(1.0)
        total = total + stack_weights[i] * value
    return total


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
        # optax.rmsprop(decay, eps); optax puts eps inside the sqrt, torch outside (same cost).
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

def _parse_overrides(items):
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--override expects key=value; got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


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


def run_benchmark(args) -> dict:
    """Build, check and time the torch step; print the JSON result and return it.

    `args` carries the flag values as attributes (FLAGS, or any namespace with the same names).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads or cores)
    torch.manual_seed(args.seed)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device=cuda but torch.cuda.is_available() is False")
    device = torch.device(args.device)

    c2f = load_c2f_config(args.config, _parse_overrides(args.override))
    model_cfg, codec_cfg, optim_cfg, loss_cfg = c2f["model"], c2f["codec"], c2f["optim"], c2f["loss"]
    if loss_cfg.get("kind") != "integral":
        raise SystemExit(f"only loss.kind='integral' is reproduced; the config has {loss_cfg.get('kind')!r} "
                         "(add --override=loss.kind=integral)")
    batch = args.batch_size or c2f["batch_size"]
    levels = len(codec_cfg["depth_bins"])
    stack_weights = [float(v) for v in (loss_cfg.get("stack_weights") or [1.0] * levels)]
    loss_scale = float(loss_cfg.get("integral_weight", 1.0))

    net = StackedHourglass(model_cfg, codec_cfg)
    n_torch = check_against_flax(net, c2f["params"])
    if n_torch != c2f["param_count"]:
        raise SystemExit(f"parameter count mismatch: torch {n_torch} vs c2f_vol {c2f['param_count']}")
    print(f"params: torch {n_torch}, c2f_vol {c2f['param_count']} (all {len(c2f['params'])} tensors match)",
          file=sys.stderr)

    memory_format = torch.contiguous_format if args.no_channels_last else torch.channels_last
    net = net.to(device=device, memory_format=memory_format).train()
    opt = make_optimizer(net.parameters(), optim_cfg, args.optim_impl)
    clip = float(optim_cfg.get("grad_clip_norm", 0.0))

    # One fixed random batch, resident on the device, with the value ranges of
    # c2f_vol.benchmark.random_train_batch: uint8 images, joints uniform in
    # [0.1 S, 0.9 S] crop pixels, root-relative depths uniform in +-0.8 R mm
    # (root joint 0), every sample real (mask 1).
    g = torch.Generator().manual_seed(args.seed)
    s, j = int(codec_cfg["input_size"]), int(model_cfg["num_joints"])
    r = float(codec_cfg["depth_range_mm"])
    images = torch.randint(0, 256, (batch, s, s, 3), dtype=torch.uint8, generator=g).to(device)
    joints_uv = (s * (0.1 + 0.8 * torch.rand(batch, j, 2, generator=g))).to(device)
    depth_mm = (0.8 * r * (2 * torch.rand(batch, j, generator=g) - 1))
    depth_mm[:, 0] = 0.0
    depth_mm = depth_mm.to(device)
    mask = torch.ones(batch, device=device)

    use_bf16 = args.dtype == "bfloat16"
    params = list(net.parameters())

    def train_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = net(images, memory_format)
        with torch.autocast(device_type=device.type, enabled=False):
            loss = loss_scale * integral_loss(logits, joints_uv, depth_mm, mask, codec_cfg, stack_weights)
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
        overrides=args.override,
        device=args.device if args.device == "cpu" else f"cuda:{torch.cuda.get_device_name()}",
        dtype=args.dtype,
        channels_last=not args.no_channels_last,
        batch_size=batch,
        input_size=s,
        heatmap_size=list(codec_cfg["heatmap_size"]),
        depth_bins=list(codec_cfg["depth_bins"]),
        optimizer=optim_cfg.get("name"),
        optim_impl=args.optim_impl,
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
        loadavg_before=[round(v, 2) for v in load_before],
        loadavg_after=[round(v, 2) for v in load_after],
        other_processes_cpu_cores=other_cores,  # average cores used by others during the timed steps
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text + "\n")
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run_benchmark(FLAGS)  # not returned: app.run would pass the dict to sys.exit


if __name__ == "__main__":
    app.run(main)
