"""The CLIP backbone: positional-embedding-free pooling, 2-D interpolation, text cache."""
import math

import pytest
import torch
import torch.nn.functional as F

from uiqa_plugin.clip import interpolate_grid_embedding, load_clip


@pytest.fixture(scope='module')
def rn_clip(tiny_clip_files):
    return load_clip(tiny_clip_files['config'], tiny_clip_files['openai'])


@pytest.fixture(scope='module')
def vit_clip(tiny_clip_files):
    return load_clip(tiny_clip_files['vit_config'], tiny_clip_files['vit_weights'])


def manual_pool_without_pos(pool, fmap):
    """Attention pool written out from the weights: mean token as query, no positional term."""
    n, c, h, w = fmap.shape
    tokens = fmap.flatten(2).transpose(1, 2)  # N, HW, C
    tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
    heads, d = pool.num_heads, c // pool.num_heads
    q = F.linear(tokens[:, :1], pool.q_proj.weight, pool.q_proj.bias).reshape(n, 1, heads, d).transpose(1, 2)
    k = F.linear(tokens, pool.k_proj.weight, pool.k_proj.bias).reshape(n, -1, heads, d).transpose(1, 2)
    v = F.linear(tokens, pool.v_proj.weight, pool.v_proj.bias).reshape(n, -1, heads, d).transpose(1, 2)
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(n, c)
    return F.linear(out, pool.c_proj.weight, pool.c_proj.bias)


@pytest.mark.parametrize('size', [(64, 64), (96, 160)])
def test_resnet_pool_without_pos_embed_matches_direct_computation(rn_clip, size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    visual = rn_clip.model.visual
    with torch.no_grad():
        fmap = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(x)))))
        expected = manual_pool_without_pos(visual.attnpool, fmap)
        got = rn_clip.encode_image(x, normalize_features=False)
    assert got.shape == (2, rn_clip.embed_dim)
    assert torch.allclose(got, expected, atol=1e-5)
    # The positional embedding must really be absent: with it the result differs.
    assert not torch.allclose(got, rn_clip.encode_image(x, keep_pos_embed=True, normalize_features=False), atol=1e-4)


@pytest.mark.parametrize('clip_name', ['rn_clip', 'vit_clip'])
def test_keep_pos_embed_at_native_size_equals_open_clip_forward(clip_name, request):
    clip = request.getfixturevalue(clip_name)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ours = clip.encode_image(x, keep_pos_embed=True, normalize_features=False)
        reference = clip.model.encode_image(x)
    assert torch.allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize('clip_name', ['rn_clip', 'vit_clip'])
def test_any_input_size_runs_with_and_without_pos_embed(clip_name, request):
    clip = request.getfixturevalue(clip_name)
    with torch.no_grad():
        for size in [(64, 64), (96, 128), (160, 96)]:
            for keep in (False, True):
                f = clip.encode_image(torch.randn(1, 3, *size), keep_pos_embed=keep)
                assert f.shape == (1, clip.embed_dim)
                assert torch.allclose(f.norm(dim=-1), torch.ones(1), atol=1e-5)


def test_vit_without_pos_embed_is_permutation_sensitive_only_through_content(vit_clip):
    # Without positional terms the ViT sees a set of patches: swapping two 16x16 patches changes nothing.
    x = torch.randn(1, 3, 64, 64)
    y = x.clone()
    y[..., 0:16, 0:16], y[..., 48:64, 32:48] = x[..., 48:64, 32:48], x[..., 0:16, 0:16]
    with torch.no_grad():
        assert torch.allclose(vit_clip.encode_image(x), vit_clip.encode_image(y), atol=1e-5)
        assert not torch.allclose(vit_clip.encode_image(x, keep_pos_embed=True),
                                  vit_clip.encode_image(y, keep_pos_embed=True), atol=1e-5)


def test_interpolate_grid_embedding_is_two_dimensional_and_keeps_prefix():
    side, c = 3, 2
    grid = torch.arange(side * side * c, dtype=torch.float32).reshape(side * side, c)
    pos = torch.cat([torch.full((1, c), -7.0), grid])
    same = interpolate_grid_embedding(pos, (side, side))
    assert torch.equal(same, pos)
    out = interpolate_grid_embedding(pos, (6, 4))
    assert out.shape == (1 + 24, c)
    assert torch.equal(out[0], pos[0])  # the class / mean slot is not stretched
    expected = F.interpolate(grid.reshape(1, side, side, c).permute(0, 3, 1, 2), size=(6, 4), mode='bicubic',
                             align_corners=False).permute(0, 2, 3, 1).reshape(24, c)
    assert torch.allclose(out[1:], expected)
    with pytest.raises(ValueError, match='not square'):
        interpolate_grid_embedding(torch.zeros(1 + 6, c), (2, 3))


def test_text_features_are_cached_per_prompt_list(rn_clip, monkeypatch):
    calls = []
    original = rn_clip.model.encode_text
    monkeypatch.setattr(rn_clip.model, 'encode_text', lambda *a, **k: calls.append(1) or original(*a, **k))
    prompts = ('A cached prompt.', 'Another cached prompt.')
    first = rn_clip.text_features(prompts)
    second = rn_clip.text_features(prompts)
    assert first is second and len(calls) == 1
    assert torch.allclose(first, F.normalize(original(rn_clip.tokenize(prompts)), dim=-1), atol=1e-6)
    rn_clip.text_features(prompts[:1])
    assert len(calls) == 2


def test_backbone_is_frozen_and_stays_in_eval(rn_clip):
    assert not any(p.requires_grad for p in rn_clip.parameters())
    rn_clip.train()
    assert not rn_clip.training and not rn_clip.model.visual.bn1.training


def test_load_clip_shares_one_instance(tiny_clip_files):
    a = load_clip(tiny_clip_files['config'], tiny_clip_files['openai'])
    b = load_clip(tiny_clip_files['config'], tiny_clip_files['openai'])
    assert a is b


def test_moving_one_model_leaves_the_others_on_their_device(tiny_metric_factory):
    # Stands for cpu/cuda: a dtype change goes through the same path as a device change.
    a = tiny_metric_factory('quality,happy')
    b = tiny_metric_factory('quality,happy')
    assert a.clip is b.clip
    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        before = a(x)
        b = b.double()
        c = tiny_metric_factory('sharpness').double()
        assert a.clip.dtype == torch.float32 and b.clip.dtype == torch.float64
        assert c.clip is b.clip  # one shared copy per device and dtype, not one per model
        assert torch.equal(a(x), before)
        assert torch.allclose(b(x.double()).float(), before, atol=1e-5)
        assert b.float().clip is a.clip  # back to the original instance


def test_fine_tuned_clip_moves_with_its_model(tiny_clip_files):
    from basicsr.utils.registry import ARCH_REGISTRY
    from uiqa_plugin.clip import clear_shared_clip
    clear_shared_clip()
    try:
        net = ARCH_REGISTRY.get('CLIPUIQA')(attributes='quality', views=['image'], finetune_clip=['visual.attnpool'],
                                            clip_model=tiny_clip_files['config'],
                                            clip_pretrained=tiny_clip_files['openai'])
        clip = net.clip
        net.double()
        assert net.clip is clip and net.prompt_learner.clip is clip and clip.dtype == torch.float64
        assert net.clip_trainable['visual__attnpool'].q_proj.weight.dtype == torch.float64
        assert net(torch.rand(1, 3, 64, 64, dtype=torch.float64)).dtype == torch.float64
    finally:
        clear_shared_clip()
