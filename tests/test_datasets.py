"""Registered IQA datasets read their real annotation formats; bad input gives clear errors."""
import csv
import os
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

import uiqa_plugin  # noqa: F401  (before basicsr)
from basicsr.data import build_dataset
from basicsr.utils.registry import DATASET_REGISTRY
from uiqa_plugin.data.device_input import DeviceInput
from uiqa_plugin.data.image_io import ImageReadError
from uiqa_plugin.data.table_io import AnnotationError, read_table

KONIQ_HEADER = ['image_name', 'c1', 'c2', 'c3', 'c4', 'c5', 'c_total', 'MOS', 'SD', 'set']


def write_images(folder, names, size=(40, 30)):
    """Small distinct RGB images (colour encodes the index); returns {name: uint8 array}."""
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for i, name in enumerate(names):
        arr = np.zeros((size[1], size[0], 3), np.uint8)
        arr[..., 0] = 10 * i
        arr[..., 1] = np.arange(size[0], dtype=np.uint8)[None, :] * 3
        arr[::2, :, 2] = 200
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(arr).save(path)
        arrays[name] = arr
    return arrays


def write_csv(path, header, rows):
    with open(path, 'w', newline='') as f:
        csv.writer(f).writerows([header, *rows])
    return str(path)


def koniq_fixture(tmp_path, sets=('training', 'training', 'training', 'validation', 'test')):
    names = [f'{100 + i}.png' for i in range(len(sets))]
    write_images(tmp_path / '1024x768', names)
    rows = [[n, 1, 2, 3, 4, 5, 15, 10.0 * (i + 1), 0.7, s] for i, (n, s) in enumerate(zip(names, sets))]
    csv_path = write_csv(tmp_path / 'koniq10k_distributions_sets.csv', KONIQ_HEADER, rows)
    return csv_path, names


def dataset(type_, **opt):
    return build_dataset({'name': 'fixture', 'type': type_, **opt})


def write_xlsx(path, rows):
    """A minimal .xlsx (shared strings for text, numbers inline), as Excel writes it."""
    strings, sheet_rows = [], []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            ref = f'{chr(ord("A") + c)}{r}'
            if isinstance(value, str):
                strings.append(value)
                cells.append(f'<c r="{ref}" t="s"><v>{len(strings) - 1}</v></c>')
            else:
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
        sheet_rows.append(f'<row r="{r}">{"".join(cells)}</row>')
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel_ns = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('xl/workbook.xml', f'<workbook {ns} {rel_ns}><sheets>'
                    '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>')
        zf.writestr('xl/_rels/workbook.xml.rels',
                    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                    '<Relationship Id="rId1" Type="worksheet" Target="worksheets/sheet1.xml"/></Relationships>')
        zf.writestr('xl/sharedStrings.xml', f'<sst {ns}>' + ''.join(f'<si><t>{s}</t></si>' for s in strings) + '</sst>')
        zf.writestr('xl/worksheets/sheet1.xml',
                    f'<worksheet {ns}><sheetData>{"".join(sheet_rows)}</sheetData></worksheet>')
    return str(path)


# --- formats ------------------------------------------------------------------------------------


def test_basicsr_finds_our_dataset_classes_by_name():
    from uiqa_plugin.data.ava_dataset import AVADataset
    from uiqa_plugin.data.csv_iqa_dataset import CSVIQADataset
    from uiqa_plugin.data.image_folder_dataset import ImageFolderDataset
    from uiqa_plugin.data.koniq10k_dataset import KonIQ10kDataset
    from uiqa_plugin.data.live_itw_dataset import LIVEItWDataset
    from uiqa_plugin.data.spaq_dataset import SPAQDataset
    for cls in (KonIQ10kDataset, SPAQDataset, LIVEItWDataset, AVADataset, CSVIQADataset, ImageFolderDataset):
        assert DATASET_REGISTRY.get(cls.__name__) is cls


