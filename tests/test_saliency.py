"""adafv.saliency / VisualTokens: the [CLS] row without eager attention equals the eager attention map."""

import pytest
import torch

from adafv import archs


@pytest.mark.parametrize("fixture", ["tiny_next", "tiny_llava"])
def test_saliency_equals_eager_attention(fixture, request, photos):
    ref = request.getfixturevalue(fixture)
    model = ref.model
    assert model.config.vision_config._attn_implementation != "eager"  # we never need eager ourselves
    prepared = ref.prepare(photos["chelsea.png"], "What is in the picture?")
    tokens, saliency = archs.get(model.config.model_type).visual(model)(prepared.pixel_values)

    import copy

    eager = copy.deepcopy(model.model.vision_tower)
    eager.set_attn_implementation("eager")
    layer = model.config.vision_feature_layer
    captured = []  # the feature layer's key projection, as the tower computes it
    k_proj = eager.encoder.layers[layer].self_attn.k_proj
    handle = k_proj.register_forward_hook(lambda module, args, output: captured.append(output))
    out = eager(prepared.pixel_values, output_attentions=True, output_hidden_states=True)
    handle.remove()
    expected = out.attentions[layer][:, :, 0, 1:].mean(1)  # (N, P)
    assert saliency.shape == expected.shape
    assert (saliency - expected).abs().max().item() < 1e-5
    # and the features are LLaVA's: hidden_states[layer] without [CLS], projected
    features = model.model.multi_modal_projector(out.hidden_states[layer][:, 1:])
    torch.testing.assert_close(tokens, features, atol=1e-5, rtol=1e-5)
    # VisionZip's inputs: the same layer's features before the projector, and its keys averaged over heads
    hidden, saliency_again, keys = archs.get(model.config.model_type).visual(model).hidden(prepared.pixel_values)
    torch.testing.assert_close(hidden, out.hidden_states[layer][:, 1:], atol=1e-5, rtol=1e-5)
    assert torch.equal(saliency_again, saliency)
    heads = model.config.vision_config.num_attention_heads
    N, S, C = captured[0].shape
    expected_keys = captured[0][:, 1:].reshape(N, S - 1, heads, C // heads).mean(2)  # (N, P, C/H)
    torch.testing.assert_close(keys, expected_keys, atol=1e-5, rtol=1e-5)


def test_last_tower_layer_is_not_run(tiny_next):
    visual = tiny_next.loaded.arch.visual(tiny_next.model)
    assert len(visual.layers) == tiny_next.model.config.vision_config.num_hidden_layers - 1
