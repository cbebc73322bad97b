"""Up-front option validation: each mistake that used to surface late (or never) is one line naming its key."""
import copy

import pytest

from uiqa_plugin.options import OptionError, check_device, check_train_batches, validate_options

GOOD = {
    'name': 'x', 'model_type': 'IQAModel', 'num_gpu': 'auto', 'manual_seed': 0,
    'datasets': {
        'train': {'name': 'tr', 'type': 'KonIQ10kDataset', 'dataroot': 'd', 'meta_file': 'm.csv', 'views': ['image'],
                  'batch_size_per_gpu': 4},
        'val': {'name': 'va', 'type': 'KonIQ10kDataset', 'dataroot': 'd', 'meta_file': 'm.csv', 'views': ['image']},
    },
    'network_g': {'type': 'CLIPIQAPlus', 'clip_model': 'RN50', 'clip_pretrained': 'openai'},
    'path': {'pretrain_network_g': None, 'trust_checkpoint': False},
    'train': {'total_iter': 10, 'optim_g': {'type': 'SGD', 'lr': 0.002, 'momentum': 0.9},
              'scheduler': {'type': 'CosineAnnealingLR', 'eta_min': 1.0e-6}, 'mse_opt': {'type': 'MSELoss'}},
    'val': {'val_freq': 5, 'key_metric': 'srcc', 'metrics': {'srcc': {'type': 'calculate_srcc'}}},
    'logger': {'print_freq': 5, 'save_checkpoint_freq': 10},
}


def problems(changes=(), removals=(), **kwargs):
    """Validation problems (one string each) of GOOD with dotted-key changes applied."""
    opt = copy.deepcopy(GOOD)
    for dotted, value in dict(changes).items():
        *parents, leaf = dotted.split('.')
        node = opt
        for p in parents:
            node = node[p]
        node[leaf] = value
    for dotted in removals:
        *parents, leaf = dotted.split('.')
        node = opt
        for p in parents:
            node = node[p]
        del node[leaf]
    try:
        validate_options(opt, check_environment=False, **kwargs)
    except OptionError as exc:
        return [line.strip()[2:] for line in str(exc).splitlines()[1:]]
    return []


def test_the_base_options_are_valid():
    assert problems() == []


@pytest.mark.parametrize('changes, expected', [
    ({'train.total_iter': 0}, 'train.total_iter: must be at least 1, got 0'),
    ({'train.total_iter': -5}, 'train.total_iter: must be at least 1, got -5'),
    ({'train.mse_opt': {'type': 'MSELos'}}, "train.mse_opt.type: unknown loss 'MSELos' (close: MSELoss"),
    ({'train.mse_opt': {'type': 'MSELoss', 'weight': 2}}, "train.mse_opt.weight: MSELoss has no option 'weight'"),
    ({'train.optim_g': {'type': 'Adamm', 'lr': 0.1}}, "train.optim_g: optimizer: unknown type 'Adamm'"),
    ({'train.optim_g': {'type': 'SGD', 'lr': 0.1, 'momentun': 0.9}}, "train.optim_g: optimizer SGD: unknown option"),
    ({'train.optim_g.lr': '3e-3'}, "train.optim_g.lr: expected a number, got the string '3e-3' (YAML reads exponent "
                                   "notation without a dot as text: write 3.0e-3 or !!float 3e-3)"),
    ({'train.optim_g.momentum': '0.9'}, "train.optim_g.momentum: expected a number, got the string '0.9' (remove "
                                        "the quotes)"),
    ({'train.scheduler': {'type': 'Cosine'}}, "train.scheduler: scheduler: unknown type 'Cosine'"),
    ({'train.scheduler.eta_min': '1e-6'}, "train.scheduler.eta_min: expected a number, got the string '1e-6'"),
    ({'val.metrics': {'srcc': {'type': 'calculate_src'}}}, "val.metrics.srcc.type: unknown metric 'calculate_src' "
                                                            "(close: calculate_srcc"),
    ({'val.metrics': {'srcc': {'type': 'calculate_clipiqa'}}}, 'val.metrics.srcc.type: calculate_clipiqa scores '
                                                               'single images for restoration models'),
    ({'val.key_metric': 'plcc'}, "val.key_metric: 'plcc' is not among the metrics ['srcc']"),
    ({'val.val_freq': 0}, 'val.val_freq: must be positive (validate every N iterations), got 0'),
    ({'logger.print_freq': 0}, 'logger.print_freq: must be positive, got 0'),
    ({'logger.save_checkpoint_freq': -1}, 'logger.save_checkpoint_freq: must be positive, got -1'),
    ({'model_type': 'IQAModle'}, "model_type: unknown model 'IQAModle' (close: IQAModel"),
    ({'datasets.train.batch_size_per_gpu': 0}, 'datasets.train.batch_size_per_gpu: must be at least 1, got 0'),
    ({'datasets.train.io_backend': {'type': 'lmdb', 'db_paths': 7}}, 'datasets.train.io_backend.db_paths: expected '
                                                                      'a path or a list of paths, got 7'),
    ({'path.trust_checkpoint': 'yes'}, "path.trust_checkpoint: expected bool, got 'yes'"),
])
def test_each_mistake_is_named_by_its_key(changes, expected):
    found = problems(changes)
    assert any(p.startswith(expected) for p in found), found
    assert len(found) == 1, found


