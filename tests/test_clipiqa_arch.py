"""CLIPIQA: scores against independent computations, one image pass for all pairs, registry."""
import torch
import torch.nn.functional as F

from basicsr.utils.registry import ARCH_REGISTRY


def independent_score(metric, images, positive, negative):
    """sigmoid(logit_scale * (cos0 - cos1)) from open_clip's own text encoder."""
    clip = metric.clip
    with torch.no_grad():
        img = F.normalize(clip.encode_image(clip.normalize(images), normalize_features=False), dim=-1)
        text = F.normalize(clip.model.encode_text(clip.tokenize([positive, negative])), dim=-1)
        cos = img @ text.t()
        scale = clip.model.logit_scale.exp()
        softmax = torch.softmax(scale * cos, dim=-1)[:, 0]
    return torch.sigmoid(scale * (cos[:, 0] - cos[:, 1])), softmax


def test_basicsr_builds_it_by_name(tiny_clip_files, tiny_metric_factory):
    from basicsr.archs import build_network
    from uiqa_plugin.archs.clipiqa_arch import CLIPIQA
    assert ARCH_REGISTRY.get('CLIPIQA') is CLIPIQA
    net = build_network({'type': 'CLIPIQA', 'attributes': 'quality', 'clip_model': tiny_clip_files['config'],
                         'clip_pretrained': tiny_clip_files['openai']})
    images = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net.eval()(images), tiny_metric_factory('quality')(images))


def test_score_equals_sigmoid_of_scaled_cosine_difference(tiny_metric_factory):
    metric = tiny_metric_factory('quality')
    images = torch.rand(3, 3, 70, 90)
    with torch.no_grad():
        got = metric(images)
    sig, soft = independent_score(metric, images, 'Good photo.', 'Bad photo.')
    assert got.shape == (3, 1)
    assert torch.allclose(got[:, 0], sig, atol=1e-5)
    assert torch.allclose(got[:, 0], soft, atol=1e-5)


def test_multi_pair_output_equals_single_pair_runs(tiny_metric_factory):
    names = ['quality', 'sharpness', 'happy', 'Vivid photo.|Faded photo.']
    metric = tiny_metric_factory(names)
    images = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        together = metric(images)
        alone = torch.cat([tiny_metric_factory([n])(images) for n in names], dim=1)
    assert together.shape == (2, 4)
    assert torch.allclose(together, alone, atol=1e-6)
    assert metric.attribute_names == names
    scores = metric.score(images)
    assert list(scores) == names and torch.equal(scores['happy'], together[:, 2])


def test_image_encoded_once_and_text_once(tiny_metric_factory, monkeypatch):
    metric = tiny_metric_factory('look,feel')
    clip = metric.clip
    image_calls, text_calls = [], []
    encode_image, encode_text = clip.encode_image, clip.encode_text
    monkeypatch.setattr(clip, 'encode_image', lambda *a, **k: image_calls.append(a[0].shape) or encode_image(*a, **k))
    monkeypatch.setattr(clip, 'encode_text', lambda t: text_calls.append(len(t)) or encode_text(t))
    clip._text_cache.clear()
    with torch.no_grad():
        metric(torch.rand(2, 3, 64, 64))
        metric(torch.rand(2, 3, 64, 64))
    assert len(image_calls) == 2  # one pass per forward for all 11 attributes
    assert text_calls == [22]  # all 2P prompts in one batch, then cached


def test_pyiqa_preset_is_mean_of_its_five_pairs(tiny_metric_factory):
    from uiqa_plugin.prompts import get_attribute
    metric = tiny_metric_factory('pyiqa')
    images = torch.rand(2, 3, 64, 64)
    pairs = get_attribute('quality_pyiqa').pairs
    assert len(pairs) == 5
    with torch.no_grad():
        got = metric(images)[:, 0]
    singles = torch.stack([independent_score(metric, images, p, n)[0] for p, n in pairs], dim=1)
    assert torch.allclose(got, singles.mean(dim=1), atol=1e-6)
    logit_metric = tiny_metric_factory('pyiqa', ensemble='mean_logit')
    with torch.no_grad():
        got_logit = logit_metric(images)[:, 0]
    expected = torch.sigmoid(torch.logit(singles.double()).mean(dim=1)).float()
    assert torch.allclose(got_logit, expected, atol=1e-5)


def test_checkpoint_holds_no_clip(tiny_metric_factory):
    metric = tiny_metric_factory('quality,look')
    assert len(metric.state_dict()) == 0
    assert len(list(metric.parameters())) == 0


def test_logit_scale_comes_from_weights(tiny_metric_factory):
    metric = tiny_metric_factory('quality')
    assert torch.isclose(metric.clip.logit_scale(), metric.clip.model.logit_scale.exp())
