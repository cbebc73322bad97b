"""Trained checkpoints: uiqa-score --checkpoint builds the same views as training; published CLIP-IQA+
weights convert to our format with the reference token layout."""
import csv

import numpy as np
import pytest
import torch

from basicsr.utils.registry import ARCH_REGISTRY
from helpers import write_random_image
from uiqa_plugin.api import load_trained_model
from uiqa_plugin.clip import CLIP_MEAN, CLIP_STD, load_clip
from uiqa_plugin.data.image_io import read_image
from uiqa_plugin.data.image_ops import center_crop, fragment_mosaic
from uiqa_plugin.tools.convert import convert_clipiqa_plus
from uiqa_plugin.tools.convert import main as convert_main
from uiqa_plugin.tools.score import main as score_main

VIEWS = {'image': {}, 'fragments': {'grid': 2, 'patch': 16}, 'salient': {'size': 32}}


def normalize(img):
    return torch.from_numpy(((img - np.array(CLIP_MEAN)) / np.array(CLIP_STD)).astype(np.float32).transpose(2, 0, 1))


@pytest.fixture
def uiqa_checkpoint(uiqa_checkpoint_factory):
    return uiqa_checkpoint_factory(VIEWS)


def test_score_with_a_trained_uiqa_checkpoint(uiqa_checkpoint, tiny_clip_files, tmp_path):
    path, net = uiqa_checkpoint
    rng = np.random.default_rng(0)
    for i, size in enumerate([(60, 80), (48, 64)]):
        write_random_image(tmp_path / f'im{i}.png', (*size, 3), rng)
    out = tmp_path / 'scores.csv'
    assert score_main([str(tmp_path / '*.png'), '--checkpoint', path, '--device', 'cpu', '--no-progress',
                       '--out', str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ['path', 'score']
    net.eval()
    for row in rows:
        img = read_image(row['path'])
        views = {'image': normalize(img)[None], 'fragments': normalize(fragment_mosaic(img, 2, 16))[None],
                 'salient': normalize(center_crop(img, 32))[None]}
        with torch.no_grad():
            expected = net(views)[0, 0].item()
        assert float(row['score']) == pytest.approx(expected, abs=1e-5)


def test_load_trained_model_errors(tmp_path, tiny_clip_files, uiqa_checkpoint):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'junk')
    with pytest.raises(ValueError, match='bad.pth: cannot be read'):
        load_trained_model(str(bad))
    torch.save({'ctx': torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match='not a uiqa-plugin checkpoint'):
        load_trained_model(str(bad))
    ckpt = torch.load(uiqa_checkpoint[0], weights_only=False)
    ckpt['params']['prompt_learner.ctx'] = torch.zeros(2, 4, 32)
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match='do not fit CLIPUIQA'):
        load_trained_model(str(bad))


def reference_checkpoint(width, pairs, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {f'generator.clipmodel_{i}.prompt_learner.ctx': torch.randn(16, width, generator=g).half()
             for i in range(pairs)}
    state['generator.clipmodel_0.clip_model.visual.conv1.weight'] = torch.randn(4, 3, 3, 3)  # CLIP: dropped
    if pairs > 1:
        dims = [(128, pairs), (128, 128), (1, 128)]
        for k, (o, i) in enumerate(dims, 1):
            state[f'generator.regressor.linear_{k}.weight'] = torch.randn(o, i, generator=g)
            state[f'generator.regressor.linear_{k}.bias'] = torch.randn(o, generator=g)
    return {'meta': {'iter': 80000}, 'state_dict': state}


def test_reference_checkpoint_converts_with_the_reference_token_layout(tiny_clip_files, tmp_path):
    src = tmp_path / 'iter_80000.pth'
    ref = reference_checkpoint(32, 1)
    torch.save(ref, src)
    out = tmp_path / 'ours.pth'
    assert convert_main([str(src), str(out), '--clip-model', tiny_clip_files['config'],
                         '--clip-pretrained', tiny_clip_files['openai']]) == 0
    converted = torch.load(out, weights_only=False)
    assert list(converted['params']) == ['prompt_learner.ctx']
    model = load_trained_model(str(out), device='cpu')
    ctx = ref['state_dict']['generator.clipmodel_0.prompt_learner.ctx'].float()
    assert torch.equal(model.prompt_learner.ctx[0], ctx)
    # Independent layout: [SOS] ctx[:8] 'good photo ..' ctx[8:] [EOT], as the reference built it.
    # The reference ran OpenAI's CLIP (QuickGELU): the converted model records it.
    assert converted['network_g']['quick_gelu'] is True and model.clip.quick_gelu is True
    clip = load_clip(tiny_clip_files['config'], tiny_clip_files['openai'], quick_gelu=True)
    tokens = clip.tokenize(['X ' * 16 + 'Good photo..'])
    emb = clip.token_embedding(tokens)[0]
    eot = int(tokens[0].argmax())
    manual = torch.cat([emb[:1], ctx[:8], emb[17:20], ctx[8:], emb[20:]])[None]
    with torch.no_grad():
        expected = clip.encode_text_embeddings(manual, torch.tensor([eot]))
        assert torch.allclose(model.prompt_learner()[0], expected[0], atol=1e-5)


def test_multi_pair_reference_and_pyiqa_formats(tiny_clip_files, tmp_path):
    ref = reference_checkpoint(32, 3, seed=1)
    converted = convert_clipiqa_plus(ref, 'quality,sharpness,noisiness', tiny_clip_files['config'],
                                     tiny_clip_files['openai'])
    params = converted['params']
    assert params['prompt_learner.ctx'].shape == (3, 16, 32)
    assert torch.equal(params['regressor.linear_2.weight'], ref['state_dict']['generator.regressor.linear_2.weight'])
    net = ARCH_REGISTRY.get('CLIPIQAPlus')(**{k: v for k, v in converted['network_g'].items() if k != 'type'})
    net.load_state_dict(params, strict=True)
    with pytest.raises(ValueError, match='3 prompt context\\(s\\) but the attributes .* have 1 pair'):
        convert_clipiqa_plus(ref, 'quality')
    bare = torch.randn(16, 32)
    assert torch.equal(convert_clipiqa_plus(bare, 'quality')['params']['prompt_learner.ctx'][0], bare)
    assert torch.equal(convert_clipiqa_plus({'params': {'prompt_learner.ctx': bare}}, 'quality')['params'][
        'prompt_learner.ctx'][0], bare)
    with pytest.raises(ValueError, match='no learned prompt context'):
        convert_clipiqa_plus({'state_dict': {'a': torch.zeros(1)}}, 'quality')


def test_checkpoint_format_round_trip_and_one_wording_for_missing_clip_files(tmp_path, uiqa_checkpoint_factory):
    """checkpoint_payload writes what read_checkpoint reads back (absolute CLIP paths, checked options,
    the weights as saved); a CLIP file that is not here is named with its key, in the one wording."""
    import os.path as osp

    from uiqa_plugin.checkpoint_format import checkpoint_payload, read_checkpoint
    path, net = uiqa_checkpoint_factory({'image': {}})
    stored = torch.load(path, weights_only=True)['network_g']
    relative = dict(stored, clip_model=osp.relpath(stored['clip_model']))
    payload = checkpoint_payload(net.state_dict(), relative, {'views': {'image': {}}}, [], net.attribute_names)
    assert payload['network_g']['clip_model'] == osp.abspath(stored['clip_model'])  # stored absolute
    written = tmp_path / 'round.pth'
    torch.save(payload, written)
    back = read_checkpoint(str(written))
    assert back['network_g'] == payload['network_g'] and back['attribute_names'] == ['quality', 'sharpness']
    assert back['params'].keys() == net.state_dict().keys()
    assert all(torch.equal(back['params'][k], v) for k, v in net.state_dict().items())
    payload['network_g']['clip_pretrained'] = str(tmp_path / 'gone.pt')
    torch.save(payload, written)
    with pytest.raises(ValueError, match=r'round.pth: it was trained with CLIP files that are not here: '
                                         r'clip_pretrained \S*gone.pt; point at them with --clip-pretrained'):
        load_trained_model(str(written))