def test_koniq_reads_split_targets_and_views(tmp_path):
    csv_path, names = koniq_fixture(tmp_path)
    views = {'image': {}, 'fragments': {'grid': 2, 'patch': 8}, 'salient': {'size': 16}}
    train = dataset('KonIQ10kDataset', dataroot=str(tmp_path / '1024x768'), meta_file=csv_path, phase='train',
                    views=views)
    assert [s['key'] for s in train.samples] == names[:3]  # phase train -> set 'training'
    item = train[1]
    assert item['image'].shape == (3, 30, 40) and item['fragments'].shape == (3, 16, 16)
    assert item['salient'].shape == (3, 16, 16)
    assert item['target'].dtype == torch.float32 and item['target'].tolist() == pytest.approx([0.20])
    assert item['key'] == names[1] and item['path'] == str(tmp_path / '1024x768' / names[1])
    assert train.denormalize(item['target']).tolist() == pytest.approx([20.0])
    assert train.target_names == ['MOS']
    # meta_file found next to the image folder; val phase -> 'validation'; one view by default
    val = dataset('KonIQ10kDataset', dataroot=str(tmp_path / '1024x768'), phase='val')
    assert [s['key'] for s in val.samples] == [names[3]]
    # the normalization is left to the device (device_normalize, default): the batch carries it
    assert set(val[0]) == {'image', 'target', 'key', 'path', 'device_mean', 'device_std'}
    assert len(dataset('KonIQ10kDataset', dataroot=str(tmp_path / '1024x768'), phase='test', split='all')) == 5
    # the image view is the RGB file, CLIP-normalized
    raw = np.asarray(Image.open(tmp_path / '1024x768' / names[3]), np.float32) / 255
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    item = val[0]
    assert item['image'].dtype == torch.uint8
    image = DeviceInput.from_batch('cpu', item).convert(item['image'][None])[0]
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), (raw - mean) / std, atol=1e-5)


def test_eval_is_deterministic_and_train_flips(tmp_path):
    csv_path, _ = koniq_fixture(tmp_path, sets=('training',) * 5)
    views = {'image': {}, 'fragments': {'grid': 2, 'patch': 8}}
    test = dataset('KonIQ10kDataset', dataroot=str(tmp_path / '1024x768'), meta_file=csv_path, phase='test',
                   split='training', views=views)
    assert torch.equal(test[0]['fragments'], test[0]['fragments'])
    train = dataset('KonIQ10kDataset', dataroot=str(tmp_path / '1024x768'), meta_file=csv_path, phase='train',
                    views=views)
    np.random.seed(0)
    flipped = [not torch.equal(train[0]['image'], test[0]['image']) for _ in range(16)]
    assert any(flipped) and not all(flipped)


def test_spaq_reads_the_xlsx_with_attributes_and_random_split(tmp_path):
    names = [f'{i:05d}.jpg' for i in range(1, 11)]
    write_images(tmp_path / 'TestImage', names)
    header = ['Image name', 'MOS', 'Brightness', 'Colorfulness', 'Contrast', 'Noisiness', 'Sharpness']
    rows = [[n, 40.0 + i, 50.0, 60.0, 70.0, 20.0 + i, 80.0] for i, n in enumerate(names)]
    meta = write_xlsx(tmp_path / 'MOS and Image attribute scores.xlsx', [header, *rows])
    assert read_table(meta)[0] == header
    opt = dict(dataroot=str(tmp_path / 'TestImage'), meta_file=meta, phase='train',
               target_columns=['MOS', 'Noisiness'], split_ratios={'training': 0.8, 'test': 0.2}, split_seed=3)
    train = dataset('SPAQDataset', split='training', **opt)
    test = dataset('SPAQDataset', split='test', **opt)
    train_keys, test_keys = {s['key'] for s in train.samples}, {s['key'] for s in test.samples}
    assert len(train_keys) == 8 and len(test_keys) == 2 and not train_keys & test_keys
    assert train_keys | test_keys == set(names)
    assert {s['key'] for s in dataset('SPAQDataset', split='training', **opt).samples} == train_keys  # seeded
    sample = next(s for s in test.samples)
    i = names.index(sample['key'])
    np.testing.assert_allclose(sample['target'], [(40 + i) / 100, (20 + i) / 100], rtol=1e-6)
    assert train.target_names == ['MOS', 'Noisiness']
    with pytest.raises(ValueError, match='no split column.*split_ratios'):
        dataset('SPAQDataset', dataroot=str(tmp_path / 'TestImage'), meta_file=meta, split='training')


