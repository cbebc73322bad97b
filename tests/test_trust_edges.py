"""Trust at the edges: weight files that run nothing, resumes that never mix, huge images that cost one row."""
import csv
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import warnings
import zipfile
import zlib
from typing import Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import random_photo_folder, write_random_image
from uiqa_plugin.clip import ClipLoadError, load_clip, resolve_model_config
from uiqa_plugin.clip.pretrained import read_clip_state_dict, trusting
from uiqa_plugin.scoring import outputs
from uiqa_plugin.scoring.table import decode_path, encode_path
from uiqa_plugin.tools.score import main as score_main

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


class Payload(torch.nn.Module):
    """A submodule whose ``__setstate__`` runs when ``torch.jit.load`` loads the archive (it prints)."""

    def __init__(self):
        super().__init__()
        self.armed = True

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[bool, bool]:
        return (self.armed, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[bool, bool]) -> None:
        print('PAYLOAD RAN')
        self.armed = state[0]
        self.training = state[1]


def _scripted(config, path, payload=False, half=False, seed=0):
    import open_clip
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = open_clip.create_model(resolve_model_config(config), pretrained=None)
        if half:
            model = model.half()
        if payload:
            model.payload = Payload()
        torch.jit.script(model).save(str(path))
    return str(path)


@pytest.fixture(scope='module')
def archives(tiny_clip_files, tmp_path_factory):
    """A TorchScript archive with a __setstate__ payload, one whose pickle calls os.system, and a clean fp16 one."""
    folder = tmp_path_factory.mktemp('archives')
    evil = _scripted(tiny_clip_files['config'], folder / 'RN50.pt', payload=True)
    marker = folder / 'pickle_payload_ran'
    # the same archive with data.pkl replaced by a pickle that would run a shell command
    pickled = folder / 'pickled.pt'
    with zipfile.ZipFile(tiny_clip_files['torchscript']) as src, zipfile.ZipFile(pickled, 'w') as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith('/data.pkl'):
                data = b'cos\nsystem\n(V' + f'touch {marker}'.encode() + b'\ntR.'
            dst.writestr(item, data)
    half = _scripted(tiny_clip_files['config'], folder / 'half.pt', half=True, seed=1)
    return {'evil': evil, 'pickled': str(pickled), 'marker': str(marker), 'half': half}


def test_torchscript_weights_equal_jit_load_without_running_it(tiny_clip_files, archives, monkeypatch):
    for path in (tiny_clip_files['torchscript'], archives['half']):
        expected = torch.jit.load(path).state_dict()
        monkeypatch.setattr(torch.jit, 'load', lambda *a, **k: pytest.fail('torch.jit.load ran the archive'))
        state, info = read_clip_state_dict(path)
        monkeypatch.undo()
        assert info['format'] == 'TorchScript archive'
        expected = {k: v for k, v in expected.items() if k not in ('input_resolution', 'context_length', 'vocab_size')}
        assert list(state) == list(expected)
        assert all(state[k].dtype == v.dtype and torch.equal(state[k], v) for k, v in expected.items())


