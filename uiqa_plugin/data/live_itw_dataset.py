"""LIVE In the Wild Image Quality Challenge: ``Data/AllImages_release.mat`` + ``Data/AllMOS_release.mat``."""
import os.path as osp

import numpy as np
from basicsr.utils.registry import DATASET_REGISTRY

from uiqa_plugin.data.base_iqa_dataset import BaseIQADataset
from uiqa_plugin.data.table_io import AnnotationError, Record, parse_score

NUM_TRAINING_IMAGES = 7  # the first 7 entries are the challenge's training images (Images/trainingImages)


def _load_mat_variable(path, variable):
    from scipy.io import loadmat
    if not osp.isfile(path):
        raise FileNotFoundError(f'LIVE-itW annotation file not found: {path}')
    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises several kinds for a broken .mat
        raise AnnotationError(f'{path}: cannot read .mat file ({exc})') from exc
    if variable not in mat:
        present = [k for k in mat if not k.startswith('__')]
        raise AnnotationError(f'{path}: missing variable {variable!r}; variables present: {present}')
    return mat[variable]


def _cell_strings(cells):
    """A MATLAB cell array of strings (object array of 1-element arrays) -> list of str."""
    out = []
    for cell in np.asarray(cells, dtype=object).reshape(-1):
        while isinstance(cell, np.ndarray) and cell.size == 1 and cell.dtype == object:
            cell = cell.reshape(-1)[0]
        out.append(str(np.asarray(cell).reshape(-1)[0]) if isinstance(cell, np.ndarray) else str(cell))
    return [s.strip() for s in out]


@DATASET_REGISTRY.register()
class LIVEItWDataset(BaseIQADataset):
    """LIVE-itW / LIVE Challenge (1162 test images after skipping the 7 training ones; MOS 0-100).

    Options (besides those of BaseIQADataset):
        dataroot: the image folder (``.../ChallengeDB_release/Images``).
        meta_file: ``Data/AllImages_release.mat`` (variable AllImages_release, a cell array of names).
        mos_file: ``AllMOS_release.mat`` (variable AllMOS_release); default: next to meta_file.
        split + split_ratios/split_seed: no official split. target_scale: default 100.
    """

    extra_option_keys = ('mos_file',)

    default_target_scale = 100.0

    def load_records(self):
        meta = self.require_meta_file(['AllImages_release.mat', osp.join('Data', 'AllImages_release.mat')])
        mos_file = osp.expanduser(self.opt.get('mos_file') or osp.join(osp.dirname(meta), 'AllMOS_release.mat'))
        names = _cell_strings(_load_mat_variable(meta, 'AllImages_release'))
        mos = np.asarray(_load_mat_variable(mos_file, 'AllMOS_release'), dtype=object).reshape(-1)
        if len(names) != len(mos):
            raise AnnotationError(f'{meta} lists {len(names)} images but {mos_file} has {len(mos)} scores')
        if len(names) <= NUM_TRAINING_IMAGES:
            raise AnnotationError(f'{meta}: only {len(names)} entries; the first {NUM_TRAINING_IMAGES} are skipped')
        base = osp.basename(meta)
        records = []
        for i in range(NUM_TRAINING_IMAGES, len(names)):
            where = f'{mos_file} entry {i + 1}'
            records.append(Record(names[i], (parse_score(mos[i], where, 'AllMOS_release', names[i]),), None,
                                  f'{base} entry {i + 1}'))
        return records, ['MOS']
