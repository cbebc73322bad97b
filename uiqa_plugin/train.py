"""Train an IQA model from an option YAML on BasicSR's runner.

    python uiqa_plugin/train.py -opt options/uiqa_koniq.yml
    python -m torch.distributed.run --nproc_per_node=2 uiqa_plugin/train.py -opt options/uiqa_koniq.yml
    python uiqa_plugin/train.py -opt options/uiqa_koniq.yml --auto_resume

Experiments land under the current working directory (experiments/<name>, tb_logger/<name>).
"""
import os
import sys

if __package__ in (None, ''):
    # Run as a script: import the package from this checkout, and keep the package folder itself off
    # sys.path so that its modules (data, models, test...) cannot shadow top-level ones.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    # Under torchrun, ``record`` hands a failing rank's error to torchrun's summary as the root cause.
    from torch.distributed.elastic.multiprocessing.errors import record
    from uiqa_plugin.runner import run_pipeline  # lazy: importing this module loads no torch or BasicSR
    record(run_pipeline)(is_train=True, argv=argv)


if __name__ == '__main__':
    main()