def test_a_torchscript_payload_is_refused_on_every_path_and_runs_only_when_trusted(tiny_clip_files, archives,
                                                                                   monkeypatch, capfd, tmp_path):
    from uiqa_plugin.api import load_trained_model
    from uiqa_plugin.clip import clear_shared_clip
    monkeypatch.setattr(torch.jit, 'load', lambda *a, **k: pytest.fail('torch.jit.load ran the archive'))
    for path, why in ((archives['evil'], 'its code defines __setstate__'),
                      (archives['pickled'], 'it refers to the Python object os.system')):
        with pytest.raises(ClipLoadError, match=rf'{osp.basename(path)}: refused, {why}.*--trust-checkpoint'):
            load_clip(tiny_clip_files['config'], path)
    assert not osp.exists(archives['marker'])
    # --clip-pretrained of uiqa-score (with an image to score: an empty folder stops before CLIP loads)
    write_random_image(tmp_path / 'photo.png', (40, 40, 3), np.random.default_rng(0))
    assert score_main([str(tmp_path), '--clip-model', tiny_clip_files['config'], '--clip-pretrained',
                       archives['evil'], '--device', 'cpu', '--no-progress']) == 2
    err = capfd.readouterr().err
    assert 'RN50.pt: refused' in err and '--trust-checkpoint' in err and 'Traceback' not in err
    # a checkpoint whose network_g names the archive (the checkpoint itself is plain tensors)
    net_opt = {'type': 'CLIPIQAPlus', 'clip_model': tiny_clip_files['config'],
               'clip_pretrained': archives['evil'], 'prompt_opt': {'n_ctx': 4}}
    ckpt = tmp_path / 'net_g.pth'
    torch.save({'params': {'prompt_learner.ctx': torch.zeros(1, 4, 32)}, 'network_g': net_opt}, ckpt)
    with pytest.raises(ClipLoadError, match='RN50.pt: refused'):
        load_trained_model(str(ckpt), device='cpu')
    assert score_main([str(tmp_path), '--checkpoint', str(ckpt), '--device', 'cpu', '--no-progress']) == 2
    assert 'RN50.pt: refused' in capfd.readouterr().err
    # trusted on purpose: the archive loads through torch.jit.load, which runs its code
    monkeypatch.undo()
    clear_shared_clip()
    with trusting():
        clip = load_clip(tiny_clip_files['config'], archives['evil'])
    assert 'PAYLOAD RAN' in capfd.readouterr().out and 'trusted' in clip.load_info['format']
    with trusting(False):  # the trust ends with its block
        clear_shared_clip()
        with pytest.raises(ClipLoadError):
            load_clip(tiny_clip_files['config'], archives['evil'])


@pytest.mark.slow
def test_test_py_refuses_a_payload_archive_named_in_the_option_file(demo_data, archives, tmp_path):
    from helpers import demo_options, write_yaml
    opt = demo_options(demo_data)
    opt['network_g']['clip_pretrained'] = archives['evil']
    test_opt = {'name': 'evil_archive', 'model_type': 'IQAModel', 'num_gpu': 0, 'manual_seed': 0,
                'network_g': opt['network_g'], 'datasets': {'test': dict(opt['datasets']['val'], split='validation')},
                'path': {}, 'val': {'save_predictions': False}}
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, osp.join(REPO, 'uiqa_plugin', 'test.py'), '-opt',
                          write_yaml(tmp_path, test_opt, 't.yml')], capture_output=True, text=True, timeout=300,
                         cwd=str(tmp_path), env=env)
    assert out.returncode != 0 and 'PAYLOAD RAN' not in out.stdout
    assert 'RN50.pt: refused' in out.stderr and 'Traceback' not in out.stderr, out.stderr[-3000:]


# ----------------------------------------------------------------------------- score tables: lock, record, resume

@pytest.fixture
def photos(tmp_path):
    return random_photo_folder(tmp_path / 'sp', [(48, 64)] * 4, 0)


def score(tiny_clip_files, args):
    return score_main(args + ['--clip-model', tiny_clip_files['config'], '--clip-pretrained',
                              tiny_clip_files['openai'], '--device', 'cpu', '--no-progress', '--workers', '0'])


def read_rows(path):
    with open(path, encoding='utf-8', newline='') as f:
        return list(csv.DictReader(f))


def test_a_second_writer_of_one_table_is_refused_with_the_holders_pid(tiny_clip_files, photos, tmp_path, capsys):
    out = tmp_path / 'scores.csv'
    with outputs.OutputLock(str(tmp_path / '.' / 'scores.csv')):  # another spelling of the same table
        assert score(tiny_clip_files, [str(photos), '--out', str(out), '--resume']) == 2
        assert f'another uiqa-score run is writing this table (pid {os.getpid()} on' in capsys.readouterr().err
        assert not out.exists()
    assert score(tiny_clip_files, [str(photos), '--out', str(out)]) == 0  # released: the next run writes


