"""AVA aesthetics: ``AVA.txt`` rows of vote counts for scores 1..10."""
import os.path as osp

import numpy as np
from basicsr.utils.registry import DATASET_REGISTRY

from uiqa_plugin.data.base_iqa_dataset import BaseIQADataset
from uiqa_plugin.data.table_io import AnnotationError, Record

AVA_FIELDS = 15  # index, image id, 10 vote counts, 2 semantic tags, challenge id
SCORES = np.arange(1, 11, dtype=np.float64)


def read_ava_txt(path):
    """Parse AVA.txt -> list of (line_number, image_id, votes[10]); raises naming the line on bad rows."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'AVA annotation file not found: {path}')
    rows = []
    with open(path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 12:
                raise AnnotationError(f'{path} line {line_no}: expected {AVA_FIELDS} fields (index, image id, '
                                      f'10 vote counts, 2 tags, challenge id), got {len(fields)}')
            try:
                votes = np.array([float(v) for v in fields[2:12]])
            except ValueError:
                raise AnnotationError(f'{path} line {line_no}: vote counts are not numbers: {fields[2:12]}') from None
            if not np.all(np.isfinite(votes)) or votes.min() < 0 or votes.sum() <= 0:
                raise AnnotationError(f'{path} line {line_no}: image {fields[1]} has no valid votes: {fields[2:12]}')
            rows.append((line_no, fields[1], votes))
    if not rows:
        raise AnnotationError(f'{path}: no rows')
    return rows


@DATASET_REGISTRY.register()
class AVADataset(BaseIQADataset):
    """AVA (about 255k photos rated 1..10 by ~200 voters each).

    The target is the mean score sum(i * v_i) / sum(v_i) over the vote counts v_1..v_10
    (``target: mean``, normalized by ``target_range`` [1, 10] -> [0, 1] by default), or
    the normalized vote distribution (``target: distribution``, 10 values summing to 1).

    Options (besides those of BaseIQADataset):
        dataroot: the image folder; image ``<id>.jpg``.
        meta_file: ``AVA.txt``.
        split_file: optional list of image ids to keep (e.g. ``aesthetics_image_lists/generic_test.jpgl``).
        split + split_ratios/split_seed: a seeded random split of what is left.
        image_template: default '{}.jpg'.
    """

    extra_option_keys = ('image_template', 'split_file', 'target')

    def load_records(self):
        meta = self.require_meta_file(['AVA.txt'])
        kind = self.opt.get('target', 'mean')
        if kind not in ('mean', 'distribution'):
            raise ValueError(f"{self.name}: target must be 'mean' or 'distribution', got {kind!r}")
        template = self.opt.get('image_template', '{}.jpg')
        keep = None
        if self.opt.get('split_file'):
            split_file = osp.expanduser(self.opt['split_file'])
            with open(split_file, encoding='utf-8') as f:
                keep = {line.strip() for line in f if line.strip()}
            if not keep:
                raise AnnotationError(f'{split_file}: the image list is empty')
        base = osp.basename(meta)
        records = []
        for line_no, image_id, votes in read_ava_txt(meta):
            if keep is not None and image_id not in keep:
                continue
            dist = votes / votes.sum()
            targets = (float(dist @ SCORES),) if kind == 'mean' else tuple(float(p) for p in dist)
            records.append(Record(template.format(image_id), targets, None, f'{base} line {line_no}'))
        if not records:
            raise AnnotationError(f'{meta}: no image of split_file {self.opt.get("split_file")} is in the file')
        names = ['mean_score'] if kind == 'mean' else [f'p{i}' for i in range(1, 11)]
        return records, names

    def build_normalizer(self):
        if self.opt.get('target', 'mean') == 'mean' and self.opt.get('target_scale') is None \
                and self.opt.get('target_range') is None:
            self.default_target_range = (1.0, 10.0)
        return super().build_normalizer()
