"""Former home of the score-table format, now ``uiqa_plugin.scoring.table``; these names stay importable."""
from uiqa_plugin.scoring.table import TABLE_SUFFIXES, format_table, missing_folder, printable, read_table, write_table  # noqa: F401
