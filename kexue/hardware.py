"""What the CPU computes natively, and the inference dtype that follows from it.

    bf16 matmul speed ≈ fp32 speed × 2 with AVX512_BF16 / AMX, but ≈ fp32 speed / 8 when emulated

A CPU without bf16 instructions (AVX2, plain AVX-512) converts every bf16 element to fp32 and back
in software, so a "faster" dtype becomes several times slower. kexue therefore picks bf16 only when
the instruction set has it or on a CUDA device that computes bf16 without emulation; everywhere else
it stays in fp32. The rule, the one every part of kexue asks (training's ``bf16="auto"``, the inference
dtype, the benchmarks' hardware line):

    native bf16 on a CPU  <=>  avx512_bf16  or  (amx_bf16 and amx_tile)      (flags of /proc/cpuinfo)
    native bf16 on CUDA   <=>  torch.cuda.is_bf16_supported(including_emulation=False)

AMX's bf16 dot product (``TDPBF16PS``) works on tile registers, so ``amx_bf16`` counts only together
with ``amx_tile`` (the tile architecture, whose state the OS must enable before any AMX instruction
runs); ``avx512_bf16`` (``VDPBF16PS``, on vector registers) needs nothing more.

int8 GEMMs (torch.ao's fbgemm, ONNX Runtime) run on any x86 CPU, but only with VNNI (``avx512_vnni``,
``avx_vnni``) or AMX-int8 do they take full 8-bit activations in one instruction; without it fbgemm keeps
activations to 7 bits, at a cost in accuracy. :func:`describe` says which, and which inference engines are
installed; :mod:`kexue.recipes.fastpath` reads these rules when it picks a model's inference path.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class CPUFeatures:
    name: str  # model name from the OS, or platform.processor()
    torch_capability: str  # the kernel set PyTorch dispatches to: DEFAULT, AVX2, AVX512, ...
    avx2: bool
    avx512: bool  # AVX-512 foundation + BW/VL/DQ (what PyTorch's AVX512 kernels need)
    avx512_vnni: bool  # int8 dot products (fbgemm int8 GEMM)
    avx512_bf16: bool
    amx: bool  # AMX tiles with bf16 (Sapphire Rapids and later)
    avx_vnni: bool = False  # int8 dot products on 256-bit vectors (Alder Lake and later)
    amx_int8: bool = False  # AMX tiles with int8

    @property
    def native_bf16(self) -> bool:
        return self.avx512_bf16 or self.amx

    @property
    def native_int8(self) -> bool:
        """int8 dot products in one instruction (VNNI / AMX-int8): int8 GEMMs use full 8-bit activations
        (without them fbgemm keeps activations to 7 bits to avoid int16 overflow, at a cost in accuracy)."""
        return self.avx512_vnni or self.avx_vnni or self.amx_int8

    def summary(self) -> str:
        flags = [n for n in ("avx2", "avx512", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx", "amx_int8")
                 if getattr(self, n)]
        bf16 = "native" if self.native_bf16 else "emulated (fp32 is used)"
        int8 = "VNNI" if self.native_int8 else "no VNNI (7-bit activations)"
        return (f"{self.name}; torch kernels {self.torch_capability}; flags {' '.join(flags) or 'none'}; bf16 {bf16}; "
                f"int8 {int8}")


CPUINFO = Path("/proc/cpuinfo")


def _linux_flags() -> tuple[str, set[str]]:
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", set()
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return name, flags


def features_from_flags(flags, name: str = "", capability: str | None = None) -> CPUFeatures:
    """The :class:`CPUFeatures` that a set of ``/proc/cpuinfo`` flag names describes."""
    flags = set(flags)
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    return CPUFeatures(
        name=name or platform.processor() or "unknown CPU",
        torch_capability=capability,
        avx2="avx2" in flags or capability in ("AVX2", "AVX512"),
        avx512={"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags,
        avx512_vnni="avx512_vnni" in flags,
        avx512_bf16="avx512_bf16" in flags,
        amx={"amx_tile", "amx_bf16"} <= flags,
        avx_vnni="avx_vnni" in flags,
        amx_int8={"amx_tile", "amx_int8"} <= flags,
    )


@functools.lru_cache(maxsize=None)
def cpu_features() -> CPUFeatures:
    """The features of the CPU this process runs on (flags from ``/proc/cpuinfo``, read once; an OS
    without it reports no AVX-512 / bf16, so kexue stays in fp32 there)."""
    name, flags = _linux_flags()
    return features_from_flags(flags, name)


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """True when bf16 matmuls run in hardware on ``device`` (the rule of the module doc); False for
    any other device type."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_features().native_bf16
    return False


def native_int8(device: str | torch.device = "cpu") -> bool:
    """True when the CPU has int8 dot-product instructions (VNNI / AMX-int8); the int8 paths of
    :mod:`kexue.tools.quantize` and ONNX Runtime run on any x86 CPU, faster and closer to fp32 with them."""
    return torch.device(device).type == "cpu" and cpu_features().native_int8


def inference_backends() -> list[str]:
    """The inference engines installed here: ``torch <version>`` and, if present, ``onnxruntime <version>``
    (read from the package metadata; nothing is imported)."""
    from importlib import metadata

    out = [f"torch {torch.__version__}"]
    try:
        out.append(f"onnxruntime {metadata.version('onnxruntime')}")
    except metadata.PackageNotFoundError:
        pass
    return out


def inference_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """bf16 where the hardware has it, fp32 otherwise (never an emulated bf16)."""
    return torch.bfloat16 if native_bf16(device) else torch.float32


def describe(device: str | torch.device = "cpu") -> str:
    """One line for benchmark and log headers."""
    device = torch.device(device)
    if device.type == "cuda":
        return (f"{torch.cuda.get_device_name(device)}; bf16 {'native' if native_bf16(device) else 'not native'}; "
                f"inference dtype {inference_dtype(device)}")
    return (f"{cpu_features().summary()}; inference dtype {inference_dtype(device)}; "
            f"backends {', '.join(inference_backends())}")


__all__ = ["CPUFeatures", "cpu_features", "describe", "features_from_flags", "inference_backends", "inference_dtype",
           "native_bf16", "native_int8"]
