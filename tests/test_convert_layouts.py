"""uiqa-convert on synthetic files of every published CLIP-IQA+ layout; pyiqa's 1-D positional stretch."""
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch

from uiqa_plugin.api import load_trained_model
from uiqa_plugin.clip import check_pos_embed_mode, load_clip, stretch_embedding_1d
from uiqa_plugin.tools.convert import convert_clipiqa_plus, main as convert_main


def cubic_resize_1d(values, size, a=-0.75):
    """Independent 1-D cubic convolution (Keys, a=-0.75, half-pixel centres, clamped borders) along axis 0."""
    n = values.shape[0]

    def weight(x):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
        if x < 2:
            return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
        return 0.0
    out = np.zeros((size,) + values.shape[1:])
    for i in range(size):
        src = (i + 0.5) * n / size - 0.5
        base = math.floor(src)
        for k in range(-1, 3):
            out[i] += weight(src - (base + k)) * values[min(max(base + k, 0), n - 1)]
    return out


def test_stretch_1d_is_cubic_resampling_of_the_flat_list_class_slot_included():
    torch.manual_seed(0)
    pos = torch.randn(1 + 7 * 7, 6, dtype=torch.float64)
    for tokens in (1 + 16 * 12, 1 + 5 * 5, 1 + 7 * 7):
        got = stretch_embedding_1d(pos, tokens)
        assert got.shape == (tokens, 6)
        assert np.allclose(got.numpy(), cubic_resize_1d(pos.numpy(), tokens), atol=1e-6)
    assert torch.equal(stretch_embedding_1d(pos, 50), pos)
    assert not torch.allclose(stretch_embedding_1d(pos, 1 + 16 * 12)[0], pos[0])  # unlike the 2-D mode
    for bad in ('stretch', 2, None):
        with pytest.raises(ValueError, match='keep_pos_embed'):
            check_pos_embed_mode(bad)


@pytest.mark.parametrize('clip_name', ['rn', 'vit'])
def test_stretch_1d_encoding_adds_the_stretched_embedding(tiny_clip_files, clip_name, monkeypatch):
    from uiqa_plugin.clip import model as clip_model
    config, weights = ((tiny_clip_files['config'], tiny_clip_files['openai']) if clip_name == 'rn' else
                       (tiny_clip_files['vit_config'], tiny_clip_files['vit_weights']))
    clip = load_clip(config, weights)
    visual = clip.model.visual
    pos = visual.attnpool.positional_embedding if clip_name == 'rn' else visual.positional_embedding
    x = torch.randn(1, 3, 96, 128)  # a 3 x 4 grid (ResNet, stride 32) or 6 x 8 (ViT, patch 16)
    tokens = 1 + (3 * 4 if clip_name == 'rn' else 6 * 8)
    with torch.no_grad():
        got = clip.encode_image(x, keep_pos_embed='stretch_1d', normalize_features=False)
        two_d = clip.encode_image(x, keep_pos_embed=True, normalize_features=False)
        # The same forward with a resize that adds the independently stretched list as it is.
        stretched = torch.from_numpy(cubic_resize_1d(pos.detach().double().numpy(), tokens)).float()
        monkeypatch.setattr(clip_model, 'resize_positional_embedding', lambda p, hw, mode=True: stretched)
        expected = clip.encode_image(x, keep_pos_embed=True, normalize_features=False)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, two_d, atol=1e-4)


