"""adafv.models / adafv.tiny: registry, local checkpoints, deterministic tiny twins."""

import json

import pytest
import torch

from adafv import ModelError
from adafv.models import REGISTRY, load, resolve
from adafv.tiny import build_tokenizer, save


def test_registry_has_the_named_models():
    for name, source in [
        ("llava-1.5", "llava-hf/llava-1.5-7b-hf"),
        ("llava-next", "llava-hf/llava-v1.6-mistral-7b-hf"),
        ("llava-next-vicuna", "llava-hf/llava-v1.6-vicuna-7b-hf"),
        ("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct"),
        ("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct"),
        ("cosmos-reason1-7b", "nvidia/Cosmos-Reason1-7B"),
        ("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct"),
    ]:
        assert REGISTRY[name].source == source
    assert resolve("tiny-llava").arch == "llava" and resolve("tiny-llava-next").arch == "llava_next"
    assert resolve("qwen2-vl-2b").arch == resolve("tiny-qwen2-vl").arch == "qwen2_vl"


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ModelError, match="unknown model 'llava-9'.*tiny-llava-next"):
        resolve("llava-9")


def test_missing_hf_checkpoint_says_it_never_downloads():
    with pytest.raises(ModelError, match="never downloads"):
        load("llava-hf/llava-1.5-7b-hf-not-cached")


def test_directory_without_config_or_of_another_arch(tmp_path):
    with pytest.raises(ModelError, match="without config.json"):
        resolve(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="'bert' is not supported"):
        resolve(tmp_path)


def test_tiny_twins_are_deterministic():
    assert build_tokenizer().to_str() == build_tokenizer().to_str()
    a, b = load("tiny-llava-next").model, load("tiny-llava-next").model
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("name,arch", [("tiny-llava-next", "llava_next"), ("tiny-qwen2.5-vl", "qwen2_5_vl"),
                                       ("tiny-qwen2-vl", "qwen2_vl")])  # fmt: skip
def test_local_checkpoint_directory_works_like_a_name(tmp_path, photos, name, arch):
    from adafv import AdaFVConfig
    from adafv.pipeline import Reference

    save(name, tmp_path / "ckpt")
    by_name = Reference.load(name)
    by_path = Reference.load(tmp_path / "ckpt")
    assert by_path.loaded.arch.name == arch
    cfg = AdaFVConfig(keep=24)
    a = by_name.run(photos["coffee.png"], "What is in the picture?", cfg, max_new_tokens=6)
    b = by_path.run(photos["coffee.png"], "What is in the picture?", cfg, max_new_tokens=6)
    assert a["kept_positions"] == b["kept_positions"] and a["tokens"] == b["tokens"]


def test_prompt_template_splits_around_the_question(tiny_next):
    before, after = tiny_next.loaded.prompt_template()
    assert "<image>" in before and before.startswith("USER:") and after == " ASSISTANT:"
