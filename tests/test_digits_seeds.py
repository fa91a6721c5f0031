"""Sample_Runs/digits_seeds.sh: 3 settings x 5 fixed seeds into its own folder, then the table; runs as written."""
import os
import shlex
import subprocess

import pytest

from runs import ROOT, run_main

SCRIPT = os.path.join(ROOT, 'Sample_Runs', 'digits_seeds.sh')


def recorded_commands(tmp_path, save_path):
    """Run the script with a PYTHON that only records its arguments; returns the argument lists."""
    log = tmp_path / 'calls.txt'
    recorder = tmp_path / 'python'
    recorder.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$(printf "%q " "$@")" >> {shlex.quote(str(log))}\n')
    recorder.chmod(0o755)
    result = subprocess.run(['bash', SCRIPT], env={**os.environ, 'PYTHON': str(recorder), 'save_path': str(save_path)},
                            capture_output=True, text=True, timeout=60)
    return result, [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_three_settings_of_five_seeds_then_the_table(tmp_path):
    save_path = tmp_path / 'seeds'
    result, calls = recorded_commands(tmp_path, save_path)
    assert result.returncode == 0, result.stderr
    runs, table = calls[:-1], calls[-1]
    assert table == ['Result_Evaluations.py', f'{save_path}/digits', '--out', f'{save_path}/table']
    settings = {}
    for args in runs:
        assert args[0] == 'main.py' and '--deterministic' in args
        group = args[args.index('--group') + 1]
        seed = args[args.index('--seed') + 1]
        assert group.endswith(f'_s{seed}') and args[args.index('--save_path') + 1] == str(save_path)
        settings.setdefault(group.rsplit('_s', 1)[0], []).append((seed, '--PSD' in args, '--OBDP' in args))
    assert settings == {
        'digits_MS': [(str(s), False, False) for s in range(5)],
        'digits_MS_PSD': [(str(s), True, False) for s in range(5)],
        'digits_MS_OBDSD': [(str(s), True, True) for s in range(5)],
    }
    for args in runs[:3]:
        assert run_main(*args[1:], '--dry_run') == 0


def test_refuses_a_folder_that_already_holds_runs(tmp_path):
    save_path = tmp_path / 'seeds'
    (save_path / 'digits' / 'digits_MS_s0').mkdir(parents=True)
    result, calls = recorded_commands(tmp_path, save_path)
    assert result.returncode == 2 and 'already holds runs' in result.stderr and calls == []


@pytest.fixture(autouse=True)
def digits_cache(tmp_path, monkeypatch):
    """Dry runs resolve the digits folder in the default cache: keep it inside the test's folder."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
