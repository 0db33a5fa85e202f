"""adafv.saliency / VisualTokens: the [CLS] row without eager attention equals the eager attention map."""

import pytest
import torch

from adafv import VisualTokens


@pytest.mark.parametrize("fixture", ["tiny_next", "tiny_llava"])
def test_saliency_equals_eager_attention(fixture, request, photos):
    ref = request.getfixturevalue(fixture)
    model = ref.model
    assert model.config.vision_config._attn_implementation != "eager"  # we never need eager ourselves
    prepared = ref.prepare(photos["chelsea.png"], "What is in the picture?")
    tokens, saliency = VisualTokens.from_llava(model)(prepared.pixel_values)

    import copy

    eager = copy.deepcopy(model.model.vision_tower)
    eager.set_attn_implementation("eager")
    out = eager(prepared.pixel_values, output_attentions=True, output_hidden_states=True)
    layer = model.config.vision_feature_layer
    expected = out.attentions[layer][:, :, 0, 1:].mean(1)  # (N, P)
    assert saliency.shape == expected.shape
    assert (saliency - expected).abs().max().item() < 1e-5
    # and the features are LLaVA's: hidden_states[layer] without [CLS], projected
    features = model.model.multi_modal_projector(out.hidden_states[layer][:, 1:])
    torch.testing.assert_close(tokens, features, atol=1e-5, rtol=1e-5)


def test_last_tower_layer_is_not_run(tiny_next):
    visual = VisualTokens.from_llava(tiny_next.model)
    assert len(visual.layers) == tiny_next.model.config.vision_config.num_hidden_layers - 1
