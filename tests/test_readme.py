"""README's quick start stays true: CI runs exactly its test line, and its demo line is the digits demo."""
import os
import re

from runs import ROOT


def quick_start_lines():
    text = open(os.path.join(ROOT, 'README.md')).read()
    block = re.search(r'## Quick start\s+```bash\n(.*?)```', text, re.S).group(1)
    return block.strip().splitlines()


def test_ci_runs_the_readme_test_line():
    demo, tests = quick_start_lines()
    ci_lines = [line for line in open(os.path.join(ROOT, '.ci', 'run')).read().splitlines()
                if line and not line.startswith('#') and not line.startswith(('set ', 'cd '))]
    assert ci_lines == [tests]
    assert 'pytest' in tests and 'requirements.txt' in tests


def test_demo_line_installs_and_runs_digits_with_obdsd():
    demo, _ = quick_start_lines()
    assert demo == 'pip install -r requirements.txt && python main.py --dataset digits --PSD --OBDP'
