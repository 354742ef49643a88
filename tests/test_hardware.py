"""bf16 only where the hardware does it: the CPU's flags decide the cpu preset's and play's default."""

from mario_kit.hardware import cpu_flags, fast_bf16
from mario_kit.world_model.training.presets import get_config

ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
XEON = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"


def test_bf16_follows_the_cpu_flags(tmp_path):
    (tmp_path / "zen4").write_text(ZEN4)
    (tmp_path / "xeon").write_text(XEON)
    zen4, xeon = cpu_flags(tmp_path / "zen4"), cpu_flags(tmp_path / "xeon")
    assert "avx512_bf16" in zen4 and "avx512_vnni" in xeon and "avx512_bf16" not in xeon
    assert fast_bf16("cpu", zen4) and not fast_bf16("cpu", xeon)
    assert fast_bf16("cuda", xeon)  # a GPU does bf16 whatever the host CPU
    assert cpu_flags(tmp_path / "missing") == frozenset() and not fast_bf16("cpu", frozenset())


def test_cpu_preset_uses_bf16_exactly_where_this_cpu_has_it():
    assert get_config("cpu").bf16 == ("on" if fast_bf16("cpu") else "off")
    assert get_config("cpu", ["bf16=on"]).bf16 == "on"  # an explicit choice still wins
