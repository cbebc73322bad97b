"""View transforms: fragment mosaic, centre crop, shared flip, normalization, chains, collate."""
import cv2
import numpy as np
import pytest
import torch

import uiqa_plugin  # noqa: F401  (before basicsr)
from uiqa_plugin.data.collate import collate_views
from uiqa_plugin.data.image_ops import center_crop, fragment_mosaic, fragment_offsets, resize
from uiqa_plugin.data.transforms import (CenterCrop, Collect, Fragment, Normalize, RandomFlip, Resize,
                                         build_transform, build_transforms, view_transform_specs)


def coordinate_image(h, w):
    """Channel 0 = row index, channel 1 = column index, channel 2 = a constant: every patch says where it came from."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([ys, xs, np.full_like(ys, 7.0)], axis=-1)


def expected_mosaic_centre(img, grid, patch):
    """Independent evaluation-mode mosaic: loops, centre offset (cell - patch) // 2 in each cell."""
    h, w = img.shape[:2]
    ch, cw = h // grid, w // grid
    out = np.zeros((grid * patch, grid * patch, img.shape[2]), np.float32)
    for i in range(grid):
        for j in range(grid):
            y = min(i * ch, h - patch) + (ch - patch) // 2
            x = min(j * cw, w - patch) + (cw - patch) // 2
            out[i * patch:(i + 1) * patch, j * patch:(j + 1) * patch] = img[y:y + patch, x:x + patch]
    return out


@pytest.mark.parametrize('shape', [(768, 1024), (400, 500), (384, 384)])
def test_fragment_mosaic_eval_equals_source_patches(shape):
    img = np.random.default_rng(0).random((*shape, 3), dtype=np.float32)
    mosaic = fragment_mosaic(img, grid=12, patch=32)
    assert mosaic.shape == (384, 384, 3)
    np.testing.assert_array_equal(mosaic, expected_mosaic_centre(img, 12, 32))
    # KonIQ size: cells of 64 x 85 px, patch (0, 0) starts at (16, 26)
    if shape == (768, 1024):
        np.testing.assert_array_equal(mosaic[:32, :32], img[16:48, 26:58])


def test_fragment_mosaic_torch_matches_numpy():
    img = np.random.default_rng(1).random((450, 610, 3), dtype=np.float32)
    offsets = fragment_offsets(450, 610, 12, 32, rng=np.random.default_rng(5))
    out_np = fragment_mosaic(img, 12, 32, offsets=offsets)
    out_t = fragment_mosaic(torch.from_numpy(img).permute(2, 0, 1), 12, 32, offsets=offsets)
    assert out_t.shape == (3, 384, 384)
    np.testing.assert_array_equal(out_t.permute(1, 2, 0).numpy(), out_np)


def test_fragment_mosaic_training_varies_offsets_inside_cells():
    h, w, grid, patch = 500, 700, 12, 32
    img = coordinate_image(h, w)
    ch, cw = h // grid, w // grid  # 41, 58
    rng = np.random.RandomState(0)
    seen_dy, seen_dx = set(), set()
    for _ in range(5):
        mosaic = fragment_mosaic(img, grid, patch, rng=rng)
        for i in range(grid):
            for j in range(grid):
                tile = mosaic[i * patch:(i + 1) * patch, j * patch:(j + 1) * patch]
                y0, x0 = int(tile[0, 0, 0]), int(tile[0, 0, 1])
                # the tile is a contiguous patch of the source ...
                np.testing.assert_array_equal(tile[:, :, 0], y0 + np.arange(patch)[:, None] + 0 * tile[:, :, 0])
                np.testing.assert_array_equal(tile[:, :, 1], x0 + np.arange(patch)[None, :] + 0 * tile[:, :, 1])
                # ... whose offset lies in [0, cell - patch) of its own cell
                dy, dx = y0 - i * ch, x0 - j * cw
                assert 0 <= dy < ch - patch and 0 <= dx < cw - patch
                seen_dy.add(dy)
                seen_dx.add(dx)
    assert len(seen_dy) > 5 and len(seen_dx) > 10  # offsets really vary


