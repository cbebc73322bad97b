"""Reduced precision (``precision: bf16 | fp16``): fp32 untouched, bf16 close to it, training under bf16."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from uiqa_plugin.clip import attention_pool, interpolate_grid_embedding
from uiqa_plugin.clip_precision import attention_pool_query, folded_resnet, run_folded_resnet


def smooth_images(n, h=64, w=80, seed=0):
    """Natural-ish test images: upsampled noise (smooth, like photos), RGB in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, h // 8, w // 8, generator=g)
    return F.interpolate(coarse, size=(h, w), mode='bicubic', align_corners=False).clamp(0, 1)


def reference_fp32(metric, images):
    """CLIP-IQA written out from open_clip's modules, as the code computed it before precisions existed."""
    clip = metric.clip
    visual = clip.model.visual
    x = clip.normalize(images)
    fmap = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(x)))))
    image = F.normalize(attention_pool(visual.attnpool, fmap), dim=-1)
    text = clip.model.encode_text(clip.tokenize(metric.prompts), normalize=True)
    cos = (image @ text.t()).reshape(len(images), -1, 2)
    return torch.sigmoid(clip.logit_scale() * (cos[..., 0] - cos[..., 1]))


def calibrate_batchnorm(visual, images):
    """Image-dependent BatchNorm statistics for a random tower (as scripts/make_tiny_clip.py does)."""
    norms = [m for m in visual.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
    for m in norms:
        m.eval()


@pytest.fixture
def calibrated_metric(tiny_clip_files):
    """A factory of CLIPIQA metrics on a private tiny CLIP whose BatchNorm is calibrated on smooth images."""
    from uiqa_plugin.api import create_metric
    from uiqa_plugin.clip import clear_shared_clip
    clear_shared_clip()
    made = []

    def make(attributes='quality,sharpness,colorfulness', **kwargs):
        metric = create_metric(attributes, clip_model=tiny_clip_files['config'],
                               clip_pretrained=tiny_clip_files['openai'], device='cpu', **kwargs)
        if not made:
            calibrate_batchnorm(metric.clip.model.visual, metric.clip.normalize(smooth_images(32, seed=5)))
        made.append(metric)
        return metric
    yield make
    clear_shared_clip()


def test_fp32_is_bit_identical_to_the_reference_computation(calibrated_metric):
    images = smooth_images(4)
    default, explicit = calibrated_metric(), calibrated_metric(precision='fp32')
    with torch.no_grad():
        expected = reference_fp32(default, images)
        assert torch.equal(default(images), expected)
        assert torch.equal(explicit(images), expected)


def test_fp32_fused_is_the_same_arithmetic_in_another_order(calibrated_metric):
    # folded BatchNorm, channels_last and the single-query pool in float32: only rounding order differs
    images = smooth_images(6)
    reference, fused = calibrated_metric(), calibrated_metric(precision='fp32-fused')
    with torch.no_grad():
        expected, got = reference(images), fused(images)
    assert got.dtype == torch.float32 and not torch.equal(got, expected)  # it does take the other path
    assert (got - expected).abs().max() < 1e-5


def test_training_step_under_fp32_fused_matches_fp32_gradients(tiny_clip_files):
    from uiqa_plugin.clip import clear_shared_clip
    batch = {'image': smooth_images(4, seed=1) - 0.5, 'fragments': smooth_images(4, 32, 32, seed=2) - 0.5}
    target = torch.rand(4, 1, generator=torch.Generator().manual_seed(3))
    grads = {}
    for precision in ('fp32', 'fp32-fused'):
        clear_shared_clip()
        net = _uiqa(tiny_clip_files, precision, finetune_clip=['visual.layer4']).train()
        F.mse_loss(net(batch), target).backward()
        grads[precision] = torch.cat([p.grad.flatten() for p in net.parameters() if p.requires_grad])
    clear_shared_clip()
    assert torch.allclose(grads['fp32-fused'], grads['fp32'], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize('grid', [(1, 1), (3, 5), (7, 7)])
@pytest.mark.parametrize('with_pos', [False, True])
def test_single_query_attention_pool_equals_full_attention(calibrated_metric, grid, with_pos):
    pool = calibrated_metric().clip.model.visual.attnpool
    fmap = torch.randn(3, pool.k_proj.in_features, *grid, generator=torch.Generator().manual_seed(1))
    pos = interpolate_grid_embedding(pool.positional_embedding, grid) if with_pos else None
    with torch.no_grad():
        full = attention_pool(pool, fmap, keep_pos_embed=with_pos)
        query_only = attention_pool_query(pool, fmap.to(torch.bfloat16).float(), pos)
        assert query_only.dtype == torch.float32
        # Same input (bf16-representable): only float rounding differs.
        full_same_input = attention_pool(pool, fmap.to(torch.bfloat16).float(), keep_pos_embed=with_pos)
    assert torch.allclose(query_only, full_same_input, rtol=1e-4, atol=1e-5 * full.abs().max())


def test_batchnorm_folding_reproduces_the_trunk_in_fp32(calibrated_metric):
    visual = calibrated_metric().clip.model.visual
    x = visual_input = calibrated_metric().clip.normalize(smooth_images(2, seed=3))
    with torch.no_grad():
        expected = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(visual_input)))))
        folded = run_folded_resnet(folded_resnet(visual, torch.float32), x)
    assert folded.dtype == torch.float32
    assert torch.allclose(folded, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


def test_bf16_scores_stay_within_the_effect_of_one_input_quantization_step(calibrated_metric):
    """The bound: bf16 moves scores by at most twice what dithering the image by +-0.5/255 does in fp32.

    An 8-bit image is only known to +-0.5/255 per pixel: score changes of that size are below
    what the data supports. On this random, BatchNorm-calibrated tiny CLIP both are large
    (measured: bf16 5.5e-3, dither 5.0e-3; on the demo set 1.6e-2 and 1.1e-2), far larger than
    with real weights; the absolute bound 1e-2 catches a broken fast path (a wrong fold or
    pool moves scores by 0.1 and more).
    """
    fp32, bf16 = calibrated_metric(), calibrated_metric(precision='bf16')
    images = smooth_images(24, seed=7)
    dither = (torch.rand(images.shape, generator=torch.Generator().manual_seed(9)) - 0.5) / 255
    with torch.no_grad():
        ref = fp32(images)
        low = bf16(images)
        dithered = fp32(images + dither)
    assert low.dtype == torch.float32
    folded = fp32.clip.model.visual.__dict__['_uiqa_folded'][1]
    assert folded[0][1][0].dtype == torch.bfloat16  # the fast path really ran in bf16
    deviation, noise_floor = (low - ref).abs().max(), (dithered - ref).abs().max()
    assert 0 < deviation <= 2 * noise_floor and deviation < 1e-2
    ranks = lambda v: v.argsort(dim=0).argsort(dim=0).float()  # noqa: E731
    for j in range(ref.shape[1]):  # rank agreement per attribute (Spearman without ties)
        assert torch.corrcoef(torch.stack([ranks(ref[:, j]), ranks(low[:, j])]))[0, 1] > 0.99


def test_low_precision_leaves_weights_and_caches_in_fp32(calibrated_metric):
    metric = calibrated_metric(precision='bf16')
    before = copy.deepcopy(metric.clip.model.state_dict())
    with torch.no_grad():
        metric(smooth_images(2))
    after = metric.clip.model.state_dict()
    assert all(v.dtype == before[k].dtype and torch.equal(v, before[k]) for k, v in after.items())
    assert all(p.dtype == torch.float32 for p in metric.clip.model.parameters())
    assert all(f.dtype == torch.float32 for f in metric.clip._text_cache.values())


def test_folded_weights_follow_changes_of_the_clip_weights(calibrated_metric):
    fp32, bf16 = calibrated_metric(), calibrated_metric(precision='bf16')
    images = smooth_images(4, seed=11)
    with torch.no_grad():
        first = bf16(images)
        for bn in (fp32.clip.model.visual.bn2, fp32.clip.model.visual.layer1[0].bn2):
            bn.weight.mul_(-2)  # in place, as load_state_dict does
        changed_ref, changed = fp32(images), bf16(images)
    assert (changed_ref - first).abs().max() > 0.05  # the change matters ...
    assert (changed - changed_ref).abs().max() < 1e-2  # ... and the fast path saw it


def test_fp16_needs_cuda_and_unknown_names_fail(tiny_clip_files, calibrated_metric):
    from uiqa_plugin.api import create_metric
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device.*bf16"):
        create_metric('quality', clip_model=tiny_clip_files['config'], clip_pretrained=tiny_clip_files['openai'],
                      device='cpu', precision='fp16')
    with pytest.raises(ValueError, match='precision must be one of fp32, fp32-fused, bf16, fp16'):
        calibrated_metric(precision='int8')
    from basicsr.utils.registry import ARCH_REGISTRY
    net = ARCH_REGISTRY.get('CLIPIQA')(clip_model=tiny_clip_files['config'], clip_pretrained=tiny_clip_files['openai'],
                                       precision='fp16')  # built without a device: caught at the first CPU forward
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        net(smooth_images(1))


@pytest.mark.parametrize('vit', [False, True])
def test_keep_pos_embed_and_vit_towers_run_in_bf16(tiny_clip_files, vit):
    from uiqa_plugin.api import create_metric
    config, weights = ((tiny_clip_files['vit_config'], tiny_clip_files['vit_weights']) if vit
                       else (tiny_clip_files['config'], tiny_clip_files['openai']))
    images = smooth_images(3)
    out = {}
    for precision in ('fp32', 'bf16'):
        metric = create_metric('quality,sharpness', clip_model=config, clip_pretrained=weights, device='cpu',
                               keep_pos_embed=True, precision=precision)
        with torch.no_grad():
            out[precision] = metric(images)
    assert out['bf16'].dtype == torch.float32
    assert 0 < (out['bf16'] - out['fp32']).abs().max() < 2e-2


def _uiqa(tiny_clip_files, precision, **kwargs):
    from basicsr.utils.registry import ARCH_REGISTRY
    torch.manual_seed(0)
    return ARCH_REGISTRY.get('CLIPUIQA')(views=['image', 'fragments'], attributes='quality,sharpness',
                                         prompt_opt={'n_ctx': 4}, clip_model=tiny_clip_files['config'],
                                         clip_pretrained=tiny_clip_files['openai'], precision=precision, **kwargs)


@pytest.mark.parametrize('finetune', [(), ('visual.layer4',)])
def test_training_step_under_bf16_gives_fp32_gradients_close_to_fp32(tiny_clip_files, finetune):
    from uiqa_plugin.clip import clear_shared_clip
    batch = {'image': smooth_images(4, seed=1) - 0.5, 'fragments': smooth_images(4, 32, 32, seed=2) - 0.5}
    target = torch.rand(4, 1, generator=torch.Generator().manual_seed(3))
    grads = {}
    for precision in ('fp32', 'bf16'):
        clear_shared_clip()  # fine-tuned parts are private: start both runs from the same weights
        net = _uiqa(tiny_clip_files, precision, finetune_clip=list(finetune)).train()
        loss = F.mse_loss(net(batch), target)
        assert loss.dtype == torch.float32
        loss.backward()
        params = [p for p in net.parameters() if p.requires_grad]
        assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32 for p in params)
        grads[precision] = torch.cat([p.grad.flatten() for p in params])
    clear_shared_clip()
    assert torch.isfinite(grads['bf16']).all() and grads['bf16'].abs().sum() > 0
    assert F.cosine_similarity(grads['bf16'], grads['fp32'], dim=0) > 0.98


