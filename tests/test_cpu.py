"""adafv.runtime.cpu: the CPU a figure belongs to, read from /proc/cpuinfo, and whether INT8 vision pays on it; in
doctor, the bench and the build (issue 25). The cpuinfo texts are those of the machines named (abridged)."""

from __future__ import annotations

import json

from adafv.runtime.cpu import cpu, describe, int8_pays

ZEN2 = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 23
model		: 49
model name	: AMD EPYC
flags		: fpu sse sse2 ht syscall nx mmxext pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes avx f16c \
xsave bmi1 avx2 smep bmi2 rdseed adx sha_ni xsaveopt clzero rdpid

processor	: 1
vendor_id	: AuthenticAMD
"""
ZEN4 = ZEN2.replace("cpu family	: 23", "cpu family	: 25").replace("model		: 49", "model		: 17").replace(
    "rdpid", "rdpid avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512_vnni avx512_bitalg")
SAPPHIRE = """processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse sse2 avx avx2 fma f16c avx512f avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8
"""
ORIN = """processor	: 0
BogoMIPS	: 62.50
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x1
CPU part	: 0xd42
CPU revision	: 1
"""
PI4 = ORIN.replace("asimddp ", "").replace("0xd42", "0xd08")


def test_an_avx2_only_epyc_is_told_apart_from_a_vnni_one():
    zen2, zen4 = cpu(ZEN2), cpu(ZEN4)
    assert (zen2["family"], zen2["model_number"], zen4["family"], zen4["model_number"]) == (23, 49, 25, 17)
    assert zen2["isa"] == ["AVX2", "FMA", "F16C"] and zen2["int8_dot"] is False
    assert {"AVX-512", "AVX-512 VNNI", "AVX-512 BF16"} <= set(zen4["isa"]) and zen4["int8_dot"] is True
    assert describe(zen2).startswith("AMD EPYC (family 23, model 49; AVX2, FMA)")
    assert int8_pays(zen2)[0] is False and "no integer dot-product" in int8_pays(zen2)[1]
    assert int8_pays(zen4) == (True, "AVX-512 VNNI: integer dot products for ONNX Runtime's INT8 kernels")


def test_intel_amx_and_arm_dot_products():
    spr = cpu(SAPPHIRE)
    assert {"AVX-VNNI", "AMX-INT8", "AMX-BF16"} <= set(spr["isa"]) and int8_pays(spr)[0] is True
    orin, pi4 = cpu(ORIN), cpu(PI4)
    assert orin["model"] == "Arm Cortex-A78AE (Jetson Orin)" and orin["isa"] == ["NEON", "dot product", "FP16"]
    assert int8_pays(orin)[0] is True and int8_pays(pi4)[0] is False
    assert "part 0xd42" in describe(orin)


def test_unknown_instruction_sets_say_so():
    facts = cpu("")
    assert facts["isa"] == "unknown" and int8_pays(facts) == (None, "this CPU's instruction sets are unknown")
    assert "instruction sets unknown" in describe(facts)


def test_doctor_names_the_cpu(capsys):
    from adafv.cli.main import main

    assert main(["doctor", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["cpu"]["summary"] == describe(cpu()) and r["cpu"]["int8_pays"] is int8_pays()[0]
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"cpu           {describe(cpu())}" in out and "  INT8        " in out


def _int8_manifest(full_range: bool) -> dict:
    return {"vision": {"files": {"fp32": "vision.onnx", "int8": "vision.int8.onnx"},
                       "int8": {"weight_bits": 8 if full_range else 7, "needs_integer_dot_products": full_range}},
            "target": "cpu", "precision": "int8"}  # fmt: skip


def test_a_full_range_int8_graph_runs_only_where_integer_dot_products_are(monkeypatch, tmp_path):
    """8-bit weights saturate the U8S8 kernels' 16-bit intermediate on a CPU without dot products: there the runtime
    runs the FP32 graph and says why; 7-bit graphs run anywhere; `adafv plan` (another device) is not asked."""
    from adafv.runtime import cpu as cpu_module
    from adafv.runtime.placement import decide, graph_file, graph_for

    cpu_ = ["CPUExecutionProvider"]
    for text, full, want in [(ZEN2, True, "vision.onnx"), (ZEN4, True, "vision.int8.onnx"),
                             (ZEN2, False, "vision.int8.onnx"), (PI4, True, "vision.onnx"),
                             (ORIN, True, "vision.int8.onnx")]:  # fmt: skip
        monkeypatch.setattr(cpu_module, "cpu", lambda cpuinfo=None, text=text: cpu(text))
        m = _int8_manifest(full)
        assert graph_file(m, cpu_) == want, (text[:40], full)
        assert graph_for(m, gpu=False) == "vision.int8.onnx"  # a device elsewhere: its own CPU decides
        placed = decide(tmp_path, m, cpu_)
        assert placed.vision_file == want
        assert ("need integer dot products" in placed.why) == (want == "vision.onnx")
