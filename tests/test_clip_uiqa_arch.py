"""CLIP-UIQA: one image pass per view, text once per step, aggregation and heads, small checkpoints."""
import pytest
import torch

from basicsr.utils.registry import ARCH_REGISTRY


@pytest.fixture
def build(tiny_clip_files):
    def make(**kwargs):
        kwargs.setdefault('clip_model', tiny_clip_files['config'])
        kwargs.setdefault('clip_pretrained', tiny_clip_files['openai'])
        return ARCH_REGISTRY.get(kwargs.pop('type', 'CLIPUIQA'))(**kwargs)
    return make


def views(n=2):
    return {'image': torch.rand(n, 3, 80, 96), 'fragments': torch.rand(n, 3, 96, 96), 'salient': torch.rand(n, 3, 64, 64)}


def count_calls(monkeypatch, obj, name):
    calls = []
    original = getattr(obj, name)
    monkeypatch.setattr(obj, name, lambda *a, **k: calls.append(getattr(a[0], 'shape', len(a[0]))) or original(*a, **k))
    return calls


@pytest.mark.parametrize('prompt', ['learned', 'fixed'])
def test_each_view_encoded_once_and_text_once(build, monkeypatch, prompt):
    model = build(attributes='quality,sharpness,noisiness', prompt=prompt)
    model.clip._text_cache.clear()
    image_calls = count_calls(monkeypatch, model.clip, 'encode_image')
    text_calls = count_calls(monkeypatch, model.clip, 'encode_text_embeddings')
    fixed_calls = count_calls(monkeypatch, model.clip, 'encode_text')
    x = views()
    model(x)
    model(x)
    assert len(image_calls) == 6  # 3 views x 2 steps, never per prompt pair
    assert [s[-2:] for s in image_calls[:3]] == [x[v].shape[-2:] for v in ('image', 'fragments', 'salient')]
    if prompt == 'learned':
        assert len(text_calls) == 2 and text_calls[0][0] == 6  # all 6 prompts, once per step
    else:
        assert len(fixed_calls) == 1  # cached after the first step


def test_mean_aggregation_of_one_pair_is_the_mean_probability(build):
    model = build(prompt='fixed', attributes='quality', aggregation='mean')
    assert model.regressor is None
    x = views()
    with torch.no_grad():
        score = model(x)
        per_view = [model.view_probabilities(model.encode_views({'image': x[v], 'fragments': x[v], 'salient': x[v]}),
                                             model.text_features())[:, 0] for v in ('image', 'fragments', 'salient')]
    assert score.shape == (2, 1)
    assert torch.allclose(score, torch.stack(per_view, dim=1).mean(dim=1), atol=1e-6)


def test_fixed_single_view_matches_zero_shot_clipiqa(build, tiny_metric_factory):
    model = build(prompt='fixed', attributes='quality,happy', views=['image'], head='none', input_normalized=False)
    zero_shot = tiny_metric_factory('quality,happy')
    x = torch.rand(2, 3, 72, 88)
    with torch.no_grad():
        assert torch.allclose(model(x), zero_shot(x), atol=1e-6)


def test_concat_learned_attention_shapes_and_weights(build):
    x = views(3)
    concat = build(attributes='quality,sharpness', aggregation='concat')
    assert concat.regressor.linear_1.in_features == 6 and concat(x).shape == (3, 1)
    learned = build(attributes='quality,sharpness', aggregation='learned')
    w = learned.aggregation.view_weights()
    assert w.shape == (3, 2) and torch.allclose(w.sum(dim=0), torch.ones(2))
    with torch.no_grad():
        _, details = learned(x, return_details=True)
    assert torch.allclose(details['pooled'], details['view_probs'].mean(dim=1), atol=1e-6)  # uniform at init
    attention = build(attributes='quality', aggregation='attention', head='none')
    assert attention(x).shape == (3, 1)
    assert len(list(attention.aggregation.parameters())) == 2


def test_gradients_reach_only_trainable_parts(build):
    model = build(attributes='quality,sharpness', aggregation='learned')
    model(views()).sum().backward()
    trainable = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {'prompt_learner.ctx', 'aggregation.view_logits', 'regressor.linear_1.weight'} <= trainable
    assert all(p.grad is None for p in model.clip.parameters())


def test_state_dict_has_no_clip_unless_fine_tuned(build, tiny_clip_files):
    model = build(attributes='quality,sharpness')
    keys = list(model.state_dict())
    assert keys and not any(k.startswith(('clip.', 'model.')) or 'visual' in k for k in keys)
    from uiqa_plugin.clip import clear_shared_clip
    clear_shared_clip()  # fine-tuning unfreezes parts of the shared CLIP: use a fresh one
    try:
        tuned = build(attributes='quality', finetune_clip=['visual.layer4'])
        keys = list(tuned.state_dict())
        assert any(k.startswith('clip_trainable.visual__layer4.') for k in keys)
        tuned(views()).sum().backward()
        assert tuned.clip.model.visual.layer4[0].conv1.weight.grad is not None
        assert tuned.clip.model.visual.layer1[0].conv1.weight.grad is None
    finally:
        clear_shared_clip()


def test_clip_iqa_plus_is_the_single_view_learned_case(build):
    plus = build(type='CLIPIQAPlus', attributes='quality')
    assert plus.views == ['image'] and plus.regressor is None
    assert list(plus.state_dict()) == ['prompt_learner.ctx']
    out = plus(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 1) and ((out >= 0) & (out <= 1)).all()
    several = build(type='CLIPIQAPlus', attributes='quality,sharpness,noisiness')
    assert several.regressor is not None and several.regressor.linear_1.in_features == 3


def test_bad_options_fail_clearly(build):
    with pytest.raises(ValueError, match='views'):
        build(views=['image', 'crop'])
    with pytest.raises(ValueError, match='aggregation'):
        build(aggregation='max')
    with pytest.raises(ValueError, match='concat'):
        build(aggregation='concat', head='none')
    model = build(views=['image', 'salient'])
    with pytest.raises(KeyError, match="missing views \\['salient'\\]"):
        model({'image': torch.rand(1, 3, 64, 64)})


def test_learned_text_is_encoded_once_without_gradients_until_the_context_changes(build, monkeypatch):
    model = build(attributes='quality,sharpness')
    calls = count_calls(monkeypatch, model.clip, 'encode_text_embeddings')
    x = views()
    with torch.no_grad():
        first = model(x)
        assert torch.equal(model(x), first)
    assert len(calls) == 1  # validation batches reuse the encoded prompts
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(x).sum().backward()  # with gradients: encoded every step
    optimizer.step()
    assert len(calls) == 2
    with torch.no_grad():
        after_step = model(x)
    assert len(calls) == 3 and not torch.equal(after_step, first)  # the step changed the context
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    with torch.no_grad():
        assert torch.allclose(model(x), after_step)
    assert len(calls) == 4
