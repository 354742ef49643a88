"""What the machine does fast. bfloat16 autocast pays only where the hardware has bf16 arithmetic:
on a CPU without it, oneDNN converts in software and bf16 runs slower than fp32 (docs/BENCHMARKS.md,
"PPO agent": an Intel Xeon without AVX512-BF16 against an AMD EPYC with it).

The CPU's flags are read from /proc/cpuinfo: torch's own check (`torch.ops.mkldnn._is_mkldnn_bf16_supported`)
answers True for any AVX512 CPU, where bf16 is emulated and slower, and torch exposes no Python
check of AVX512-BF16 itself. Off Linux no flags are read, and bf16 stays off on the CPU."""

from __future__ import annotations

from pathlib import Path

BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # x86 instructions that do bf16 dot products


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def fast_bf16(device_type: str = "cpu", flags: frozenset[str] | None = None) -> bool:
    """Whether bfloat16 autocast is faster than fp32 here: CUDA, or a CPU with bf16 instructions."""
    if device_type == "cuda":
        return True
    return bool((cpu_flags() if flags is None else flags) & BF16_CPU_FLAGS)


def resolve_device(device: str = "auto") -> str:
    """`auto` -> `cuda` when a GPU is present, else `cpu`; any other name is returned as given.
    Every command that takes --device defaults to `auto` and resolves it here."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
