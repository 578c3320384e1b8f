"""The host CPU: its class (AVX-512 or AVX2 only), and XLA's CPU kernels chosen for it.

No JAX here: the flags must be in the environment before JAX initialises its CPU backend, and the
tools set them before anything else (`cli.run`, `sharding.use_cpu_devices`).
"""

from __future__ import annotations

import os
import platform

from absl import logging

# XLA's CPU flag that routes convolutions and matmuls to YNNPACK's kernels; empty, XLA uses its own.
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def cpu_class(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The host CPU's model name and class: 'AVX-512' where `cpuinfo` lists avx512 flags, 'AVX2' where it
    lists avx2 but no avx512 flag, else 'other' ('unknown' where the file cannot be read)."""
    cpu_flags, model, readable = set(), platform.processor() or platform.machine(), True
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "flags" and not cpu_flags:
                    cpu_flags = set(value.split())
                elif key.strip() == "model name":
                    model = value.strip()
    except OSError:
        readable = False
    avx512 = sorted(f for f in cpu_flags if f.startswith("avx512"))
    kind = "AVX-512" if avx512 else ("AVX2" if "avx2" in cpu_flags else ("other" if readable else "unknown"))
    return {"class": kind, "model": model, "avx512_flags": avx512, "cores": os.cpu_count()}


def tune_cpu_backend(environ=None, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """Set XLA's CPU kernels for this host's class of CPU; returns the flag added to XLA_FLAGS, or None.

    On the AVX2 class (no AVX-512) XLA's default YNNPACK convolution and matmul kernels are the slow
    ones: with them off (`--xla_cpu_experimental_ynn_fusion_type=`) XLA's own kernels ran a 3x3
    convolution of 2x64x64x256 -> 256, forward and backward, in 353 against 596 ms, a 1x1 of 512 -> 512
    in 184 against 222 ms, and the synthetic_cpu train step 1.31x against PyTorch eager instead of
    1.08x (2-core AMD EPYC, AVX2; README, Performance). On AVX-512 CPUs nothing is changed. A
    XLA_FLAGS that already names the flag is the user's choice and is kept. Only the CPU backend reads
    it; it must be set before JAX initialises its backends (`sharding.use_cpu_devices` and every
    tool's `cli.run` call this first).
    """
    environ = os.environ if environ is None else environ
    current = environ.get("XLA_FLAGS", "")
    if YNN_FUSION_FLAG.lstrip("-") in current or cpu_class(cpuinfo)["class"] != "AVX2":
        return None
    added = YNN_FUSION_FLAG + "="
    environ["XLA_FLAGS"] = f"{current} {added}".strip()
    logging.info("AVX2 CPU without AVX-512: XLA_FLAGS += %s (XLA's own CPU kernels, not YNNPACK's)", added)
    return added
