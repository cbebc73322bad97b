"""Training learns a target the model can represent exactly, through the normal entry point.

The targets (scripts/learnable_targets.py) are outputs of frozen one-view teachers: a fixed random
projection of the tiny CLIP's image-view (or fragment-view) features through a sigmoid, computed with
the project's own dataset and transforms. A student with the needed view must rank the held-out
images (unseen contents) almost exactly; the checks fail when targets are misaligned with images
(measured once with ``--shuffle-seed 0``: held-out SRCC -0.089 instead of 0.996), when a view never
reaches the head, or when distributed training shards or gathers wrongly.
"""
import os.path as osp
import sys

import pytest

from helpers import REPO, free_port, last_metric, load_script, run, train, write_yaml

learnable_targets = load_script('learnable_targets')

THRESHOLD = 0.95  # held-out SRCC of a model that has the needed view


@pytest.fixture(scope='module')
def target_csv(demo_data, tmp_path_factory):
    path = tmp_path_factory.mktemp('learnable') / 'learnable_targets.csv'
    return learnable_targets.write_learnable_csv(str(demo_data), str(path), str(demo_data / 'tiny.pt'))


def options(demo_data, target_csv, name, target_column, **kwargs):
    # Measured (2-core EPYC, seed 0, these options): held-out SRCC 0.996 after 60 steps.
    kwargs.setdefault('total_iter', 60)
    images = str(demo_data / learnable_targets.DEMO_IMAGES)
    return learnable_targets.training_options(name, images, target_csv, target_column,
                                              str(demo_data / 'tiny.pt'), lr=0.02, **kwargs)


@pytest.mark.slow
def test_targets_are_what_the_teachers_see(demo_data, target_csv):
    """The CSV rows hold the teachers' outputs for their own images, in (0, 1), split by content."""
    import csv
    with open(target_csv, newline='') as f:
        rows = {r['image_name']: r for r in csv.DictReader(f)}
    assert len(rows) == 192 and {r['set'] for r in rows.values()} == {'training', 'validation'}
    again = learnable_targets.compute_targets(str(demo_data), str(demo_data / 'tiny.pt'), batch_size=7)
    for name, values in again.items():
        for column, value in values.items():
            assert 0 < value < 1 and float(rows[name][column]) == pytest.approx(value, abs=1e-6)
    sources = lambda split: {n.rsplit('_', 1)[0] for n, r in rows.items() if r['set'] == split}  # noqa: E731
    assert not sources('training') & sources('validation')


@pytest.mark.slow
def test_image_target_is_learned_on_one_process(demo_data, target_csv, tmp_path):
    opt = options(demo_data, target_csv, 'learn_image', 'image_target')
    srcc = last_metric(train(write_yaml(tmp_path, opt), tmp_path), 'srcc')
    assert srcc >= THRESHOLD, srcc


@pytest.mark.slow
def test_image_target_is_learned_on_two_processes(demo_data, target_csv, tmp_path):
    opt = options(demo_data, target_csv, 'learn_image_dist', 'image_target', batch_size=8)
    log = run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
               osp.join(REPO, 'uiqa_plugin', 'train.py'), '-opt', write_yaml(tmp_path, opt)], tmp_path)
    assert 'World size (gpu number): 2' in log  # the training statistics (the option dump is in the log file)
    srcc = last_metric(log, 'srcc')
    assert srcc >= THRESHOLD, srcc


@pytest.mark.slow
def test_fragment_target_is_learned_only_with_the_fragment_view(demo_data, target_csv, tmp_path):
    with_fragments = options(demo_data, target_csv, 'learn_fragments', 'fragment_target', total_iter=150,
                             model_views=['image', 'fragments', 'salient'], aggregation='concat')
    without = options(demo_data, target_csv, 'learn_no_fragments', 'fragment_target', total_iter=150,
                      model_views=['image', 'salient'], aggregation='concat')
    srcc_with = last_metric(train(write_yaml(tmp_path, with_fragments, 'with.yml'), tmp_path), 'srcc')
    srcc_without = last_metric(train(write_yaml(tmp_path, without, 'without.yml'), tmp_path), 'srcc')
    # Measured (seed 0, lr 0.02, 150 steps): 0.98 with the fragment view; without it 0.77 (400 steps at lr 0.01):
    # the 48x64 image view has lost the detail the fragment target reads.
    assert srcc_with >= THRESHOLD, srcc_with
    assert srcc_without < srcc_with - 0.1, (srcc_with, srcc_without)


def test_ablation_plans_every_configuration_with_valid_options():
    """Every planned run passes the option validation train.py applies; a seed covers all configurations."""
    from uiqa_plugin.options import validate_options
    ablation = load_script('ablation')
    data = {'clip': 'tiny.pt', 'ladder_images': 'ladder', 'ladder_csv': 'ladder.csv', 'demo_images': 'demo',
            'target_csv': 'targets.csv'}
    runs = ablation.planned_runs(['views', 'losses'], [0, 1], {'views': 5, 'losses': 5}, data)
    per_seed = 1 + 4 + 4 + len(ablation.LOSSES)  # one view: the aggregations coincide
    assert len(runs) == 2 * per_seed and [r[2] for r in runs] == [0] * per_seed + [1] * per_seed
    names = [opt['name'] for *_, opt in runs]
    assert len(set(names)) == len(names)  # each run its own experiment folder
    for part, config, seed, opt in runs:
        validate_options(opt, check_environment=False)
        net = opt['network_g']
        assert opt['manual_seed'] == seed
        if part == 'views':
            assert net['finetune_clip'] == ['visual.layer4', 'visual.attnpool']
            assert set(opt['datasets']['train']['views']) == set(net['views'])
            assert config.startswith(next(k for k, v in ablation.VIEW_SETS.items() if v == net['views']))
        else:
            assert net['finetune_clip'] == [] and opt['train']['loss_opt'] == ablation.LOSSES[config]


def test_ladder_strength_is_the_distortion_level(tmp_path):
    ablation = load_script('ablation')
    meta = tmp_path / 'meta.csv'
    meta.write_text('image_name,MOS,set\n'
                    'a_ref.jpg,90,training\na_blur1.jpg,70,training\na_blur4.jpg,20,training\n'
                    'b_noise2.jpg,50,validation\nb_jpeg1.jpg,60,test\nb_noise4.jpg,10,test\n')
    assert ablation.ladder_rows(str(meta)) == [('a_ref.jpg', 0.0, 'training'), ('a_blur1.jpg', 0.25, 'training'),
                                               ('a_blur4.jpg', 1.0, 'training'), ('b_noise2.jpg', 0.5, 'validation'),
                                               ('b_noise4.jpg', 1.0, 'validation')]