def test_resume_refuses_rows_of_another_model_naming_the_difference(tiny_clip_files, photos, tmp_path, capsys):
    out = tmp_path / 'scores.csv'
    assert score(tiny_clip_files, [str(photos), '--out', str(out)]) == 0
    record = json.loads(open(f'{out}.run.json').read())
    assert record['made_by']['quick_gelu'] is False and record['failed'] == []
    before = out.read_text()
    for flag, key in (('--quick-gelu', 'quick_gelu: false vs true'), ('--keep-pos-embed', 'keep_pos_embed'),
                      ('--crop-border=2', 'crop_border: 0 vs 2'), ('--precision=fp32-fused', 'precision: "fp32" vs')):
        assert score(tiny_clip_files, [str(photos), '--out', str(out), '--resume', flag]) == 2
        err = capsys.readouterr().err
        assert 'its rows were made by another model or preprocessing' in err and key in err, err
    assert score(tiny_clip_files, [str(photos), '-a', 'Good photo.|Bad photo.', '--out', str(out), '--resume']) == 2
    assert out.read_text() == before
    os.remove(f'{out}.run.json')  # a table without its record cannot be checked: refused, not trusted
    assert score(tiny_clip_files, [str(photos), '--out', str(out), '--resume']) == 2
    assert 'has no record of what made its rows' in capsys.readouterr().err


