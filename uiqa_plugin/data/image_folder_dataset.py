"""A folder of images without labels, for inference."""
import os
import os.path as osp

from basicsr.utils.registry import DATASET_REGISTRY

from uiqa_plugin.data.base_iqa_dataset import BaseIQADataset
from uiqa_plugin.data.image_io import is_image_file
from uiqa_plugin.data.table_io import Record


def list_images(folder, recursive=True):
    """Sorted image paths under ``folder``, relative to it, with '/' separators."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'image folder not found: {folder}')
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            if is_image_file(name):
                found.append(osp.relpath(osp.join(root, name), folder).replace(os.sep, '/'))
        if not recursive:
            break
    return sorted(found)


@DATASET_REGISTRY.register()
class ImageFolderDataset(BaseIQADataset):
    """Every image under ``dataroot`` (recursive by default); ``target`` is an empty tensor [0].

    Options (besides the view / io options of BaseIQADataset):
        dataroot: the folder. recursive: default true. phase: default 'test'.
    Keys are paths relative to dataroot ('sub/a.jpg').
    """

    extra_option_keys = ('recursive',)

    def load_records(self):
        if not self.dataroot:
            raise ValueError(f'{self.name}: ImageFolderDataset needs dataroot')
        names = list_images(self.dataroot, self.opt.get('recursive', True))
        if not names:
            raise ValueError(f'{self.name}: no image files ({", ".join(sorted({".jpg", ".png", ".bmp", ".tif"}))}, '
                             f'...) under {self.dataroot}')
        return [Record(n, (), None, n) for n in names], []