def test_fragment_mosaic_upsamples_small_images_then_computes_the_grid():
    img = np.random.default_rng(2).random((100, 150, 3), dtype=np.float32)
    mosaic = fragment_mosaic(img, grid=12, patch=32)
    # independent: bilinear upsample so that the shorter side is 384, grid on the NEW size (cells 32 x 48)
    up = cv2.resize(img, (576, 384), interpolation=cv2.INTER_LINEAR)
    expected = np.zeros_like(mosaic)
    for i in range(12):
        for j in range(12):
            expected[i * 32:(i + 1) * 32, j * 32:(j + 1) * 32] = up[i * 32:i * 32 + 32, j * 48 + 8:j * 48 + 40]
    np.testing.assert_allclose(mosaic, expected, atol=1e-4)  # cv2 rounds its weights


def test_fragment_offsets_zero_span_when_cell_equals_patch():
    offsets = fragment_offsets(384, 384, 12, 32, rng=np.random.RandomState(0))
    assert offsets.shape == (12, 12, 2) and not offsets.any()


def test_center_crop_position_size_and_upsampling():
    img = coordinate_image(500, 700)
    crop = center_crop(img, 448)
    assert crop.shape == (448, 448, 3)
    assert crop[0, 0, 0] == 26 and crop[0, 0, 1] == 126  # ((500-448)//2, (700-448)//2)
    small = np.random.default_rng(3).random((300, 400, 3), dtype=np.float32)
    crop = center_crop(small, 448)
    up = cv2.resize(small, (598, 448), interpolation=cv2.INTER_LINEAR)  # 400 * 448/300 = 597.3 -> 598
    np.testing.assert_allclose(crop, up[:, 75:523], atol=1e-4)
    rect = center_crop(img, (100, 200))
    assert rect.shape == (100, 200, 3) and rect[0, 0, 0] == 200 and rect[0, 0, 1] == 250


def test_resize_short_side_and_fixed_size():
    img = np.random.default_rng(4).random((600, 800, 3), dtype=np.float32)
    out = Resize(short_side=512)({'views': {'image': img}})['views']['image']
    assert out.shape == (512, 683, 3)
    assert 0.0 <= out.min() and out.max() <= 1.0  # bicubic overshoot clipped
    out = Resize(size=[100, 120], interpolation='bilinear')({'views': {'image': img}})['views']['image']
    assert out.shape == (100, 120, 3)
    # a constant image stays constant under anti-aliased resizing
    const = np.full((60, 80, 3), 0.25, np.float32)
    np.testing.assert_allclose(resize(const, (13, 17), 'bicubic'), 0.25, atol=1e-6)
    with pytest.raises(ValueError, match='exactly one of size or short_side'):
        Resize(size=10, short_side=10)


def test_flip_one_decision_for_all_views():
    img = np.random.default_rng(5).random((40, 60, 3), dtype=np.float32)
    flip = RandomFlip(hflip=True, vflip=True, train=True)
    np.random.seed(0)
    decisions = set()
    for _ in range(30):
        sample = flip({'views': {'image': img.copy(), 'other': img.copy()}})
        do_h, do_v = sample['flip']
        expected = img[:, ::-1] if do_h else img
        expected = expected[::-1] if do_v else expected
        np.testing.assert_array_equal(sample['views']['image'], expected)
        np.testing.assert_array_equal(sample['views']['other'], expected)
        decisions.add((do_h, do_v))
    assert len(decisions) == 4
    # evaluation: never flips
    sample = RandomFlip(train=False)({'views': {'image': img}})
    np.testing.assert_array_equal(sample['views']['image'], img)


def test_train_chain_derives_views_from_the_flipped_image():
    img = coordinate_image(400, 500) / 500.0
    transforms = build_transforms([{'type': 'RandomFlip'}, {'type': 'Fragment', 'eval_offsets': 'centre'},
                                   {'type': 'CenterCrop', 'size': 64}], train=True)
    transforms.transforms[1].train = False  # deterministic fragments, to compare exactly
    np.random.seed(1)
    flips = set()
    for _ in range(12):
        sample = transforms({'key': 'a', 'views': {'image': img.copy()}})
        flipped = sample['flip'][0]
        flips.add(flipped)
        source = img[:, ::-1] if flipped else img
        np.testing.assert_array_equal(sample['views']['image'], source)
        np.testing.assert_array_equal(sample['views']['salient'], center_crop(source, 64))
        np.testing.assert_array_equal(sample['views']['fragments'], expected_mosaic_centre(source, 12, 32))
    assert flips == {True, False}