def test_resume_compares_real_paths(tiny_clip_files, photos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert score(tiny_clip_files, ['sp', '--out', 'scores.csv']) == 0
    assert score(tiny_clip_files, ['./sp/', '--out', './scores.csv', '--resume']) == 0
    rows = read_rows(tmp_path / 'scores.csv')
    assert len(rows) == 4 and len({osp.realpath(r['path']) for r in rows}) == 4


def test_a_full_disk_while_streaming_is_one_message(tiny_clip_files, photos, tmp_path, monkeypatch, capsys):
    real = outputs.PartWriter._write

    def full(self, record):
        if 'path' in record:
            raise OSError(28, 'No space left on device')
        return real(self, record)
    monkeypatch.setattr(outputs.PartWriter, '_write', full)
    assert score(tiny_clip_files, [str(photos), '--out', str(tmp_path / 'scores.csv')]) == 1
    err = capsys.readouterr().err
    assert 'cannot write part file (No space left on device)' in err and 'rerun with --resume' in err


# ----------------------------------------------------------------------------- huge and failing images

def huge_png(path, side):
    """A valid PNG of side x side grey pixels in a few hundred KB, written without ever holding the pixels."""
    def chunk(kind, data):
        return len(data).to_bytes(4, 'big') + kind + data + zlib.crc32(kind + data).to_bytes(4, 'big')
    packer = zlib.compressobj(9)
    row = b'\0' * (side + 1)
    body = b''.join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = side.to_bytes(4, 'big') * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', body) + chunk(b'IEND', b''))
    return path


def test_huge_images_cost_one_row_and_resume_skips_them(tiny_clip_files, photos, tmp_path, capsys):
    huge_png(photos / 'huge.png', 13000)  # 169 megapixels in a small file
    with open(photos / 'mislabelled.jpg', 'wb') as f:
        f.truncate(40 * 10 ** 9)  # 40 GB, sparse: no disk used, never read
    out = tmp_path / 'scores.csv'
    assert score(tiny_clip_files, [str(photos), '--out', str(out)]) == 1
    err = capsys.readouterr().err
    assert '13000x13000 pixels (169.0 megapixels) is beyond the budget of 50 megapixels' in err
    assert 'mislabelled.jpg: 40.0 GB is more than an image within the budget' in err
    assert len(read_rows(out)) == 4
    failed = dict(json.loads(open(f'{out}.run.json').read())['failed'])
    assert sorted(osp.basename(p) for p in failed) == ['huge.png', 'mislabelled.jpg']
    assert score(tiny_clip_files, [str(photos), '--out', str(out), '--resume']) == 1  # skipped, still named
    err = capsys.readouterr().err
    assert '2 image(s) could not be scored before and are skipped' in err and 'huge.png' in err
    os.remove(photos / 'mislabelled.jpg')
    # a low budget refuses every image; a retry with room for them scores them, never the huge one
    low = tmp_path / 'low.csv'
    assert score(tiny_clip_files, [str(photos), '--out', str(low), '--max-megapixels', '0.001']) == 1
    assert read_rows(low) == [] and 'beyond the budget of 0.001 megapixels' in capsys.readouterr().err
    assert score(tiny_clip_files, [str(photos), '--out', str(low), '--resume', '--retry-failed']) == 1
    assert len(read_rows(low)) == 4


def test_large_jpegs_decode_reduced_when_the_model_resizes_anyway(tmp_path):
    from uiqa_plugin.scoring.loader import ScoreImages
    Image.fromarray(np.random.RandomState(1).randint(0, 256, (1200, 1600, 3), dtype=np.uint8)).save(
        tmp_path / 'big.jpg', quality=95)
    resize_first = [{'type': 'LoadImage'}, {'type': 'Resize', 'keys': ['image'], 'short_side': 224},
                    {'type': 'Normalize', 'mean': None, 'std': None, 'keys': ['image']},
                    {'type': 'Collect', 'keys': ['image']}]
    _, sample, error = ScoreImages([str(tmp_path / 'big.jpg')], specs=resize_first, max_pixels=500_000)[0]
    assert error is None and tuple(sample['image'].shape) == (3, 224, 299)
    _, sample, error = ScoreImages([str(tmp_path / 'big.jpg')], max_pixels=500_000)[0]  # full resolution
    assert sample is None and '1600x1200 pixels (1.9 megapixels) is beyond the budget' in error


def test_every_stage_of_one_image_fails_alone(tiny_metric_factory, photos, monkeypatch):
    from uiqa_plugin.api import score_paths
    from uiqa_plugin.data import device_input
    from uiqa_plugin.scoring import loader
    real_call = device_input.DeviceInput.__call__
    calls = []

    def oom_on_second(self, views):
        calls.append(1)
        if len(calls) == 2:  # the uint8 -> float step on the device
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB")
        return real_call(self, views)
    monkeypatch.setattr(device_input.DeviceInput, '__call__', oom_on_second)
    real_load = loader.ScoreImages.load

    def failing_load(self, path):
        if path.endswith('img3.png'):
            raise MemoryError
        return real_load(self, path)
    monkeypatch.setattr(loader.ScoreImages, 'load', failing_load)
    result = score_paths(tiny_metric_factory(), [str(photos)], workers=0, progress=False)
    assert [osp.basename(r['path']) for r in result.rows] == ['img0.png', 'img2.png']
    messages = {osp.basename(p): m for p, m in result.failures}
    assert 'out of memory on cpu' in messages['img1.png'] and 'out of memory' in messages['img3.png']


def test_a_nan_score_is_a_failure_of_its_image_never_a_number(tiny_metric_factory, photos, tmp_path):
    from uiqa_plugin.api import score_paths
    metric = tiny_metric_factory()
    real = metric.forward
    metric.forward = lambda images: real(images) * (images.mean() > 0.5).float() / (images.mean() > 0.5).float()
    result = score_paths(metric, [str(photos)], workers=0, progress=False)
    assert all(np.isfinite(r['quality']) for r in result.rows)
    assert result.failures and all('non-finite score (nan)' in m for _, m in result.failures)
    assert len(result.rows) + len(result.failures) == 4


# ----------------------------------------------------------------------------- weights that are not numbers

def test_non_finite_and_malformed_checkpoints_are_refused_naming_the_key(tiny_clip_files, tmp_path):
    from uiqa_plugin.api import load_trained_model
    from uiqa_plugin.checkpoint_io import NonFiniteWeightsError
    net_opt = {'type': 'CLIPIQAPlus', 'clip_model': tiny_clip_files['config'],
               'clip_pretrained': tiny_clip_files['openai'], 'prompt_opt': {'n_ctx': 4}}
    good = torch.zeros(1, 4, 32)
    bad = good.clone()
    bad[0, 1, 2] = float('nan')
    for name, content, match in (
            ('nan.pth', {'params': {'prompt_learner.ctx': bad}}, r'\(params\): NaN or infinite weights in '
                                                                  r'prompt_learner.ctx \(1 of 128 values\)'),
            ('ema.pth', {'params': {'prompt_learner.ctx': good},
                         'params_ema': {'prompt_learner.ctx': torch.full_like(good, float('inf'))}},
             r'\(params_ema\): NaN or infinite weights in prompt_learner.ctx \(128 of 128')):
        torch.save({**content, 'network_g': net_opt}, tmp_path / name)
        with pytest.raises(NonFiniteWeightsError, match=match):
            load_trained_model(str(tmp_path / name), device='cpu')
    torch.save({'params': good, 'network_g': net_opt}, tmp_path / 'tensor.pth')
    with pytest.raises(ValueError, match=r'tensor.pth: "params" must be a state dict .* got Tensor'):
        load_trained_model(str(tmp_path / 'tensor.pth'), device='cpu')


@pytest.mark.parametrize('ctx, message', [
    (torch.full((16, 32), float('nan')), r'NaN or infinite weights in \(the tensor\) \(512 of 512'),
    (torch.zeros(0, 32), 'has 0 context tokens; CLIP reads 77 tokens in all, so a context has 1 to 72'),
    (torch.zeros(100000, 1), 'has 100000 context tokens'),
    (torch.zeros(16, 32, dtype=torch.long), r'\(the tensor\) holds torch.int64 values'),
])
def test_convert_refuses_contexts_no_clip_can_take(ctx, message, tmp_path, capsys):
    from uiqa_plugin.tools.convert import main as convert_main
    torch.save(ctx, tmp_path / 'ctx.pth')
    assert convert_main([str(tmp_path / 'ctx.pth'), str(tmp_path / 'out.pth')]) == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert __import__('re').search(message, err), err
    assert not (tmp_path / 'out.pth').exists()


def test_convert_names_an_output_it_cannot_write(tmp_path, capsys):
    from uiqa_plugin.tools.convert import main as convert_main
    torch.save(torch.zeros(16, 512), tmp_path / 'ctx.pth')
    assert convert_main([str(tmp_path / 'ctx.pth'), str(tmp_path)]) == 2
    assert f'{tmp_path}: is a folder; name the checkpoint file' in capsys.readouterr().err
    code = convert_main([str(tmp_path / 'ctx.pth'), '/proc/clipiqa_plus.pth'])
    assert code in (1, 2) and '/proc/clipiqa_plus.pth: cannot write' in capsys.readouterr().err


def test_checkpoints_are_written_with_the_permissions_the_umask_gives(tmp_path):
    from uiqa_plugin.checkpoint_io import save_checkpoint
    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            save_checkpoint({'x': torch.zeros(1)}, tmp_path / f'{mask:o}.pth')
        finally:
            os.umask(old)
        assert os.stat(tmp_path / f'{mask:o}.pth').st_mode & 0o777 == mode


# ----------------------------------------------------------------------------- names and text from users

def test_table_cells_are_utf8_safe_and_exact_names_come_back(tmp_path):
    from uiqa_plugin.scoring.table import read_table, write_table
    names = [os.fsdecode(b'caf\xe9.png'), '=HYPERLINK("x").png', '"quoted".png', 'new\nline.png', 'plain.png',
             'esc\x1b[2J.png']
    out = tmp_path / 't.csv'
    write_table([{'path': n, 'quality': 0.5} for n in names], ['path', 'quality'], str(out))
    raw = out.read_bytes()
    raw.decode('utf-8')  # every reader opens it
    cells = [row['path'] for row in csv.DictReader(raw.decode('utf-8').splitlines())]
    assert cells[-2] == 'plain.png' and all(c.startswith('"') for i, c in enumerate(cells) if i != 4)
    assert b'\x1b' not in raw and not any(c.startswith(('=', '+', '-', '@')) for c in cells)
    assert [r['path'] for r in read_table(str(out), ['quality'])] == names
    assert all(decode_path(encode_path(n)) == n for n in names)


def test_file_names_and_prompts_reach_the_terminal_escaped(tiny_clip_files, tmp_path, capsys):
    folder = tmp_path / 'in'
    folder.mkdir()
    (folder / 'clear\x1b[2Jscreen.png').write_bytes(b'not a png')
    assert score(tiny_clip_files, [str(folder)]) == 1
    err = capsys.readouterr().err
    assert '\x1b' not in err and 'clear\\x1b[2Jscreen.png' in err
    assert score(tiny_clip_files, [str(folder), '-a', 'Good\nphoto.|Bad photo.']) == 2
    err = capsys.readouterr().err
    assert 'prompts are one line of text' in err and 'Traceback' not in err and '_csv' not in err


def test_quoted_prompts_keep_their_quotes():
    from uiqa_plugin.prompts import resolve_attributes
    attrs = resolve_attributes(r'quality,"A \"quoted\" photo.|Bad photo."')
    assert attrs[1].pairs == (('A "quoted" photo.', 'Bad photo.'),)
    with pytest.raises(ValueError, match='cannot be split into attributes'):
        resolve_attributes('quality,"unclosed')


def test_annotation_paths_leaving_dataroot_are_named_and_files_are_not_echoed(tmp_path):
    from uiqa_plugin.data.csv_iqa_dataset import CSVIQADataset
    root = tmp_path / 'root'
    root.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'outside.png')
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / 'inside.png')
    meta = tmp_path / 'meta.csv'
    meta.write_text(f'name,mos\ninside.png,3\n../outside.png,4\n{tmp_path / "outside.png"},2\n')
    opt = {'name': 'probe', 'type': 'CSVIQADataset', 'phase': 'test', 'dataroot': str(root), 'meta_file': str(meta),
           'target_columns': ['mos']}
    with pytest.warns(UserWarning, match=r"2 image name\(s\) in .*meta.csv lead outside dataroot .*'../outside.png'"):
        CSVIQADataset(opt)
    secret = tmp_path / 'passwd'
    secret.write_text('root:x:0:0:root:/root:/bin/bash\n')
    with pytest.raises(ValueError) as info:
        CSVIQADataset(dict(opt, meta_file=str(secret)))
    assert 'root:x' not in str(info.value) and 'is it an annotation table?' in str(info.value)


