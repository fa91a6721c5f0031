"""Sample_Runs/digits_seeds.sh: 3 settings x 5 fixed seeds into its own folder, then the table; runs as written."""
import json
import os
import shlex
import subprocess

import pytest

import Input_Baseline
import Result_Evaluations
from runs import ROOT, read_summary, run_main

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


def test_three_settings_of_five_seeds_then_the_table(tmp_path, capsys):
    save_path = tmp_path / 'seeds'
    result, calls = recorded_commands(tmp_path, save_path)
    assert result.returncode == 0, result.stderr
    runs, baseline, table = calls[:-2], calls[-2], calls[-1]
    assert baseline == ['Input_Baseline.py', '--dataset', 'digits', '--save_path', str(save_path),
                        '--group', 'digits_raw_pixels']
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
    for args in runs[:3]:  # each setting's first command, as main.py resolves it
        assert run_main(*args[1:], '--dry_run') == 0
        printed = capsys.readouterr().out
        config = json.loads(printed[:printed.rindex('}') + 1])
        assert (config['dataset'], config['group'], config['seed']) == (
            'digits', args[args.index('--group') + 1], int(args[args.index('--seed') + 1]))
        assert config['deterministic'] is True and config['save_path'] == str(save_path)
        assert (config['PSD'], config['OBDP']) == ('--PSD' in args, '--OBDP' in args)


def test_the_table_has_the_raw_pixel_baseline_row_next_to_the_trained_runs(tmp_path):
    save_path = tmp_path / 'seeds'
    _, calls = recorded_commands(tmp_path, save_path)
    baseline, table = calls[-2:]
    assert Input_Baseline.main(baseline[1:]) == 0  # as the script runs it
    summary = read_summary(save_path / 'digits' / 'digits_raw_pixels')
    config, (entry,) = summary['config'], summary['history']
    assert config['arch'] == Input_Baseline.ARCH and config['n_epochs'] == 0
    assert config['image_size'] == 32, 'the test images as the digits runs see them'
    trained = save_path / 'digits' / 'digits_MS_s0'  # a trained run's record beside it
    trained.mkdir()
    trained_config = {**config, 'arch': 'resnet18_normalize', 'n_epochs': 1, 'group': 'digits_MS_s0', 'seed': 0}
    (trained / 'summary.json').write_text(json.dumps({'config': trained_config, 'history': [{**entry, 'nmi': 0.5}]}))

    assert Result_Evaluations.main(table[1:]) == 0
    lines = (save_path / 'table' / 'results.md').read_text().splitlines()
    rows = {cells[0]: cells[1:] for cells in ([cell.strip() for cell in line.strip('|').split('|')]
                                              for line in lines if line.startswith('| digits'))}
    assert set(rows) == {'digits_MS', 'digits_raw_pixels'}
    assert rows['digits_raw_pixels'][:2] == ['1', f'{100 * entry["e_recall@1"]:.2f}']
    assert entry['e_recall@1'] > 0.95, 'the input itself retrieves digits 5-9 almost perfectly'


def test_refuses_a_folder_that_already_holds_runs(tmp_path):
    save_path = tmp_path / 'seeds'
    (save_path / 'digits' / 'digits_MS_s0').mkdir(parents=True)
    result, calls = recorded_commands(tmp_path, save_path)
    assert result.returncode == 2 and 'already holds runs' in result.stderr and calls == []


@pytest.fixture(autouse=True)
def digits_cache(tmp_path, monkeypatch):
    """Dry runs resolve the digits folder in the default cache: keep it inside the test's folder."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