def test_live_itw_skips_the_first_seven_entries(tmp_path):
    names = [f't{i}.bmp' for i in range(7)] + ['10.bmp', '11.bmp', '12.bmp']
    write_images(tmp_path / 'Images', names[7:])  # the training images are not even needed
    os.makedirs(tmp_path / 'Data')
    cells = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cells[i, 0] = np.array([n])
    savemat(tmp_path / 'Data' / 'AllImages_release.mat', {'AllImages_release': cells})
    mos = np.array([[1, 2, 3, 4, 5, 6, 7, 55.5, 66.25, 12.0]])
    savemat(tmp_path / 'Data' / 'AllMOS_release.mat', {'AllMOS_release': mos})
    ds = dataset('LIVEItWDataset', dataroot=str(tmp_path / 'Images'),
                 meta_file=str(tmp_path / 'Data' / 'AllImages_release.mat'))
    assert [s['key'] for s in ds.samples] == ['10.bmp', '11.bmp', '12.bmp']
    np.testing.assert_allclose([s['target'][0] for s in ds.samples], [0.555, 0.6625, 0.12], rtol=1e-6)
    assert ds[2]['image'].shape == (3, 30, 40)
    savemat(tmp_path / 'Data' / 'AllMOS_release.mat', {'AllMOS_release': mos[:, :9]})
    with pytest.raises(AnnotationError, match='lists 10 images but .*has 9 scores'):
        dataset('LIVEItWDataset', dataroot=str(tmp_path / 'Images'),
                meta_file=str(tmp_path / 'Data' / 'AllImages_release.mat'))


def test_ava_mean_score_distribution_and_split_file(tmp_path):
    votes = {'953619': [0, 1, 5, 17, 38, 36, 15, 6, 5, 1], '953958': [10, 7, 15, 26, 26, 21, 10, 8, 1, 2],
             '954184': [0, 0, 4, 8, 41, 56, 10, 3, 4, 0]}
    lines = [f'{i + 1} {k} {" ".join(map(str, v))} 1 22 1396' for i, (k, v) in enumerate(votes.items())]
    (tmp_path / 'AVA.txt').write_text('\n'.join(lines) + '\n')
    write_images(tmp_path / 'images', [f'{k}.jpg' for k in votes])
    ds = dataset('AVADataset', dataroot=str(tmp_path / 'images'), meta_file=str(tmp_path / 'AVA.txt'))
    for sample, (key, v) in zip(ds.samples, votes.items()):
        mean = sum((i + 1) * n for i, n in enumerate(v)) / sum(v)  # sum(i * v_i) / sum(v_i)
        assert sample['key'] == f'{key}.jpg'
        assert sample['target'][0] == pytest.approx((mean - 1) / 9, rel=1e-6)  # [1, 10] -> [0, 1]
        assert ds.denormalize(sample['target'])[0] == pytest.approx(mean, rel=1e-6)
    dist = dataset('AVADataset', dataroot=str(tmp_path / 'images'), meta_file=str(tmp_path / 'AVA.txt'),
                   target='distribution')
    assert dist[0]['target'].shape == (10,) and dist[0]['target'].sum().item() == pytest.approx(1.0)
    (tmp_path / 'generic_test.jpgl').write_text('954184\n953619\n')
    part = dataset('AVADataset', dataroot=str(tmp_path / 'images'), meta_file=str(tmp_path / 'AVA.txt'),
                   split_file=str(tmp_path / 'generic_test.jpgl'))
    assert [s['key'] for s in part.samples] == ['953619.jpg', '954184.jpg']
    (tmp_path / 'AVA.txt').write_text(lines[0] + '\n2 953958 0 0 0 0 0 0 0 0 0 0 1 22 1396\n')
    with pytest.raises(AnnotationError, match='line 2: image 953958 has no valid votes'):
        dataset('AVADataset', dataroot=str(tmp_path / 'images'), meta_file=str(tmp_path / 'AVA.txt'))