def test_iqa_model_trains_a_step_with_precision_bf16(tiny_clip_files, tmp_path):
    import uiqa_plugin.models  # noqa: F401  (registers IQAModel)
    from basicsr.models import build_model
    opt = {'name': 'bf16', 'model_type': 'IQAModel', 'num_gpu': 0, 'dist': False, 'rank': 0, 'world_size': 1,
           'is_train': True,
           'network_g': {'type': 'CLIPUIQA', 'views': ['image'], 'attributes': 'quality,sharpness',
                         'prompt_opt': {'n_ctx': 4}, 'clip_model': tiny_clip_files['config'],
                         'clip_pretrained': tiny_clip_files['openai'], 'precision': 'bf16'},
           'path': {'pretrain_network_g': None, 'models': str(tmp_path)},
           'train': {'total_iter': 2, 'optim_g': {'type': 'AdamW', 'lr': 0.01}, 'scheduler': None,
                     'mse_opt': {'type': 'MSELoss', 'loss_weight': 1.0}, 'grad_clip_norm': 1.0}}
    model = build_model(opt)
    ctx = model.net_g.prompt_learner.ctx
    before = ctx.detach().clone()
    model.feed_data({'image': smooth_images(4) - 0.5, 'target': torch.rand(4)})
    model.optimize_parameters(1)
    assert not model.grad_scaler.is_enabled()  # a scaler only for fp16
    assert ctx.dtype == torch.float32 and not torch.equal(ctx, before)
    assert math.isfinite(model.log_dict['l_total'])


def test_caches_filled_under_inference_mode_serve_gradients(calibrated_metric):
    """bf16 scoring under inference_mode builds the folded weights; a later gradient w.r.t. the image uses them."""
    metric = calibrated_metric(precision='bf16')
    with torch.inference_mode():
        metric(smooth_images(1))
    image = smooth_images(1).requires_grad_()
    metric(image).sum().backward()  # CLIP-IQA as a differentiable quality loss
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


def test_cached_text_features_from_inference_mode_serve_training(tiny_clip_files):
    """Scoring under torch.inference_mode fills the text cache; a later training step must be able to use it."""
    from uiqa_plugin.clip import clear_shared_clip
    clear_shared_clip()
    try:
        net = _uiqa(tiny_clip_files, 'fp32', prompt='fixed', finetune_clip=['visual.attnpool'])
        batch = {'image': smooth_images(2) - 0.5, 'fragments': smooth_images(2, 32, 32) - 0.5}
        with torch.inference_mode():
            net.eval()(batch)
        net.train()(batch).sum().backward()  # saves the cached text for backward
        assert net.clip_trainable['visual__attnpool'].c_proj.weight.grad is not None
    finally:
        clear_shared_clip()
