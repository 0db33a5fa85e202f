"""The Jetson container recipe, linted (no Jetson or registry here to build it): a pinned L4T JetPack 6 base, the
ONNX Runtime version adafv's bundles need from NVIDIA's index, adafv installed without a CPU ONNX Runtime."""

from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "docker" / "jetson.Dockerfile"
INSTRUCTIONS = {"FROM", "RUN", "ENV", "COPY", "CMD", "ARG", "WORKDIR", "LABEL", "EXPOSE", "USER", "ENTRYPOINT"}


def _instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current = f"{current} {line}" if current else line
        if current.endswith("\\"):
            current = current[:-1]
            continue
        word, _, rest = current.partition(" ")
        lines.append((word, rest.strip()))
        current = ""
    return lines


def test_jetson_dockerfile_lints():
    steps = _instructions()
    assert {w for w, _ in steps} <= INSTRUCTIONS, steps
    assert steps[0][0] == "FROM" and steps[0][1].startswith("nvcr.io/nvidia/l4t-jetpack:r36.")  # JetPack 6, pinned
    runs = " ".join(r for w, r in steps if w == "RUN")
    from adafv.export.llm import MIN_ONNXRUNTIME

    assert f"onnxruntime-gpu=={MIN_ONNXRUNTIME}" in runs and "jetson-ai-lab.io/jp6" in runs
    assert "[serve]" in runs and "[cpu]" not in runs and "[gpu]" not in runs  # never PyPI's ONNX Runtime on a Jetson
    assert any(w == "CMD" for w, _ in steps)
