"""Toy world: a small LLaVA-NeXT trained here on procedurally generated scenes, to measure token selection offline.

* `scenes`: the seeded scene and question generator (pure Python, numpy and PIL);
* `model`: the model from configs, its word-level tokenizer and its HF processor;
* `train`: the training script (tower pretraining, stage 0, 1, 2 the way LLaVA is trained);
* `evaluate`: the measurement, accuracy vs keep per selection method, small vs large objects.

The shipped checkpoint lives in `checkpoints/toyworld-llava-next/` and is registered as `toyworld-llava-next`.
"""
