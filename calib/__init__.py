"""adafv.calib: reduced-precision vision graphs, and the measured recall of the kept tokens against fp32 (a gate
on held-out images, not a proof).

* `data`: calibration and held-out feeds built through the runtime's own preprocessing and embedding lookup (so
  calibration sees exactly what inference sees), from images, a JSONL, or the set shipped in `calib/data/`;
  `load_data()` doubles as Polygraphy's `--data-loader-script`.
* `int8`: the INT8 graph as explicit Q/DQ ONNX (ONNX Runtime's `quantize_static`), the selection, pixel table,
  LayerNorms and softmaxes kept in float32.
* `report`: kept-position overlap (Jaccard, recall), cosine of the kept tokens, greedy answer agreement, latency and
  size ratios of a reduced-precision graph against the fp32 one.
"""
