"""kexue.hardware is the one native-bf16 rule, asked by training (``fit(bf16=...)``, ``resolve_bf16``) and by
the inference dtype alike: a CPU computes bf16 natively with ``avx512_bf16``, or with ``amx_bf16`` together with
``amx_tile``; CUDA when ``torch.cuda.is_bf16_supported(including_emulation=False)``. Checked on faked
``/proc/cpuinfo`` files, so every flag set is exercised on any machine."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from kexue import hardware
from kexue.train import fit, resolve_bf16
from kexue.train import loop

AVX2 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c"
AVX512 = AVX2 + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"
# (flags, native bf16 by the rule above): the expected column is the rule's truth table, written out
CASES = {
    "avx2 only": (AVX2, False),
    "avx512 without bf16": (AVX512, False),
    "avx512_bf16": (AVX512 + " avx512_bf16", True),
    "amx_bf16 + amx_tile without avx512_bf16": (AVX512 + " amx_bf16 amx_tile amx_int8", True),
    "amx_bf16 without amx_tile": (AVX512 + " amx_bf16", False),
    "amx_tile + amx_int8 without amx_bf16": (AVX512 + " amx_tile amx_int8", False),
    "sapphire rapids": (AVX512 + " avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8", True),
    "no flags line": ("", False),
}


def _cpuinfo(flags: str) -> str:
    """Two processors, as Linux lists them; the flags line of the first one counts."""
    block = "processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Fake CPU @ 2.00GHz\n"
    if flags:
        block += f"flags\t\t: {flags}\n"
    return "".join(block.format(n=n) + "\n" for n in range(2))


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """``fake_cpu(flags)`` points kexue.hardware at a cpuinfo file with these flags."""
    def use(flags: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(_cpuinfo(flags), encoding="utf-8")
        monkeypatch.setattr(hardware, "CPUINFO", path)
        hardware.cpu_features.cache_clear()

    yield use
    hardware.cpu_features.cache_clear()  # the real CPU again for the next test


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_rule_on_faked_cpuinfo_at_every_call_site(case, fake_cpu, tmp_path):
    flags, native = CASES[case]
    fake_cpu(flags)
    cpu = torch.device("cpu")
    feats = hardware.cpu_features()
    assert feats.name == "Fake CPU @ 2.00GHz"
    assert feats.native_bf16 is native
    # the inference side
    assert hardware.native_bf16("cpu") is native
    assert hardware.inference_dtype("cpu") == (torch.bfloat16 if native else torch.float32)
    assert ("bf16 native" if native else "bf16 emulated") in hardware.describe("cpu")
    # the training side: the old kexue.train.loop.native_bf16 is now the same function, and fit's option follows it
    assert loop.native_bf16 is hardware.native_bf16
    assert resolve_bf16("auto", cpu) is native and resolve_bf16(False, cpu) is False
    if native:
        assert resolve_bf16(True, cpu) is True
    else:
        with pytest.raises(ValueError, match="no native bfloat16"):
            resolve_bf16(True, cpu)
    model = torch.nn.Linear(3, 1)
    data = [torch.randn(4, 3) for _ in range(2)]
    fit(model, lambda m, x: m(x).float().pow(2).mean(), data, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        bf16="auto", progress=False, checkpoint_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["bf16"] is native


@pytest.mark.parametrize("flags, slow", [(AVX2, True), (AVX512, False)])
def test_quantize_reads_the_same_features(flags, slow, fake_cpu):
    """tools/quantize asks kexue.hardware too: its AVX-512-only kernel warns exactly where the flags lack it."""
    from kexue.tools.quantize import quantize

    fake_cpu(flags)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8)).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize(model, "int8-weight-only")
    assert any("slower than fp32 on this CPU" in str(w.message) for w in caught) is slow


@pytest.mark.parametrize("available, supported", [(False, False), (True, False), (True, True)])
def test_cuda_asks_torch_without_emulation(available, supported, monkeypatch):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return supported

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert hardware.native_bf16("cuda") is (available and supported)
    assert resolve_bf16("auto", torch.device("cuda")) is (available and supported)
    assert asked == ([False, False] if available else [])  # never the emulated answer
    assert hardware.native_bf16("meta") is False


def test_the_real_cpu_follows_the_rule():
    """This machine: the flags read by an independent parse give the same answer."""
    hardware.cpu_features.cache_clear()
    try:
        text = hardware.CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    flags = next((set(ln.split(":", 1)[1].split()) for ln in text.splitlines() if ln.split(":")[0].strip() == "flags"),
                 set())
    expect = "avx512_bf16" in flags or {"amx_bf16", "amx_tile"} <= flags
    assert hardware.native_bf16("cpu") is expect and resolve_bf16("auto", torch.device("cpu")) is expect
