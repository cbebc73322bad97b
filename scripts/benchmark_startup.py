"""Start-up time of the commands: how long --help, an option error and `phrasings` take, and what `import
uiqa_plugin` costs. A measurement, not a test: the numbers depend on the machine and its load.

    python scripts/benchmark_startup.py [--repeats 5]

Prints one line per command: the median and the spread of the wall time over the repeats, each run
in a fresh process (so every import is paid again, as a user pays it).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = [
    ('import uiqa_plugin', [sys.executable, '-c', 'import uiqa_plugin']),
    ('uiqa-score --help', [sys.executable, '-m', 'uiqa_plugin.tools.score', '--help']),
    ('uiqa-score x.png --batch-size 0', [sys.executable, '-m', 'uiqa_plugin.tools.score', 'x.png', '--batch-size', '0']),
    ('uiqa-profile --help', [sys.executable, '-m', 'uiqa_plugin.tools.profile', '--help']),
    ('uiqa-profile phrasings -a feel', [sys.executable, '-m', 'uiqa_plugin.tools.profile', 'phrasings', '-a', 'feel']),
    ('python -m uiqa_plugin.options --help', [sys.executable, '-m', 'uiqa_plugin.options', '--help']),
    ('import torch (for comparison)', [sys.executable, '-c', 'import torch']),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=5, help='fresh processes per command')
    args = parser.parse_args(argv)
    print(f'python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, '
          f'{args.repeats} runs each')
    for name, command in COMMANDS:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            times.append(time.perf_counter() - start)
        print(f'{name:40s} median {statistics.median(times):6.2f} s   min {min(times):6.2f}   max {max(times):6.2f}',
              flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
