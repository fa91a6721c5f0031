"""README's quick start stays true: CI runs exactly its test line (after the linter), and its demo line is the digits
demo."""
import os
import re
import subprocess

from runs import ROOT


def quick_start_lines():
    text = open(os.path.join(ROOT, 'README.md')).read()
    block = re.search(r'## Quick start\s+```bash\n(.*?)```', text, re.S).group(1)
    return block.strip().splitlines()


def test_ci_runs_the_readme_test_line_in_a_fresh_venv():
    demo, tests = quick_start_lines()
    script = open(os.path.join(ROOT, '.ci', 'run')).read()
    commands = [line for line in script.splitlines() if line and not line.startswith('#')]
    assert 'pytest' in tests and 'requirements.txt' in tests
    assert commands[-1] == tests, 'the test line is last, so its exit code (pytest 5: no tests ran) is the script\'s'
    assert commands[0] == 'set -euo pipefail'
    creates = next(i for i, line in enumerate(commands) if ' -m venv "$venv"' in line)
    activates = commands.index('source "$venv/bin/activate"')
    lints = commands.index('python -m ruff check .')
    assert creates < activates < lints < len(commands) - 1, 'the linter runs in the venv, before the tests'
    assert 'mktemp -d' in script and 'site-packages' not in script


INSTALL = 'pip install -r requirements.txt -r requirements-dev.txt'

FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python3: '-m venv DIR' makes a venv whose pip succeeds and whose python records its arguments, then
# exits with $LINT_EXIT for ruff and $FAKE_EXIT for pytest (5: no tests ran).
[ "$1 $2" = "-m venv" ] || exit 99
mkdir -p "$3/bin"
echo 'export PATH="'"$3"'/bin:$PATH"' > "$3/bin/activate"
printf '#!/usr/bin/env bash\\necho "pip $*" >> "%s"\\n' "$RECORD" > "$3/bin/pip"
printf '#!/usr/bin/env bash\\necho "venv python $*" >> "%s"\\n' "$RECORD" > "$3/bin/python"
echo '[ "$2" = ruff ] && exit "$LINT_EXIT"; exit "$FAKE_EXIT"' >> "$3/bin/python"
echo "$3" > "$RECORD.venv"
chmod +x "$3/bin/pip" "$3/bin/python"
"""


def test_ci_lints_then_fails_when_pytest_runs_no_test_and_uses_only_its_venv(tmp_path):
    fake = tmp_path / 'python3'
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    (tmp_path / 'bin').mkdir()
    (tmp_path / 'bin' / 'initdb').write_text('#!/bin/sh\n')  # PostgreSQL's server is there: nothing to install
    (tmp_path / 'bin' / 'initdb').chmod(0o755)
    record = tmp_path / 'record'
    lint, tests = [INSTALL, 'venv python -m ruff check .'], [INSTALL, 'venv python -m pytest -q tests']
    for lint_exit, test_exit, code, commands in ((0, 5, 5, lint + tests), (0, 0, 0, lint + tests),
                                                 (1, 0, 1, lint)):
        record.write_text('')
        result = subprocess.run(['bash', os.path.join(ROOT, '.ci', 'run')], capture_output=True, text=True,
                                env={**os.environ, 'PATH': f'{tmp_path / "bin"}:{os.environ["PATH"]}',
                                     'PYTHON': str(fake), 'RECORD': str(record),
                                     'LINT_EXIT': str(lint_exit), 'FAKE_EXIT': str(test_exit)})
        assert result.returncode == code, result.stderr
        assert record.read_text().splitlines() == commands, 'a lint finding fails CI before the tests run'
        assert not os.path.exists(open(f'{record}.venv').read().strip()), 'the venv is removed afterwards'


def test_ci_prepares_postgresql_and_requires_its_test_to_run():
    script = open(os.path.join(ROOT, '.ci', 'run')).read()
    commands = [line.strip() for line in script.splitlines() if line and not line.startswith('#')]
    assert commands.index('export OBD_SD_REQUIRE_POSTGRESQL=1') < len(commands) - 1, 'set for the test line'
    installs = next(line for line in commands if 'apt-get install' in line)
    assert installs.endswith('postgresql >/dev/null') and 'compgen -G \'/usr/lib/postgresql/*/bin/initdb\'' in script
    from postgresql_server import REQUIRED
    assert REQUIRED == 'OBD_SD_REQUIRE_POSTGRESQL'


def test_demo_line_installs_and_runs_digits_with_obdsd():
    demo, _ = quick_start_lines()
    assert demo == 'pip install -r requirements.txt && python main.py --dataset digits --PSD --OBDP'
