"""The machine a benchmark ran on, printed above its figures: CPU, cores, torch's view of it.

Torch kernels dispatch on the CPU's capability (``AVX2``, ``AVX512``, ...) and bfloat16 is
twice as fast as float32 only where the CPU multiplies it natively (AVX512-BF16 or AMX), so
figures from two machines compare only with this line beside them. Torch is asked in a child
process, so a benchmark's own memory, threads and import time stay as they were.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

from hypermosaic.executor import cpu_count

__all__ = ["machine_line", "print_machine"]

_PROBE = """
import torch
from hypermosaic.pipelines.esrgan.upscaler import native_bf16
print(torch.__version__, torch.backends.cpu.get_cpu_capability(), native_bf16())
"""


def _cpu_model() -> str:
    """The CPU's model name (Linux), else what `platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """One line: CPU model, usable cores, torch's CPU capability and whether bf16 is native."""
    head = f"machine: {_cpu_model()}, {cpu_count()} cores"
    probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)
    if probe.returncode:
        return f"{head}; torch not installed"
    version, capability, bf16 = probe.stdout.split()
    native = "native" if bf16 == "True" else "emulated"
    return f"{head}; torch {version} CPU capability {capability}, bf16 {native}"


def print_machine() -> None:
    """Print `machine_line` (every benchmark's first line)."""
    print(machine_line(), flush=True)
