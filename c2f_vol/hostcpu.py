"""The host CPU: its class (AVX-512 or AVX2 only), XLA's CPU kernels chosen for it, and huge pages
for the process's large buffers.

No JAX here: the flags must be in the environment before JAX initialises its CPU backend, and the
tools set them before anything else (`cli.run`, `sharding.use_cpu_devices`); glibc reads its
tunables when the process starts, so a tool restarts itself with them (`restart_with_huge_pages`).
"""

from __future__ import annotations

import os
import platform
import sys

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


# glibc's malloc tunable (glibc >= 2.35) that asks for transparent huge pages on what it maps.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
# What GLIBC_TUNABLES was before `restart_with_huge_pages` set it ("" when unset): benchmarks give a
# reference implementation's child process the environment the user started with.
TUNABLES_BEFORE_ENV = "C2F_VOL_GLIBC_TUNABLES_BEFORE"


def huge_pages_tunables(environ=None, thp_mode_file: str = THP_MODE_FILE, libc: tuple | None = None) -> str | None:
    """The GLIBC_TUNABLES value with malloc's huge pages on, or None where setting it would change nothing.

    None where GLIBC_TUNABLES already names the tunable (the user's choice, e.g. `=0` to opt out),
    where the C library is not glibc >= 2.35, or where the kernel's transparent huge pages are not
    in `madvise` mode (`always` gives them anyway, `never` refuses them).
    """
    environ = os.environ if environ is None else environ
    current = environ.get("GLIBC_TUNABLES", "")
    if HUGE_PAGES_TUNABLE in current:
        return None
    name, version = libc if libc is not None else platform.libc_ver()
    try:
        if name != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
            return None
        with open(thp_mode_file) as fh:
            if "[madvise]" not in fh.read():
                return None
    except (OSError, ValueError):
        return None
    return f"{current}:{HUGE_PAGES_TUNABLE}=1" if current else f"{HUGE_PAGES_TUNABLE}=1"


def restart_with_huge_pages(environ=None) -> None:
    """Re-execute this process (same PID and arguments) with malloc's huge pages on, where that helps.

    XLA:CPU allocates each step's temporary buffers afresh, and glibc maps allocations this large
    straight from the kernel: with 4 KiB pages the paper model's float32 train step at batch 2 took
    ~410,000 page faults, a tenth of its CPU time in the kernel. With `glibc.malloc.hugetlb=1` the
    kernel backs them with 2 MiB pages: ~1,100 faults and the step 5.87 -> 5.42 s (AVX2; PyTorch
    eager's step gains 2.4% from the same setting). glibc reads it only at start-up, hence the
    restart; nothing happens where `huge_pages_tunables` gives None, and a failed restart is logged
    and the tool continues as it was. Call it first, before any output.
    """
    environ = os.environ if environ is None else environ
    tunables = huge_pages_tunables(environ)
    if tunables is None:
        return
    env = dict(environ, GLIBC_TUNABLES=tunables, **{TUNABLES_BEFORE_ENV: environ.get("GLIBC_TUNABLES", "")})
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError as e:
        logging.warning("could not restart %s with GLIBC_TUNABLES=%s (%s); continuing without huge pages",
                        sys.executable, tunables, e)


def environ_before_restart(environ=None) -> dict:
    """The environment as the user started the process: GLIBC_TUNABLES as before `restart_with_huge_pages`."""
    env = dict(os.environ if environ is None else environ)
    if TUNABLES_BEFORE_ENV in env:
        before = env.pop(TUNABLES_BEFORE_ENV)
        if before:
            env["GLIBC_TUNABLES"] = before
        else:
            env.pop("GLIBC_TUNABLES", None)
    return env
