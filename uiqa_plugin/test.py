"""Evaluate an IQA model (zero-shot or a trained checkpoint) from an option YAML on BasicSR's runner.

    python uiqa_plugin/test.py -opt options/test_clipiqa_koniq.yml

Writes dataset-level metrics to the log, predictions and per-image metrics to results/<name>/.
"""
import os
import sys

if __package__ in (None, ''):  # see train.py
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    # Under torchrun, ``record`` hands a failing rank's error to torchrun's summary as the root cause.
    from torch.distributed.elastic.multiprocessing.errors import record
    from uiqa_plugin.runner import run_pipeline  # lazy: importing this module loads no torch or BasicSR
    record(run_pipeline)(is_train=False, argv=argv)


if __name__ == '__main__':
    main()
