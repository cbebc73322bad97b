"""SPAQ: smartphone photos scored in ``MOS and Image attribute scores.xlsx``."""
from basicsr.utils.registry import DATASET_REGISTRY

from uiqa_plugin.data.base_iqa_dataset import BaseIQADataset
from uiqa_plugin.data.table_io import records_from_table

SPAQ_SCORES = 'MOS and Image attribute scores.xlsx'
SPAQ_ATTRIBUTES = ('Brightness', 'Colorfulness', 'Contrast', 'Noisiness', 'Sharpness')


@DATASET_REGISTRY.register()
class SPAQDataset(BaseIQADataset):
    """SPAQ (11125 smartphone photos, MOS and five attributes on 0-100).

    Options (besides those of BaseIQADataset):
        dataroot: the image folder (``.../SPAQ/TestImage``), names like ``00001.jpg``.
        meta_file: the .xlsx as distributed (columns 'Image name', 'MOS', 'Brightness',
            'Colorfulness', 'Contrast', 'Noisiness', 'Sharpness'), or a CSV with the same
            columns; looked up in dataroot and its parent when omitted.
        target_columns: default [MOS]; add attributes for several targets.
        split + split_ratios/split_seed: SPAQ has no official split (e.g. {training: 0.8, test: 0.2}).
        resize: the images are large (up to 4000 px); {short_side: 512} is customary.
        target_scale: default 100.
    """

    extra_option_keys = ('name_column', 'target_columns')

    default_target_scale = 100.0

    def load_records(self):
        meta = self.require_meta_file([SPAQ_SCORES, 'MOS and Image attribute scores.csv'])
        return records_from_table(meta, self.opt.get('name_column', 'Image name'),
                                  list(self.opt.get('target_columns', ['MOS'])))
