"""hostcpu: the CPU's class from /proc/cpuinfo, XLA's CPU kernels chosen for it, and malloc's huge pages."""

from c2f_vol import hostcpu


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n")
    return str(path)


AVX512 = "fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16"
AVX2 = "fpu sse2 avx avx2 fma bmi2"


def test_cpu_class_from_the_flags(tmp_path):
    avx512 = hostcpu.cpu_class(_cpuinfo(tmp_path, AVX512))
    assert avx512["class"] == "AVX-512" and avx512["model"] == "Test CPU 9000"
    assert avx512["avx512_flags"] == ["avx512_bf16", "avx512bw", "avx512f"]
    assert hostcpu.cpu_class(_cpuinfo(tmp_path, AVX2))["class"] == "AVX2"
    assert hostcpu.cpu_class(_cpuinfo(tmp_path, "fpu sse2 avx"))["class"] == "other"
    assert hostcpu.cpu_class(str(tmp_path / "absent"))["class"] == "unknown"


def test_ynnpack_kernels_are_turned_off_on_the_avx2_class_only(tmp_path):
    flag = "--xla_cpu_experimental_ynn_fusion_type="
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert hostcpu.tune_cpu_backend(env, _cpuinfo(tmp_path, AVX2)) == flag
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {flag}"
    assert hostcpu.tune_cpu_backend(env, _cpuinfo(tmp_path, AVX2)) is None  # once only
    assert env["XLA_FLAGS"].count(flag) == 1
    empty = {}
    assert hostcpu.tune_cpu_backend(empty, _cpuinfo(tmp_path, AVX2)) == flag and empty["XLA_FLAGS"] == flag
    # AVX-512, or a CPU it cannot read: nothing changes.
    for info in (_cpuinfo(tmp_path, AVX512), str(tmp_path / "absent")):
        env = {}
        assert hostcpu.tune_cpu_backend(env, info) is None and env == {}
    # The user's own setting of the flag stands, whatever it is.
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    assert hostcpu.tune_cpu_backend(mine, _cpuinfo(tmp_path, AVX2)) is None
    assert mine["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


def _thp(tmp_path, mode):
    path = tmp_path / "thp_enabled"
    path.write_text({"madvise": "always [madvise] never\n", "always": "[always] madvise never\n",
                     "never": "always madvise [never]\n"}[mode])
    return str(path)


def test_huge_pages_tunable_only_where_it_changes_something(tmp_path):
    madvise, glibc = _thp(tmp_path, "madvise"), ("glibc", "2.36")
    assert hostcpu.huge_pages_tunables({}, madvise, glibc) == "glibc.malloc.hugetlb=1"
    # Other tunables are kept; the user's own setting of this one (e.g. =0 to opt out) wins.
    assert (hostcpu.huge_pages_tunables({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, madvise, glibc)
            == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
    assert hostcpu.huge_pages_tunables({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, madvise, glibc) is None
    # Kernels that give huge pages anyway or never, C libraries without the tunable, no THP file.
    assert hostcpu.huge_pages_tunables({}, _thp(tmp_path, "always"), glibc) is None
    assert hostcpu.huge_pages_tunables({}, _thp(tmp_path, "never"), glibc) is None
    assert hostcpu.huge_pages_tunables({}, madvise, ("glibc", "2.31")) is None
    assert hostcpu.huge_pages_tunables({}, madvise, ("", "")) is None
    assert hostcpu.huge_pages_tunables({}, str(tmp_path / "absent"), glibc) is None


def test_environ_before_restart_gives_back_the_users_tunables():
    before = hostcpu.TUNABLES_BEFORE_ENV
    assert "GLIBC_TUNABLES" not in hostcpu.environ_before_restart(
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", before: "", "A": "1"})
    assert hostcpu.environ_before_restart({"GLIBC_TUNABLES": "x=2:glibc.malloc.hugetlb=1", before: "x=2"}) == {
        "GLIBC_TUNABLES": "x=2"}
    assert hostcpu.environ_before_restart({"GLIBC_TUNABLES": "x=2"}) == {"GLIBC_TUNABLES": "x=2"}


_TOOL = """
import os, sys
print("pid", os.getpid(), flush=True)
from c2f_vol import cli

def main(argv):
    print("tunables", repr(os.environ.get("GLIBC_TUNABLES")), "argv", argv[1:])

cli.run(main, tensorflow=False)
"""


def test_a_tool_restarts_itself_with_huge_pages(tmp_path):
    """The same process (PID) and arguments, with GLIBC_TUNABLES set where it helps; a user's value is kept."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    script = tmp_path / "tool.py"
    script.write_text(_TOOL)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostcpu.TUNABLES_BEFORE_ENV)}
    env["PYTHONPATH"] = str(REPO)

    def run(extra_env):
        proc = subprocess.run([sys.executable, str(script), "extra"], env=dict(env, **extra_env), cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.splitlines()

    expected = hostcpu.huge_pages_tunables(env)
    lines = run({})
    pids = [line for line in lines if line.startswith("pid ")]
    assert lines[-1] == f"tunables {expected!r} argv ['extra']"
    assert len(pids) == (1 if expected is None else 2) and len(set(pids)) == 1
    assert run({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})[-1] == "tunables 'glibc.malloc.hugetlb=0' argv ['extra']"