# ----------------------------------------------------------------------------- BasicSR's metric, from files

def test_crop_border_and_y_channel_equal_calculate_clipiqa_on_saved_images(tiny_clip_files, tmp_path, capsys):
    import cv2

    from uiqa_plugin.metrics.clipiqa_metric import calculate_clipiqa
    rng = np.random.RandomState(2)
    folder = tmp_path / 'sr'
    folder.mkdir()
    images = {f'{i}.png': rng.randint(0, 256, (72 + 8 * i, 96, 3), dtype=np.uint8) for i in range(3)}
    for name, bgr in images.items():
        cv2.imwrite(str(folder / name), bgr)  # as BasicSR's imwrite saves its outputs
    out = tmp_path / 'scores.csv'
    assert score(tiny_clip_files, [str(folder), '--out', str(out), '--crop-border', '4', '--y-channel']) == 0
    got = {osp.basename(r['path']): float(r['quality']) for r in read_rows(out)}
    for name, bgr in images.items():
        expected = calculate_clipiqa(bgr, crop_border=4, test_y_channel=True, clip_model=tiny_clip_files['config'],
                                     clip_pretrained=tiny_clip_files['openai'], device='cpu')
        assert abs(got[name] - expected) < 1e-6, (name, got[name], expected)
    plain = tmp_path / 'plain.csv'
    assert score(tiny_clip_files, [str(folder), '--out', str(plain)]) == 0
    assert all(abs(float(r['quality']) - got[osp.basename(r['path'])]) > 1e-6 for r in read_rows(plain))