def test_key_metric_defaults_to_srcc_and_plcc():
    assert problems({'val': {'key_metric': 'plcc'}}) == []
    assert problems({'val': {'key_metric': 'krcc'}}) == ["val.key_metric: 'krcc' is not among the metrics "
                                                         "['srcc', 'plcc']"]


def test_double_normalization_is_caught_both_ways():
    # CLIPIQA takes [0, 1] by default; the dataset normalizes by default: twice (#8.5)
    zero_shot = {'network_g': {'type': 'CLIPIQA'}}
    found = problems(zero_shot, is_train=False, removals=['train'])
    assert len(found) == 2
    assert all(p.startswith('network_g.input_normalized: CLIPIQA takes RGB in [0, 1]') for p in found)
    assert 'datasets.train gives images already normalized' in found[0] and 'normalized twice' in found[0]
    assert problems({'network_g': {'type': 'CLIPIQA', 'input_normalized': True}}, is_train=False) == []
    dataset_01 = {'datasets.train.mean': None, 'datasets.train.std': None, 'datasets.val.mean': None,
                  'datasets.val.std': None}
    assert problems({**zero_shot, **dataset_01}, is_train=False) == []
    # CLIP-IQA+ takes normalized inputs: a [0, 1] dataset would never be normalized
    found = problems({'datasets.val.mean': None, 'datasets.val.std': None})
    assert len(found) == 1 and 'datasets.val gives images in [0, 1]' in found[0] and 'normalized never' in found[0]
    # an explicit transforms list counts its Normalize
    transforms = [{'type': 'LoadImage'}, {'type': 'Collect'}]
    found = problems({'datasets.val.transforms': transforms}, removals=['datasets.val.views'])
    assert len(found) == 1 and 'normalized never' in found[0]


def test_db_paths_as_a_string_or_a_list(tmp_path):
    db = tmp_path / 'x.lmdb'
    db.mkdir()
    opt = copy.deepcopy(GOOD)
    opt['network_g']['clip_pretrained'] = 'openai'
    for ds in opt['datasets'].values():
        ds['dataroot'], ds['meta_file'] = str(tmp_path), str(db)
    for db_paths in (str(db), [str(db)]):
        opt['datasets']['train']['io_backend'] = {'type': 'lmdb', 'db_paths': db_paths}
        validate_options(opt)
    opt['datasets']['train']['io_backend'] = {'type': 'lmdb', 'db_paths': str(tmp_path / 'gone.lmdb')}
    with pytest.raises(OptionError) as info:
        validate_options(opt)
    assert str(info.value).splitlines()[1:] == [f'  - datasets.train.io_backend.db_paths: LMDB folder not found: '
                                                f'{tmp_path / "gone.lmdb"}']