def test_pyiqa_per_prompt_context_converts_to_context_prompt_with_the_1d_stretch(tiny_clip_files, tmp_path):
    ctx = torch.randn(2, 16, 32)
    src = tmp_path / 'CLIPIQA+_RN50_512.pth'
    buffers = {'prompt_learner.token_prefix': torch.zeros(2, 1, 32),
               'prompt_learner.token_suffix': torch.zeros(2, 60, 32)}
    torch.save({'params': {'prompt_learner.ctx': ctx, **buffers}}, src)
    out = tmp_path / 'ours.pth'
    assert convert_main([str(src), str(out), '--clip-model', tiny_clip_files['config'],
                         '--clip-pretrained', tiny_clip_files['openai']]) == 0
    converted = torch.load(out, weights_only=True)
    net_opt = converted['network_g']
    assert net_opt['prompt_opt']['context'] == 'prompt' and net_opt['keep_pos_embed'] == 'stretch_1d'
    assert net_opt['quick_gelu'] is True
    model = load_trained_model(str(out), device='cpu')
    assert torch.equal(model.prompt_learner.ctx, ctx) and model.keep_pos_embed == 'stretch_1d'
    # Prompt i uses context i: 'Good photo.' ctx[0], 'Bad photo.' ctx[1].
    clip = model.clip
    tokens = clip.tokenize(['X ' * 16 + 'Bad photo..'])
    emb = clip.token_embedding(tokens)[0]
    manual = torch.cat([emb[:1], ctx[1, :8], emb[17:20], ctx[1, 8:], emb[20:]])[None]
    with torch.no_grad():
        expected = clip.encode_text_embeddings(manual, tokens.argmax(dim=-1))
        assert torch.allclose(model.prompt_learner()[1], expected[0], atol=1e-5)
    # The 2-D mode can be chosen instead; a context count that fits nothing is refused.
    assert convert_clipiqa_plus({'params': {'prompt_learner.ctx': ctx}}, keep_pos_embed=True)['network_g'][
        'keep_pos_embed'] is True
    with pytest.raises(ValueError, match=r'\(3, 16, 32\) fits neither 1 pair\(s\) nor 2 prompt'):
        convert_clipiqa_plus({'params': {'prompt_learner.ctx': torch.zeros(3, 16, 32)}})


def test_context_width_picks_pyiqas_backbone():
    assert convert_clipiqa_plus(torch.zeros(16, 512))['network_g']['clip_model'] == 'RN50'
    assert convert_clipiqa_plus({'params': {'prompt_learner.ctx': torch.zeros(2, 16, 768)}})['network_g'][
        'clip_model'] == 'ViT-L-14'
    assert convert_clipiqa_plus(torch.zeros(16, 512))['network_g']['keep_pos_embed'] is False


def test_mmcv_checkpoint_with_numpy_metadata_loads_without_unpickling_code(tmp_path, tiny_clip_files):
    state = OrderedDict({'generator.clipmodel_0.prompt_learner.ctx': torch.randn(16, 32).half(),
                         'generator.clipmodel_0.clip_model.ln_final.weight': torch.ones(32)})
    meta = {'mmcv_version': '1.3.0', 'iter': 80000, 'epoch': 3, 'time': 'Tue Jun 7 2022',
            'config': 'model = dict(type="CLIPIQA")', 'hook_msgs': {'best_score': np.float64(0.89),
                                                                     'best_iter': np.int64(80000)}}
    src = tmp_path / 'iter_80000.pth'
    torch.save({'meta': meta, 'state_dict': state, 'optimizer': {'state': {}, 'param_groups': [{'lr': 0.002}]}}, src)
    out = tmp_path / 'ours.pth'
    assert convert_main([str(src), str(out), '--clip-model', tiny_clip_files['config'],
                         '--clip-pretrained', tiny_clip_files['openai']]) == 0
    converted = torch.load(out, weights_only=True)
    assert torch.equal(converted['params']['prompt_learner.ctx'][0],
                       state['generator.clipmodel_0.prompt_learner.ctx'].float())
    assert converted['network_g']['prompt_opt']['context'] == 'pair'
    assert converted['network_g']['keep_pos_embed'] is False


class Payload:
    def __reduce__(self):
        return (print, ('code ran',))


def test_a_file_that_would_run_code_is_refused_unless_trusted(tmp_path, capsys):
    src = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'generator.clipmodel_0.prompt_learner.ctx': torch.zeros(16, 32)}, 'x': Payload()}, src)
    assert convert_main([str(src), str(tmp_path / 'out.pth')]) == 2
    err = capsys.readouterr()
    assert 'refused' in err.err and '--trust-checkpoint' in err.err and 'code ran' not in err.out
    assert not (tmp_path / 'out.pth').exists()
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    assert convert_main([str(empty), str(tmp_path / 'out.pth')]) == 2
    assert 'empty' in capsys.readouterr().err