def test_crop_border_and_y_channel_take_alpha_and_16_bit_images_as_plain_scoring_does(tiny_clip_files, tmp_path):
    """--crop-border on RGBA, gray+alpha and 16-bit files equals plain scoring of the cropped file; --y-channel
    equals calculate_clipiqa on the image plain scoring decodes (alpha over white, [0, 1])."""
    from helpers import random_pixels, write_image
    from uiqa_plugin.data.image_io import read_image
    from uiqa_plugin.metrics.clipiqa_metric import calculate_clipiqa
    rng = np.random.default_rng(4)
    kinds = {'rgba.png': ((70, 90, 4), 8, 'RGBA'), 'gray_alpha.png': ((64, 80, 2), 8, 'LA'),
             'rgb16.png': ((66, 84, 3), 16, None), 'rgba16.png': ((68, 88, 4), 16, None),
             'gray16.png': ((72, 72), 16, None)}
    full, cropped = tmp_path / 'full', tmp_path / 'cropped'
    full.mkdir()
    cropped.mkdir()
    for name, (shape, bits, mode) in kinds.items():
        pixels = random_pixels(rng, shape, bits)
        write_image(full / name, pixels, mode)
        write_image(cropped / name, np.ascontiguousarray(pixels[3:-3, 3:-3]), mode)
    tables = {}
    for label, args in (('crop', [str(full), '--crop-border', '3']), ('plain', [str(cropped)]),
                        ('y', [str(full), '--crop-border', '3', '--y-channel'])):
        tables[label] = tmp_path / f'{label}.csv'
        assert score(tiny_clip_files, args + ['--out', str(tables[label]), '--workers', '0']) == 0, label
    got = {label: {osp.basename(r['path']): float(r['quality']) for r in read_rows(path)}
           for label, path in tables.items()}
    assert sorted(got['crop']) == sorted(kinds)
    for name in kinds:
        assert abs(got['crop'][name] - got['plain'][name]) < 1e-6, (name, got['crop'][name], got['plain'][name])
        expected = calculate_clipiqa(read_image(full / name)[..., ::-1], crop_border=3, test_y_channel=True,
                                     max_value=1.0, clip_model=tiny_clip_files['config'],
                                     clip_pretrained=tiny_clip_files['openai'], device='cpu')
        assert abs(got['y'][name] - expected) < 1e-6, (name, got['y'][name], expected)


