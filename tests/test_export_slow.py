"""A CLIP-ViT-L/14-336-sized tower (24 layers, width 1024, 576 patches, projector to 4096), random weights: the
vision graph exports, passes the TensorRT lint and matches PyTorch in ONNX Runtime on one crop.

Memory: the export (with the PyTorch reference outputs) and the ONNX Runtime parity run as two processes, each under
2.5 GB of peak RSS. In one process they would add up (~2.9 GB): torch.export keeps its traced graphs, and with them
the weights, alive after the export returns.
"""

import json
import subprocess
import sys
import textwrap

import pytest

EXPORT = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    import numpy as np, torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector
    from adafv import AdaFVConfig
    from adafv.vision import VisualTokens
    from adafv.export.graph import GraphShapes, VisionGraph, export_onnx
    from adafv.export.checks import trt_lint

    out = Path(sys.argv[1])
    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    config = LlavaConfig(vision_config=vision, text_config=LlamaConfig(hidden_size=4096, num_hidden_layers=1,
                         intermediate_size=64, vocab_size=64), vision_feature_layer=-2)
    visual = VisualTokens(CLIPVisionModel(vision).eval(), LlavaMultiModalProjector(config).eval(), -2)
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    table = ((np.arange(256) / 255.0)[None, :] - mean[:, None]) / std[:, None]  # (3, 256) CLIP's normalisation
    graph = VisionGraph(visual, AdaFVConfig(keep=64), anyres=False, pixel_table=table.astype(np.float32)).eval()
    shapes = GraphShapes(crops=(1, 1), max_text=64, image_hw=(336, 336), hidden_size=4096, patches_per_crop=576,
                         anyres=False)
    start = time.perf_counter()
    export_onnx(graph, shapes, out / "vision.onnx")
    seconds = time.perf_counter() - start
    g = torch.Generator().manual_seed(1)
    pixel_values = torch.randint(0, 256, (1, 3, 336, 336), generator=g, dtype=torch.uint8)
    text = torch.randn((12, 4096), generator=g) * 0.02
    with torch.no_grad():
        tokens, positions = graph(pixel_values, text)
    np.savez(out / "case.npz", pixel_values=pixel_values.numpy(), text_embeds=text.numpy(), tokens=tokens.numpy(),
             positions=positions.numpy())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is in KiB)
    print(json.dumps({"export_s": seconds, "rss_gib": rss, "lint": trt_lint(out / "vision.onnx").problems,
                      "onnx_mb": sum(p.stat().st_size for p in out.glob("vision.onnx*")) / 1e6}))
    """
)

PARITY = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    import numpy as np, onnxruntime as ort
    from adafv.export.checks import ParityCase, check_parity

    out = Path(sys.argv[1])
    data = np.load(out / "case.npz")
    case = ParityCase("one crop", {"pixel_values": data["pixel_values"], "text_embeds": data["text_embeds"]},
                      (data["tokens"], data["positions"]))
    session = ort.InferenceSession(str(out / "vision.onnx"), providers=["CPUExecutionProvider"])
    parity = check_parity(session, [case])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"rss_gib": rss, "parity": parity}))
    """
)


def _run(script, tmp_path):
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_clip_l_sized_export(tmp_path):
    export = _run(EXPORT, tmp_path)
    assert export["lint"] == []
    assert export["rss_gib"] < 2.5, export
    parity = _run(PARITY, tmp_path)
    assert parity["parity"]["positions"] == "identical" and parity["parity"]["max_token_abs_diff"] <= 1e-4
    assert parity["rss_gib"] < 2.5, parity
    print({"export": export, "parity": parity})
