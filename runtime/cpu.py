"""Which CPU this is, and what its instruction sets let ONNX Runtime's kernels do. Torch-free, no dependencies.

A CPU figure means little without the CPU: the same bundle's vision graph took 4.65 s on a 2-core AMD EPYC of
family 25 (Zen 4: AVX-512 with VNNI) and 29.5 s on a 2-core AMD EPYC of family 23 (Zen 2: AVX2 and FMA only), and
INT8 was 1.72x faster than FP32 on the first and 1.02x on the second. `cpu()` reads what tells them apart, and
`int8_pays()` says whether ONNX Runtime's INT8 kernels have an integer dot-product instruction to use here:

- x86: AVX-512 VNNI or AVX-VNNI (`vpdpbusd`: u8 x s8 dot products accumulated in int32) or AMX-INT8 (tiles).
  Without them (AVX2 only) the U8S8 kernels multiply through `vpmaddubsw`, whose 16-bit intermediate saturates
  (hence `reduce_range`: 7-bit weights) and which runs no faster than FP32 FMA at these shapes (measured 1.02x).
- Arm: the dot-product extension (`asimddp`, `sdot`/`udot`) or I8MM (`smmla`); Jetson Orin's Cortex-A78AE has the
  dot product, so INT8 should pay there (not measured by us).

Linux reads /proc/cpuinfo; elsewhere only `platform` facts are known and the instruction sets are "unknown".
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# the instruction sets that matter to ONNX Runtime's CPU kernels: /proc/cpuinfo flag -> our name
X86 = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
       "avx512_bf16": "AVX-512 BF16", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16", "f16c": "F16C"}  # fmt: skip
ARM = {"asimd": "NEON", "asimddp": "dot product", "i8mm": "I8MM", "sve": "SVE", "sve2": "SVE2", "bf16": "BF16",
       "fphp": "FP16"}  # fmt: skip
INT8_DOT = {"AVX-512 VNNI", "AVX-VNNI", "AMX-INT8", "dot product", "I8MM"}
ARM_PARTS = {0xD08: "Arm Cortex-A72", 0xD0B: "Arm Cortex-A76", 0xD41: "Arm Cortex-A78",
             0xD42: "Arm Cortex-A78AE (Jetson Orin)", 0xD0C: "Arm Neoverse N1", 0xD40: "Arm Neoverse V1",
             0xD49: "Arm Neoverse N2", 0xD4F: "Arm Neoverse V2"}  # fmt: skip


def cpu(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU as a JSON-ready dict: model, vendor, family and model numbers (x86), cores, the instruction sets of
    X86/ARM present, and whether INT8 kernels have a dot-product instruction (`int8_dot`). `cpuinfo`: the text of
    /proc/cpuinfo (default: read it)."""
    info: dict[str, Any] = {"arch": platform.machine(), "cores": os.cpu_count()}
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:  # one processor is enough: they are alike
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    part = _int(fields.get("CPU part", "")) if fields.get("CPU implementer") == "0x41" else None
    info["model"] = (fields.get("model name") or fields.get("Model") or ARM_PARTS.get(part) or platform.processor()
                     or "unknown")  # fmt: skip
    if "vendor_id" in fields:
        info["vendor"] = fields["vendor_id"]
    for key, name in (("cpu family", "family"), ("model", "model_number"), ("CPU part", "part")):
        if key in fields:
            number = _int(fields[key])
            info[name] = number if number is not None else fields[key]
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    if not flags:
        info["isa"], info["int8_dot"] = "unknown", None
        return info
    table = X86 if "flags" in fields else ARM
    info["isa"] = [name for flag, name in table.items() if flag in flags]
    info["int8_dot"] = bool(INT8_DOT & set(info["isa"]))
    return info


def _int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def describe(facts: dict[str, Any]) -> str:
    """One line: 'AMD EPYC (family 25, model 17; AVX2, FMA, AVX-512, AVX-512 VNNI), 2 cores'."""
    numbers = ", ".join(f"{k.replace('_number', '')} {facts[k] if k != 'part' else hex(facts[k])}"
                        for k in ("family", "model_number", "part") if k in facts)  # fmt: skip
    isa = facts.get("isa")
    isa = ", ".join(i for i in isa if i != "F16C") if isinstance(isa, list) else "instruction sets unknown"
    inside = "; ".join(p for p in (numbers, isa) if p)
    return f"{facts.get('model', 'unknown CPU')} ({inside}), {facts.get('cores')} cores"


def int8_pays(facts: dict[str, Any] | None = None) -> tuple[bool | None, str]:
    """(whether INT8 vision kernels should beat FP32 on this CPU, why), from its instruction sets."""
    facts = facts or cpu()
    if facts.get("int8_dot") is None:
        return None, "this CPU's instruction sets are unknown"
    have = sorted(INT8_DOT & set(facts["isa"]))
    if have:
        return True, f"{' and '.join(have)}: integer dot products for ONNX Runtime's INT8 kernels"
    return False, ("no integer dot-product instruction (no VNNI, AMX or Arm dot product): ONNX Runtime's INT8 kernels "
                   "run no faster than FP32 here (measured 1.02x on an AVX2-only AMD EPYC)")  # fmt: skip
