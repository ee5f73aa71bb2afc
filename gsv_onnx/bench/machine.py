"""A description of the machine a benchmark ran on (no torch import: versions come from metadata)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

#: CPU flags that decide which kernels ONNX Runtime and PyTorch can use for int8/bf16/fp32 matmuls.
INTERESTING_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "sve",
    "i8mm",
    "bf16",
)


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as a dict (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def _memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, ISA flags, memory, OS and the versions of the libraries that do the work."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    cpu_model = info.get("model name") or info.get("Model") or platform.processor() or platform.machine()
    family_model = None
    if "cpu family" in info:
        family_model = f"family {info['cpu family']} model {info.get('model', '?')}"
    return {
        "cpu": cpu_model,
        "cpu_family_model": family_model,
        "vendor": info.get("vendor_id"),
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "flags": [flag for flag in INTERESTING_FLAGS if flag in flags],
        "hypervisor": "hypervisor" in flags,
        "memory_gib": _memory_total_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "gsv_onnx": _version("gsv-onnx"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def machine_line(machine: dict[str, Any]) -> str:
    """One-paragraph summary for the table header."""
    flags = " ".join(machine.get("flags") or []) or "none of note"
    family = f" ({machine['cpu_family_model']})" if machine.get("cpu_family_model") else ""
    virtual = ", virtual machine" if machine.get("hypervisor") else ""
    load = machine.get("load_average")
    load_text = f"; load average at start {load[0]:.1f}" if load else ""
    torch_text = machine.get("torch") or "not installed"
    return (
        f"CPU: {machine['cpu']}{family}, {machine['usable_cpus']} usable of {machine['logical_cpus']} "
        f"logical CPUs{virtual}; flags: {flags}\n"
        f"memory {machine.get('memory_gib')} GiB; {machine['os']}; Python {machine['python']}, "
        f"onnxruntime {machine.get('onnxruntime')}, torch {torch_text}, numpy {machine.get('numpy')}"
        f"{load_text}"
    )
