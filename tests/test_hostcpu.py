"""hostcpu: the CPU's class from /proc/cpuinfo, and XLA's CPU kernels chosen for it."""

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