def test_a_prepared_image_is_decoded_at_full_size():
    """A crop counts the file's pixels: with ``prepare`` a JPEG is never decoded reduced for a resize."""
    from uiqa_plugin.scoring.loader import ScoreImages
    specs = [{'type': 'LoadImage'}, {'type': 'Resize', 'keys': ['image'], 'size': 224},
             {'type': 'Collect', 'keys': ['image']}]
    assert ScoreImages([], specs=specs).reduce_to is not None
    assert ScoreImages([], specs=specs, prepare=np.asarray).reduce_to is None


def test_a_one_output_user_arch_writes_only_its_column(tiny_clip_files, tmp_path, photos):
    from basicsr.utils.registry import ARCH_REGISTRY

    from uiqa_plugin.archs.clip_uiqa_arch import CLIPIQAPlus
    name = 'OneOutputProbeArch'
    if name not in ARCH_REGISTRY:
        class OneOutputProbeArch(CLIPIQAPlus):  # three attributes, one column: a mean over them
            def forward(self, images):
                return super().forward(images).mean(dim=1, keepdim=True)
        ARCH_REGISTRY.register(OneOutputProbeArch)
    net_opt = {'type': name, 'attributes': 'quality,sharpness,noisiness', 'clip_model': tiny_clip_files['config'],
               'clip_pretrained': tiny_clip_files['openai'], 'prompt_opt': {'n_ctx': 4}}
    net = ARCH_REGISTRY.get(name)(**{k: v for k, v in net_opt.items() if k != 'type'})
    torch.save({'params': net.state_dict(), 'network_g': net_opt}, tmp_path / 'one.pth')
    out = tmp_path / 'one.csv'
    assert score_main([str(photos), '--checkpoint', str(tmp_path / 'one.pth'), '--out', str(out), '--device', 'cpu',
                       '--no-progress', '--workers', '0']) == 0
    rows = read_rows(out)
    assert list(rows[0]) == ['path', 'score'] and all(r['score'] for r in rows)



