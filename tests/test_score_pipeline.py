"""The scoring loader: same numbers as the one-image-at-a-time evaluation transform, in input order,
uint8 on the way to the device, images smaller than the CLIP tower takes upscaled, strips refused."""
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import write_image, write_random_image
from uiqa_plugin.api import score_paths, view_pipeline
from uiqa_plugin.data.image_io import decode_pixels, pixels_to_rgb_uint8, read_image
from uiqa_plugin.data.image_ops import resize
from uiqa_plugin.scoring.input_limits import minimum_input_side
from uiqa_plugin.scoring.loader import DeviceInput, ScoreImages


def reference_scores(model, paths):
    """The evaluation transform of ``view_pipeline`` on one image at a time, normalized on the host."""
    pipeline = view_pipeline(model)
    names = list(getattr(model, 'views', ['image']))
    out = []
    with torch.no_grad():
        for p in paths:
            sample = pipeline({'key': str(p), 'path': str(p), 'target': [], 'views': {}})
            inputs = {v: sample[v][None] for v in names}
            out.append(model(inputs if len(names) > 1 else inputs[names[0]])[0].tolist())
    return np.array(out)


@pytest.fixture
def mixed_sizes(tmp_path):
    """8-bit RGB, gray, RGBA and 16-bit images in three sizes, interleaved."""
    rng = np.random.default_rng(1)
    sizes = [(40, 52), (48, 64), (40, 52), (36, 36), (48, 64), (40, 52), (36, 36)]
    kinds = [((3,), 8), ((), 8), ((4,), 8), ((3,), 16)]  # RGB, grey, RGBA, 16-bit RGB
    return [write_random_image(tmp_path / f'{i:02d}.png', (*size, *kinds[i % 4][0]), rng, bits=kinds[i % 4][1])
            for i, size in enumerate(sizes)]


def test_uint8_on_the_way_is_exact():
    rng = np.random.RandomState(0)
    for arr in (rng.randint(0, 256, (5, 7, 3), dtype=np.uint8), rng.randint(0, 256, (5, 7), dtype=np.uint8)):
        buf = cv2.imencode('.png', arr[..., ::-1] if arr.ndim == 3 else arr)[1].tobytes()
        from uiqa_plugin.data.image_io import decode_image
        u8 = pixels_to_rgb_uint8(decode_pixels(buf))
        assert u8.dtype == np.uint8 and u8.shape == (5, 7, 3)
        on_device = DeviceInput('cpu')([torch.from_numpy(u8.transpose(2, 0, 1).copy())])[0]
        assert torch.equal(on_device, torch.from_numpy(decode_image(buf).transpose(2, 0, 1).copy()))
    assert pixels_to_rgb_uint8(rng.randint(0, 65536, (4, 4, 3)).astype(np.uint16)) is None
    assert pixels_to_rgb_uint8(rng.randint(0, 256, (4, 4, 4), dtype=np.uint8)) is None  # alpha needs float


def test_loader_sends_uint8_only_for_plain_8bit_images(mixed_sizes):
    dataset = ScoreImages(mixed_sizes, {'image': {}}, min_side=31)
    dtypes = [dataset[i][1]['image'].dtype for i in range(4)]
    assert dtypes == [torch.uint8, torch.uint8, torch.float32, torch.float32]  # RGB, gray, RGBA, 16-bit
    resized = ScoreImages(mixed_sizes[:1], {'image': {'size': 32}}, min_side=31)[0][1]['image']
    assert resized.dtype == torch.float32 and resized.shape == (3, 32, 32)


@pytest.mark.parametrize('batch_size,workers', [(1, 0), (3, 0), (2, 2)])
def test_same_scores_as_the_transform_in_input_order(tiny_metric_factory, mixed_sizes, batch_size, workers):
    metric = tiny_metric_factory('quality,sharpness')
    expected = reference_scores(metric, mixed_sizes)
    result = score_paths(metric, list(mixed_sizes), batch_size=batch_size, workers=workers, progress=False)
    assert [r['path'] for r in result.rows] == mixed_sizes and not result.failures
    got = np.array([[r['quality'], r['sharpness']] for r in result.rows])
    assert np.abs(got - expected).max() <= 1e-6


def test_normalization_on_the_device_matches_the_host(tiny_metric_factory, mixed_sizes):
    metric = tiny_metric_factory('quality', input_normalized=True)
    expected = reference_scores(metric, mixed_sizes)
    got = np.array([[r['quality']] for r in score_paths(metric, mixed_sizes, batch_size=2, workers=0,
                                                         progress=False).rows])
    assert np.abs(got - expected).max() <= 1e-6
    plain = np.array([[r['quality']] for r in score_paths(tiny_metric_factory('quality'), mixed_sizes,
                                                          workers=0, progress=False).rows])
    assert np.abs(plain - expected).max() <= 1e-6  # the same model seen through either normalization