def test_per_image_metric_options_are_checked_for_restoration_models():
    opt = {'name': 'sr', 'model_type': 'SRModel', 'scale': 4,
           'datasets': {'test': {'name': 't', 'type': 'PairedImageDataset', 'dataroot_gt': 'g', 'dataroot_lq': 'l',
                                 'io_backend': {'type': 'disk'}}},
           'network_g': {'type': 'MSRResNet', 'num_feat': 16, 'num_block': 2, 'upscale': 4},
           'val': {'save_img': False, 'metrics': {
               'clipiqa': {'type': 'calculate_clipiqa', 'attribute': 'quality', 'better': 'higher'},
               'two': {'type': 'calculate_clipiqa', 'attributes': 'quality,sharpness'},
               'ck': {'type': 'calculate_uiqa_checkpoint'},
               'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}}}
    with pytest.raises(OptionError) as info:
        validate_options(opt, is_train=False, check_environment=False)
    assert str(info.value).splitlines()[1:] == [
        "  - val.metrics.clipiqa.attribute: calculate_clipiqa has no option 'attribute' (did you mean 'attributes'?)",
        '  - val.metrics.two.attributes: gives 2 scores; BasicSR averages one number per metric: one val.metrics '
        'entry per attribute',
        '  - val.metrics.ck.checkpoint: required (a net_g_*.pth of IQAModel)']


def test_cuda_without_a_gpu_is_an_option_error(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    with pytest.raises(OptionError, match=r'--device: cuda asked for, but this machine has no CUDA GPU'):
        check_device('cuda')
    with pytest.raises(OptionError, match=r"--device: 'gpu' is not a device"):
        check_device('gpu')
    assert check_device('cpu') == 'cpu'
    opt = copy.deepcopy(GOOD)
    opt['num_gpu'] = 1
    for ds in opt['datasets'].values():
        ds.update(dataroot='.', meta_file='.')
    with pytest.raises(OptionError) as info:
        validate_options(opt)
    assert str(info.value).splitlines()[1:] == ['  - num_gpu: 1 asked for, but this machine has 0 CUDA GPU(s); '
                                                'use num_gpu: auto (all there are, or the CPU) or 0']


def test_uiqa_score_refuses_cuda_without_a_gpu(monkeypatch, capsys, tmp_path):
    import torch
    from uiqa_plugin.tools.score import main
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    assert main([str(tmp_path), '--device', 'cuda', '--clip-pretrained', 'none']) == 2
    assert 'uiqa-score: --device: cuda asked for, but this machine has no CUDA GPU' in capsys.readouterr().err


def test_a_batch_larger_than_the_training_set():
    class Data:
        def __len__(self):
            return 10
    check_train_batches(Data(), {'batch_size_per_gpu': 10})
    check_train_batches(Data(), {'batch_size_per_gpu': 12, 'dataset_enlarge_ratio': 2}, world_size=1)
    with pytest.raises(OptionError, match=r"batch_size_per_gpu: 8, but training set 'tr' has 10 samples "
                                          r"\(x1 dataset_enlarge_ratio over 2 processes: 5 per process\)"):
        check_train_batches(Data(), {'name': 'tr', 'batch_size_per_gpu': 8}, world_size=2)


def test_checking_a_file_runs_none_of_its_imports_unless_asked(tmp_path, monkeypatch, capsys):
    import yaml

    from uiqa_plugin.options import main
    (tmp_path / 'toolbox_side_effect.py').write_text(
        'import pathlib\npathlib.Path(__file__).with_name("ran").write_text("1")\n')
    opt = copy.deepcopy(GOOD)
    opt['imports'] = [str(tmp_path / 'toolbox_side_effect.py')]
    (tmp_path / 'opt.yml').write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    assert main(['--portable', str(tmp_path / 'opt.yml')]) == 1
    out = capsys.readouterr().out
    assert not (tmp_path / 'ran').exists()
    assert f'imports: {tmp_path / "toolbox_side_effect.py"} not imported: checking a file runs none of its code; ' \
           f'pass --import {tmp_path / "toolbox_side_effect.py"} to allow it' in out
    assert main(['--portable', '--import', str(tmp_path / 'toolbox_side_effect.py'), str(tmp_path / 'opt.yml')]) == 0
    assert (tmp_path / 'ran').exists() and 'ok ' in capsys.readouterr().out


def test_options_help_says_imports_run_only_with_import(capsys):
    from uiqa_plugin.options import main
    with pytest.raises(SystemExit):
        main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert 'are NOT imported (importing runs their code): name each with --import' in text


@pytest.mark.parametrize('changes, expected', [
    ({'network_g.aggregation': 'maen'}, "network_g.aggregation: 'maen' is not one of 'mean', 'concat', 'learned', "
                                        "'attention' (did you mean 'mean'?)"),
    ({'network_g.prompt': 'learnd'}, "network_g.prompt: 'learnd' is not one of 'learned', 'fixed' "
                                     "(did you mean 'learned'?)"),
    ({'network_g.prompt_opt': {'class_token_position': 'midle'}},
     "network_g.prompt_opt.class_token_position: 'midle' is not one of 'front', 'middle', 'end' "
     "(did you mean 'middle'?)"),
    ({'network_g.prompt_opt': {'n_ctxx': 4}}, "network_g.prompt_opt.n_ctxx: unknown option (did you mean 'n_ctx'?)"),
    ({'network_g.prompt_opt': {'n_ctx': 0}}, 'network_g.prompt_opt.n_ctx: 0 is out of range'),
    ({'network_g.views': ['fragment']}, "network_g.views: 'fragment' is not one of 'image', 'fragments', 'salient' "
                                        "(did you mean 'fragments'?)"),
    ({'network_g.attributes': 'sharpnes'}, "network_g.attributes: unknown attribute 'sharpnes'. Did you mean "
                                           "sharpness"),
    ({'network_g.attributes': 'Vivid photo.|'}, "network_g.attributes: custom attribute 'Vivid photo.|' must be"),
    ({'network_g.finetune_clip': ['visual.layer5']}, "network_g.finetune_clip: CLIP RN50 has no part "
                                                     "'visual.layer5' (did you mean 'visual.layer4'?)"),
    ({'network_g.precision': 'fp8'}, "network_g.precision: 'fp8' is not one of"),
    ({'datasets.train.views': {'salient': {'size': -128}}},
     'datasets.train.views.salient.size: -128 is out of range: expected a whole number >= 1 and <= 4096'),
    ({'datasets.train.views': {'fragments': {'grid': 2000}}},
     'datasets.train.views.fragments.grid: 2000 is out of range'),
    ({'datasets.train.views': {'fragments': {'gird': 4}}}, "datasets.train.views.fragments.gird: Fragment has no "
                                                           "option 'gird' (did you mean 'grid'?)"),
    ({'datasets.train.resize': {'short_side': 60000}}, 'datasets.train.resize.short_side: 60000 is out of range'),
])
def test_each_network_and_view_value_is_checked(changes, expected):
    found = problems(changes)
    assert any(p.startswith(expected) for p in found), found
    assert len(found) == 1, found


@pytest.mark.slow
def test_values_are_checked_before_basicsr_touches_the_experiment_folder(tmp_path):
    """A typo used to pass validation; training then renamed the last run to *_archived_* and crashed."""
    import os
    import subprocess
    import sys

    import yaml
    opt = copy.deepcopy(GOOD)
    opt['network_g'] = {'type': 'CLIPUIQA', 'aggregation': 'maen'}
    (tmp_path / 'opt.yml').write_text(yaml.safe_dump(opt))
    best = tmp_path / 'experiments' / 'x' / 'models' / 'net_g_best.pth'
    best.parent.mkdir(parents=True)
    best.write_bytes(b'the last good run')
    train = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'uiqa_plugin', 'train.py')
    run = subprocess.run([sys.executable, train, '-opt', str(tmp_path / 'opt.yml')],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode != 0 and "network_g.aggregation: 'maen' is not one of" in run.stderr + run.stdout
    assert 'Traceback' not in run.stderr
    assert sorted(os.listdir(tmp_path / 'experiments')) == ['x'] and best.read_bytes() == b'the last good run'



def test_double_normalization_check_follows_kwargs_of_a_user_subclass():
    """A user arch that forwards **kwargs to CLIPIQA takes [0, 1] images as CLIPIQA does: over a normalizing
    dataset it would normalize twice (the check read only the subclass's own signature and let it pass)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    from uiqa_plugin.archs.clipiqa_arch import CLIPIQA
    if 'ForwardingCLIPIQA' not in ARCH_REGISTRY:
        @ARCH_REGISTRY.register()
        class ForwardingCLIPIQA(CLIPIQA):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
    found = problems({'network_g': {'type': 'ForwardingCLIPIQA'}}, is_train=False, removals=['train'])
    assert len(found) == 2 and all('ForwardingCLIPIQA takes RGB in [0, 1]' in p and 'normalized twice' in p
                                   for p in found)
    assert problems({'network_g': {'type': 'ForwardingCLIPIQA', 'input_normalized': True}}, is_train=False,
                    removals=['train']) == []