WORKER_SCRIPT = '''
import functools, os, sys, time
from torch.utils.data import DataLoader, Dataset
from uiqa_plugin.scoring.loader import end_with_parent

class Slow(Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, i):
        open(os.path.join(sys.argv[1], str(os.getpid())), 'w').close()
        time.sleep(10)  # a long decode
        return i

for _ in DataLoader(Slow(), batch_size=None, num_workers=2,
                    worker_init_fn=functools.partial(end_with_parent, os.getpid())):
    pass
'''


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(')')[-1].split()[0] != 'Z'  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux only')
def test_decode_workers_end_with_a_killed_parent(tmp_path):
    import signal
    import time
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    parent = subprocess.Popen([sys.executable, '-c', WORKER_SCRIPT, str(tmp_path)], env=env)
    deadline = time.monotonic() + 60
    while len(os.listdir(tmp_path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = [int(name) for name in os.listdir(tmp_path)]
    assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    # without the kernel's signal, each worker would finish its 10 s decode first: well within it, all are gone
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


def test_clip_weights_with_nan_are_refused_naming_the_key(tiny_clip_files, tmp_path):
    state = torch.load(tiny_clip_files['openai'], weights_only=True)
    state['visual.layer1.0.conv1.weight'][0, 0, 0, 0] = float('inf')
    torch.save(state, tmp_path / 'inf.pt')
    with pytest.raises(ClipLoadError, match=r'inf.pt: NaN or infinite weights in visual.layer1.0.conv1.weight '
                                            r'\(1 of \d+ values\)'):
        load_clip(tiny_clip_files['config'], str(tmp_path / 'inf.pt'))


def test_an_archive_that_unpacks_to_more_than_it_holds_is_refused(tiny_clip_files, tmp_path, monkeypatch):
    from uiqa_plugin.clip import torchscript
    monkeypatch.setattr(torchscript, '_MIN_ENTRY_LIMIT', 1 << 20)  # a 10 MB bomb is enough to show the rule
    bomb = tmp_path / 'bomb.pt'
    shutil.copy(tiny_clip_files['torchscript'], bomb)
    prefix = zipfile.ZipFile(bomb).namelist()[0].split('/')[0]
    with zipfile.ZipFile(bomb, 'a', compression=zipfile.ZIP_DEFLATED) as zf, zf.open(f'{prefix}/code/x.py', 'w') as f:
        for _ in range(10):
            f.write(b'\0' * (1 << 20))
    assert osp.getsize(bomb) < osp.getsize(tiny_clip_files['torchscript']) + (1 << 20)
    with pytest.raises(ClipLoadError, match=r'bomb.pt: .*its entry .*code/x.py unpacks to 10485760 bytes'):
        read_clip_state_dict(str(bomb))