def test_multi_view_model_with_derived_views(tiny_clip_files, mixed_sizes):
    from uiqa_plugin.archs.clip_uiqa_arch import CLIPUIQA
    torch.manual_seed(0)
    model = CLIPUIQA(views=['image', 'fragments', 'salient'], clip_model=tiny_clip_files['config'],
                     clip_pretrained=tiny_clip_files['openai'], prompt='fixed', head='regressor').eval()
    model.view_options = {'image': {}, 'fragments': {'grid': 2, 'patch': 16}, 'salient': {'size': 40}}
    model.output_names = ['score']
    expected = reference_scores(model, mixed_sizes)
    result = score_paths(model, mixed_sizes, batch_size=2, workers=0, progress=False)
    assert np.abs(np.array([[r['score']] for r in result.rows]) - expected).max() <= 1e-6


def resnet_min_side(downsampling_stages=3):
    """Independent count for open_clip's ModifiedResNet: stem conv k3 s2 p1 (ceil(H/2)), 2x2 average
    pool (floor), then three stride-2 stages (average pools, floor); the attention pool needs >= 1 token."""
    for side in range(1, 512):
        h = math.floor(math.ceil(side / 2) / 2)
        for _ in range(downsampling_stages):
            h //= 2
        if h >= 1:
            return side


def test_minimum_input_side_of_the_towers(tiny_clip_files):
    from uiqa_plugin.clip import load_clip
    rn = load_clip(tiny_clip_files['config'], tiny_clip_files['openai'])
    vit = load_clip(tiny_clip_files['vit_config'], tiny_clip_files['vit_weights'])
    assert minimum_input_side(rn) == resnet_min_side() == 31
    assert minimum_input_side(vit) == 16  # one 16x16 patch
    with torch.no_grad():
        assert rn.encode_image(torch.zeros(1, 3, 31, 200)).shape == (1, 32)
        with pytest.raises(RuntimeError):
            rn.encode_image(torch.zeros(1, 3, 30, 200))


def test_small_images_are_upscaled_and_strips_refused(tiny_metric_factory, tmp_path):
    rng = np.random.default_rng(2)
    good = write_random_image(tmp_path / 'good.png', (48, 64, 3), rng)
    dot = write_image(tmp_path / 'dot.png', np.array([[[200, 30, 90]]], dtype=np.uint8))
    thin = write_random_image(tmp_path / 'thin.png', (5, 200, 3), rng)
    strip = write_random_image(tmp_path / 'strip.png', (3, 50000, 3), rng)
    metric = tiny_metric_factory('quality')
    paths = [str(good), str(dot), str(strip), str(thin)]
    result = score_paths(metric, paths, batch_size=2, workers=0, progress=False)
    assert [r['path'] for r in result.rows] == [str(good), str(dot), str(thin)]
    assert len(result.failures) == 1 and result.failures[0][0] == str(strip)
    assert 'aspect ratio 16667:1' in result.failures[0][1]
    with torch.no_grad():
        for path, size in ((dot, (31, 31)), (thin, (31, 1240))):  # shorter side up to 31, aspect kept
            img = resize(read_image(path), size, 'bicubic')
            expected = metric(torch.from_numpy(img.transpose(2, 0, 1).copy())[None])[0, 0].item()
            assert [r['quality'] for r in result.rows if r['path'] == str(path)][0] == pytest.approx(expected, abs=1e-6)


def test_unreadable_files_in_workers_cost_one_row(tiny_metric_factory, mixed_sizes, tmp_path):
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8\xff\xe0 cut')
    paths = mixed_sizes[:2] + [str(broken)] + mixed_sizes[2:4]
    result = score_paths(tiny_metric_factory('quality'), paths, batch_size=2, workers=2, progress=False)
    assert [r['path'] for r in result.rows] == mixed_sizes[:4]
    assert result.failures[0][0] == str(broken) and 'cannot decode image' in result.failures[0][1]
    from uiqa_plugin.data.image_io import ImageReadError
    with pytest.raises(ImageReadError, match='broken.jpg'):
        score_paths(tiny_metric_factory('quality'), paths, workers=2, strict=True, progress=False)


def test_out_of_memory_on_one_image_costs_one_row(tiny_metric_factory, mixed_sizes):
    metric = tiny_metric_factory('quality')

    class TightMemory(torch.nn.Module):
        """The metric, failing like an allocator on inputs wider than 60 pixels."""

        def __init__(self):
            super().__init__()
            self.metric = metric
            self.attribute_names = metric.attribute_names

        def forward(self, images):
            if images.shape[-1] > 60:
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
            return self.metric(images)

    result = score_paths(TightMemory(), mixed_sizes, batch_size=2, workers=0, progress=False)
    wide = [p for p in mixed_sizes if Image.open(p).size[0] > 60]
    assert [r['path'] for r in result.rows] == [p for p in mixed_sizes if p not in wide]
    assert [p for p, _ in result.failures] == wide and all('out of memory' in m for _, m in result.failures)
    expected = reference_scores(metric, [r['path'] for r in result.rows])[:, 0]
    assert np.abs(np.array([r['quality'] for r in result.rows]) - expected).max() <= 1e-6