def test_csv_dataset_several_targets_template_split_and_range(tmp_path):
    write_images(tmp_path / 'img', ['1.png', '2.png', '3.png'])
    header = ['image number', 'natural', 'happy', 'aesthetics', 'new', 'complex', 'scary', 'fold']
    rows = [[1, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 'a'], [2, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 'b'],
            [3, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 'a']]
    meta = write_csv(tmp_path / 'ratings.csv', header, rows)
    ds = dataset('CSVIQADataset', dataroot=str(tmp_path / 'img'), meta_file=meta, name_template='{}.png',
                 split_column='fold', split='a')
    assert ds.target_names == header[1:7]  # default: every column but the name and split columns
    assert [s['key'] for s in ds.samples] == ['1.png', '3.png']
    np.testing.assert_allclose(ds[1]['target'].numpy(), [0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    two = dataset('CSVIQADataset', dataroot=str(tmp_path / 'img'), meta_file=meta, name_template='{}.png',
                  name_column='image number', target_columns=['happy', 'scary'], target_range=[[0, 1], [0, 0.5]])
    np.testing.assert_allclose(two[1]['target'].numpy(), [0.8, 0.8], rtol=1e-6)
    np.testing.assert_allclose(two.denormalize(np.array([0.8, 0.8])), [0.8, 0.4], rtol=1e-6)
    none = dataset('CSVIQADataset', dataroot=str(tmp_path / 'img'), meta_file=meta, name_template='{}.png',
                   target_columns=[])
    assert none[0]['target'].shape == (0,)


def test_image_folder_lists_recursively_without_labels(tmp_path):
    write_images(tmp_path, ['b.png', 'sub/a.jpg', 'sub/deeper/c.bmp'])
    (tmp_path / 'notes.txt').write_text('not an image')
    ds = dataset('ImageFolderDataset', dataroot=str(tmp_path), views=['image', 'salient'])
    assert [s['key'] for s in ds.samples] == ['b.png', 'sub/a.jpg', 'sub/deeper/c.bmp']
    item = ds[1]
    assert item['target'].shape == (0,) and item['salient'].shape == (3, 448, 448)
    flat = dataset('ImageFolderDataset', dataroot=str(tmp_path), recursive=False)
    assert [s['key'] for s in flat.samples] == ['b.png']


def test_explicit_transform_list_and_fixed_size_batching(tmp_path):
    write_images(tmp_path / 'a', ['x.png'], size=(40, 30))
    write_images(tmp_path / 'a', ['y.png'], size=(50, 20))
    transforms = [{'type': 'Resize', 'size': [24, 32]}, {'type': 'Normalize', 'mean': None, 'std': None}]
    ds = dataset('ImageFolderDataset', dataroot=str(tmp_path / 'a'), transforms=transforms)
    from uiqa_plugin.data.collate import collate_views
    batch = collate_views([ds[0], ds[1]])
    assert batch['image'].shape == (2, 3, 24, 32) and 0 <= batch['image'].min() and batch['image'].max() <= 1
    raw = dataset('ImageFolderDataset', dataroot=str(tmp_path / 'a'))
    with pytest.raises(ValueError, match="view 'image' has different sizes.*30x40: x.png.*20x50: y.png"):
        collate_views([raw[0], raw[1]])


# --- bad input ----------------------------------------------------------------------------------


def test_missing_image_is_reported_or_skipped(tmp_path):
    csv_path, names = koniq_fixture(tmp_path)
    os.remove(tmp_path / '1024x768' / names[0])
    opt = dict(dataroot=str(tmp_path / '1024x768'), meta_file=csv_path, split='all')
    with pytest.raises(FileNotFoundError, match=r"1 of 5 images are missing .*'100.png'.*skip_unreadable"):
        dataset('KonIQ10kDataset', **opt)
    with pytest.warns(UserWarning, match='1 of 5 images are missing'):
        ds = dataset('KonIQ10kDataset', skip_unreadable=True, **opt)
    assert len(ds) == 4 and names[0] not in [s['key'] for s in ds.samples]


def test_corrupt_image_error_and_skip_with_counting_warning(tmp_path):
    csv_path, names = koniq_fixture(tmp_path)
    (tmp_path / '1024x768' / names[1]).write_bytes(b'not a png at all')
    opt = dict(dataroot=str(tmp_path / '1024x768'), meta_file=csv_path, split='all', phase='test')
    ds = dataset('KonIQ10kDataset', **opt)
    with pytest.raises(ImageReadError, match=f'sample 1: .*{names[1]}: cannot decode image.*skip_unreadable'):
        ds[1]
    skipping = dataset('KonIQ10kDataset', skip_unreadable=True, **opt)
    with pytest.warns(UserWarning, match=f'skipped 1 unreadable image.*{names[1]}'):
        item = skipping[1]
    assert item['key'] == names[2]  # evaluation: the next sample
    assert skipping.num_skipped == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the 2nd..9th skips stay quiet, only counted
        skipping[1]
    assert skipping.num_skipped == 2


def test_corrupt_image_in_a_worker_is_not_silent(tmp_path):
    csv_path, names = koniq_fixture(tmp_path)
    (tmp_path / '1024x768' / names[0]).write_bytes(b'\x89PNG broken')
    ds = dataset('KonIQ10kDataset', dataroot=str(tmp_path / '1024x768'), meta_file=csv_path, split='all')
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1)
    with pytest.raises(ImageReadError, match=names[0]):
        list(loader)


def test_missing_columns_name_file_missing_and_present(tmp_path):
    write_images(tmp_path / 'img', ['a.png'])
    meta = write_csv(tmp_path / 'koniq10k_distributions_sets.csv', ['image_name', 'score', 'set'],
                     [['a.png', 3, 'training']])
    with pytest.raises(AnnotationError) as info:
        dataset('KonIQ10kDataset', dataroot=str(tmp_path / 'img'), meta_file=meta)
    message = str(info.value)
    assert meta in message and "missing column(s) ['MOS']" in message and "['image_name', 'score', 'set']" in message


def test_empty_split_names_the_splits_present(tmp_path):
    csv_path, _ = koniq_fixture(tmp_path, sets=('training', 'training', 'test', 'test', 'test'))
    with pytest.raises(ValueError, match=r"split 'validation' is empty in .*splits present: \['test', 'training'\]"):
        dataset('KonIQ10kDataset', dataroot=str(tmp_path / '1024x768'), meta_file=csv_path, phase='val')


@pytest.mark.parametrize('bad', ['', 'nan', 'good'])
def test_nan_or_empty_score_names_the_row(tmp_path, bad):
    write_images(tmp_path / 'img', ['a.png', 'b.png'])
    meta = write_csv(tmp_path / 'k.csv', KONIQ_HEADER, [['a.png', 1, 1, 1, 1, 1, 5, 50, 1, 'test'],
                                                        ['b.png', 1, 1, 1, 1, 1, 5, bad, 1, 'test']])
    with pytest.raises(AnnotationError, match=f"k.csv line 3: column 'MOS' of image 'b.png'"):
        dataset('KonIQ10kDataset', dataroot=str(tmp_path / 'img'), meta_file=meta, phase='test')


def test_bad_options_are_named(tmp_path):
    csv_path, _ = koniq_fixture(tmp_path)
    root = str(tmp_path / '1024x768')
    with pytest.raises(ValueError, match="phase must be one of"):
        dataset('KonIQ10kDataset', dataroot=root, meta_file=csv_path, phase='training')
    with pytest.raises(ValueError, match='io_backend type lmdb needs db_paths'):
        dataset('KonIQ10kDataset', dataroot=root, meta_file=csv_path, io_backend={'type': 'lmdb'})
    with pytest.raises(ValueError, match='option meta_file is required'):
        dataset('KonIQ10kDataset', dataroot=str(tmp_path / 'nowhere' / 'img'))
    with pytest.raises(FileNotFoundError, match='annotation file not found'):
        dataset('CSVIQADataset', dataroot=root, meta_file=str(tmp_path / 'missing.csv'))
