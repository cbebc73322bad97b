"""KonIQ-10k: ``koniq10k_distributions_sets.csv`` + the images (``1024x768/``)."""
from basicsr.utils.registry import DATASET_REGISTRY

from uiqa_plugin.data.base_iqa_dataset import BaseIQADataset
from uiqa_plugin.data.table_io import records_from_table

KONIQ_CSV = 'koniq10k_distributions_sets.csv'
KONIQ_COLUMNS = ('image_name', 'c1', 'c2', 'c3', 'c4', 'c5', 'c_total', 'MOS', 'SD', 'set')
PHASE_SPLITS = {'train': 'training', 'val': 'validation', 'test': 'test'}


@DATASET_REGISTRY.register()
class KonIQ10kDataset(BaseIQADataset):
    """KonIQ-10k (10073 in-the-wild images, 1024x768, MOS on 0-100).

    Options (besides those of BaseIQADataset):
        dataroot: the image folder (``.../koniq10k/1024x768``).
        meta_file: ``koniq10k_distributions_sets.csv`` with columns image_name, c1..c5,
            c_total, MOS, SD, set; looked up in dataroot and its parent when omitted.
        split: 'training' | 'validation' | 'test' | 'all' (train/val also accepted);
            default from the phase: train -> training, val -> validation, test -> test.
        target_columns: default [MOS]. target_scale: default 100 (targets are MOS / 100).
    """

    extra_option_keys = ('target_columns',)

    default_target_scale = 100.0

    def __init__(self, opt):
        opt = dict(opt)
        opt.setdefault('split', PHASE_SPLITS.get(opt.get('phase', 'test')))
        super().__init__(opt)

    def load_records(self):
        return records_from_table(self.require_meta_file([KONIQ_CSV]), 'image_name',
                                  list(self.opt.get('target_columns', ['MOS'])), split_column='set')
