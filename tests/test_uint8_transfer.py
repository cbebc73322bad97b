"""Training / validation batches: 8-bit image views travel as uint8, normalization happens in feed_data.

The result must equal the host-normalized views (device_normalize: false) bit for bit.
"""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import uiqa_plugin  # noqa: F401  (before basicsr)
from basicsr.data import build_dataset
from helpers import write_random_image
from uiqa_plugin.data.collate import collate_views
from uiqa_plugin.data.device_input import DeviceInput
from uiqa_plugin.models.iqa_model import IQAModel

SIZE = (30, 40)  # h, w


def write_fixture(folder, kinds=('rgb', 'gray', 'rgb2')):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = SIZE
    for i, kind in enumerate(kinds):
        if kind in ('rgb', 'rgb2'):
            write_random_image(os.path.join(folder, f'{i}.jpg'), (h, w, 3), rng, quality=90)
        elif kind == 'gray':
            write_random_image(os.path.join(folder, f'{i}.png'), (h, w), rng)
        elif kind == 'rgb16':
            write_random_image(os.path.join(folder, f'{i}.png'), (h, w, 3), rng, bits=16)
        elif kind == 'rgba':
            write_random_image(os.path.join(folder, f'{i}.png'), (h, w, 4), rng)
    return str(folder)


def make(folder, phase, views, on_device, **extra):
    return build_dataset({'name': 'u8', 'type': 'ImageFolderDataset', 'dataroot': folder, 'phase': phase,
                          'views': views, 'device_normalize': on_device, **extra})


def batch_of(ds, seed):
    items = []
    for i in range(len(ds)):
        np.random.seed(seed + i)  # the same flips and fragment offsets in both datasets
        items.append(ds[i])
    return collate_views(items)


def feed(batch, views):
    model = SimpleNamespace(views=list(views), device=torch.device('cpu'))
    IQAModel.feed_data(model, batch)
    return model.inputs


VIEWS = [{'image': {}}, {'image': {}, 'fragments': {'grid': 2, 'patch': 8}},
         {'image': {}, 'fragments': {'grid': 2, 'patch': 8}, 'salient': {'size': 16}},
         {'fragments': {'grid': 2, 'patch': 8}, 'salient': {'size': 16}}]
NORMS = [{}, {'mean': None, 'std': None}, {'mean': [0.5, 0.25, 0.125], 'std': [0.2, 0.3, 0.7]}]


@pytest.mark.parametrize('phase', ['train', 'val'])
@pytest.mark.parametrize('views', VIEWS)
@pytest.mark.parametrize('norm', NORMS)
def test_device_path_equals_host_path_bit_for_bit(tmp_path, phase, views, norm):
    folder = write_fixture(tmp_path / 'imgs')
    new, old = make(folder, phase, views, True, **norm), make(folder, phase, views, False, **norm)
    for seed in (0, 100, 200):
        new_batch, old_batch = batch_of(new, seed), batch_of(old, seed)
        if 'image' in views:
            assert new_batch['image'].dtype == torch.uint8  # the decoded 8-bit image itself, 4x fewer bytes
        assert all(old_batch[v].dtype == torch.float32 for v in views)
        assert ('device_mean' in new_batch) == (norm.get('mean', ()) is not None)
        new_inputs, old_inputs = feed(new_batch, views), feed(old_batch, views)
        for v in views:
            assert new_inputs[v].dtype == torch.float32
            assert torch.equal(new_inputs[v], old_inputs[v]), (phase, v, norm)
            assert torch.equal(old_inputs[v], old_batch[v])  # the host path reaches the model unchanged



def test_flip_happens_on_uint8(tmp_path):
    folder = write_fixture(tmp_path / 'imgs', kinds=('rgb',))
    train, val = make(folder, 'train', ['image'], True), make(folder, 'val', ['image'], True)
    plain = val[0]['image']
    flips = []
    for seed in range(12):
        np.random.seed(seed)
        item = train[0]['image']
        assert item.dtype == torch.uint8
        flips.append(torch.equal(item, plain.flip(-1)) and not torch.equal(item, plain))
        assert flips[-1] or torch.equal(item, plain)
    assert any(flips) and not all(flips)


def test_resized_and_non_8bit_views_stay_float_and_mix_with_uint8(tmp_path):
    folder = write_fixture(tmp_path / 'imgs', kinds=('rgb', 'rgb16', 'rgba', 'gray'))
    new, old = make(folder, 'val', ['image'], True), make(folder, 'val', ['image'], False)
    assert [new[i]['image'].dtype for i in range(4)] == [torch.uint8, torch.float32, torch.float32, torch.uint8]
    new_batch, old_batch = batch_of(new, 0), batch_of(old, 0)
    assert new_batch['image'].dtype == torch.float32  # a mixed batch becomes float in [0, 1] on the host
    assert torch.equal(feed(new_batch, ['image'])['image'], feed(old_batch, ['image'])['image'])
    resized = make(folder, 'val', {'image': {'size': [16, 20]}}, True)
    assert resized[0]['image'].dtype == torch.float32 and resized[0]['image'].shape == (3, 16, 20)
    resized_old = make(folder, 'val', {'image': {'size': [16, 20]}}, False)
    new_image = feed(batch_of(resized, 0), ['image'])['image']
    assert torch.equal(new_image, feed(batch_of(resized_old, 0), ['image'])['image'])
    whole = make(folder, 'val', ['image'], True, resize={'size': [16, 20]})
    assert whole[0]['image'].dtype == torch.float32


def test_feed_data_leaves_the_batch_untouched(tmp_path):
    folder = write_fixture(tmp_path / 'imgs')
    batch = batch_of(make(folder, 'val', {'image': {}, 'salient': {'size': 16}}, True), 0)
    before = {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}
    feed(batch, ['image', 'salient'])
    assert all(torch.equal(before[k], batch[k]) for k in before)


def test_device_input_refuses_mixed_normalizations():
    batch = {'device_mean': torch.tensor([[0.5, 0.5, 0.5], [0.4, 0.5, 0.5]]), 'device_std': torch.ones(2, 3)}
    with pytest.raises(ValueError, match='different device_mean'):
        DeviceInput.from_batch('cpu', batch)
