"""Any image list in a CSV/TSV/xlsx table: one image column, any number of score columns, optional split."""
from basicsr.utils.registry import DATASET_REGISTRY

from uiqa_plugin.data.base_iqa_dataset import BaseIQADataset
from uiqa_plugin.data.table_io import records_from_table


@DATASET_REGISTRY.register()
class CSVIQADataset(BaseIQADataset):
    """Generic annotated images, e.g. a custom MOS file or hand-rated attribute files.

    Options (besides those of BaseIQADataset):
        dataroot: the image folder.
        meta_file: .csv / .tsv / .xlsx with a header row.
        name_column: the image column (default: the first column).
        name_template: format of the image name, e.g. '{}.jpg' when the column holds image numbers.
        target_columns: score columns (default: all other columns except split_column;
            [] for no targets). Several columns give several targets, in this order.
        split_column: optional column holding each row's split; then ``split`` selects rows.
        target_scale / target_range: normalization (default none).

    Example, the CLIP-UIQA hand-rated attributes (values 0..1):
        {type: CSVIQADataset, meta_file: ratings.csv, name_column: image number, name_template: '{}.jpg',
         target_columns: [natural, happy, aesthetics, new, complex, scary]}
    """

    extra_option_keys = ('name_column', 'name_template', 'split_column', 'target_columns')

    def load_records(self):
        if not self.meta_file:
            raise ValueError(f'{self.name}: CSVIQADataset needs meta_file (use ImageFolderDataset for a bare folder)')
        targets = self.opt.get('target_columns')
        return records_from_table(self.meta_file, self.opt.get('name_column'),
                                  list(targets) if targets is not None else None,
                                  split_column=self.opt.get('split_column'),
                                  name_template=self.opt.get('name_template', '{}'))