def test_normalize_numbers_clip_defaults():
    img = np.full((4, 5, 3), 0.5, np.float32)
    out = Normalize()({'views': {'image': img}})['views']['image']
    expected = [(0.5 - 0.48145466) / 0.26862954, (0.5 - 0.4578275) / 0.26130258, (0.5 - 0.40821073) / 0.27577711]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), rtol=1e-5)
    assert img[0, 0, 0] == 0.5  # input untouched
    kept = Normalize(mean=None, std=None)({'views': {'image': img}})['views']['image']
    np.testing.assert_array_equal(kept, img)
    custom = Normalize(mean=[0.5, 0.5, 0.5], std=[0.25, 0.5, 1.0])({'views': {'image': img + 0.25}})['views']['image']
    np.testing.assert_allclose(custom[0, 0], [1.0, 0.5, 0.25], rtol=1e-6)


def test_collect_outputs_chw_tensors_and_target():
    img = np.random.default_rng(6).random((8, 9, 3), dtype=np.float32)
    out = Collect(['image'])({'key': 'k.jpg', 'path': '/x/k.jpg', 'target': np.array([0.5], np.float32),
                              'views': {'image': img, 'unused': img}})
    assert set(out) == {'image', 'target', 'key', 'path'}
    assert out['image'].shape == (3, 8, 9) and out['image'].dtype == torch.float32
    np.testing.assert_array_equal(out['image'].numpy(), img.transpose(2, 0, 1))
    assert out['target'].shape == (1,) and out['target'].dtype == torch.float32 and out['key'] == 'k.jpg'
    with pytest.raises(KeyError, match="'salient' was not produced"):
        Collect(['salient'])({'key': 'k', 'path': 'p', 'target': [], 'views': {'image': img}})


def test_view_specs_train_versus_eval():
    views = {'image': {}, 'fragments': {'grid': 12, 'patch': 32}, 'salient': {'size': 448}}
    train = [s['type'] for s in view_transform_specs(views, train=True)]
    assert train == ['LoadImage', 'RandomFlip', 'Fragment', 'CenterCrop', 'Normalize', 'Collect']
    evaluation = [s['type'] for s in view_transform_specs(views, train=False)]
    assert evaluation == ['LoadImage', 'Fragment', 'CenterCrop', 'Normalize', 'Collect']
    one = view_transform_specs(['image'], train=False, resize={'short_side': 512})
    assert [s['type'] for s in one] == ['LoadImage', 'Resize', 'Normalize', 'Collect']
    assert one[-1]['keys'] == ['image']
    with pytest.raises(ValueError, match="unknown view name"):
        view_transform_specs({'lq_distortion': {}})


def test_fragment_seeded_eval_is_deterministic_per_key():
    img = np.random.default_rng(7).random((500, 600, 3), dtype=np.float32)
    frag = Fragment(eval_offsets='seeded', train=False)
    a1 = frag({'key': 'a.jpg', 'views': {'image': img}})['views']['fragments']
    a2 = frag({'key': 'a.jpg', 'views': {'image': img}})['views']['fragments']
    b = frag({'key': 'b.jpg', 'views': {'image': img}})['views']['fragments']
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, b)


def test_build_transform_errors_name_the_problem():
    with pytest.raises(KeyError, match="Unknown transform type 'Sharpen'.*Fragment"):
        build_transform({'type': 'Sharpen'})
    with pytest.raises(TypeError, match=r"Transform CenterCrop: unknown option\(s\) \['grid'\]"):
        build_transform({'type': 'CenterCrop', 'grid': 3})
    assert build_transform({'type': 'Fragment'}, train=False).train is False
    assert isinstance(build_transform({'type': 'CenterCrop', 'size': 10}), CenterCrop)


def test_collate_views_stacks_and_explains_size_mismatch():
    def sample(key, h, w):
        return {'image': torch.zeros(3, h, w), 'fragments': torch.zeros(3, 8, 8), 'target': torch.ones(1),
                'key': key, 'path': f'/d/{key}'}
    batch = collate_views([sample('a.jpg', 4, 6), sample('b.jpg', 4, 6)])
    assert batch['image'].shape == (2, 3, 4, 6) and batch['target'].shape == (2, 1)
    assert batch['key'] == ['a.jpg', 'b.jpg']
    with pytest.raises(ValueError) as info:
        collate_views([sample('a.jpg', 4, 6), sample('b.jpg', 5, 6), sample('c.jpg', 4, 6)])
    message = str(info.value)
    for part in ["view 'image'", '4x6: a.jpg, c.jpg', '5x6: b.jpg', 'batch_size_per_gpu: 1', 'resize']:
        assert part in message
