"""Start-up: `--help`, `--dry_run` and argument errors import none of the heavy libraries (they cost seconds each:
docs/performance.md, "Start-up"), and the search coordinator lists a split without torch.

Every command runs in one fresh interpreter, one after the other, with the modules it imported listed after each:
as imports only add modules, a heavy one that appears after a command was imported by that command. The commands
that need no torch run first, so that their check of torch means something.
"""
import json
import os
import subprocess
import sys
import textwrap

from runs import ROOT

HEAVY = ('matplotlib', 'sklearn', 'faiss', 'wandb', 'timm', 'huggingface_hub', 'optuna', 'onnx', 'onnxruntime',
         'scipy', 'sympy', 'pytorch_metric_learning', 'torchvision', 'torch._dynamo')
"""Packages that none of these commands imports (torchvision imports torch._dynamo and sympy)."""
NEEDS_NO_TORCH = ('torch',)

COMMANDS = [
    # (entry point, arguments, exit code, whether torch may be imported)
    ('Result_Evaluations', ['--help'], 0, False),
    ('Hyperparameter_Search', ['--help'], 0, False),
    ('Hyperparameter_Search', ['--n_trials', 'some'], 2, False),
    ('main', ['--help'], 0, True),
    ('main', ['--dataset', 'digits', '--dry_run'], 0, True),
    ('main', ['--dataset', 'digits', '--bs', 'many'], 2, True),  # refused by argparse
    ('main', ['--dataset', 'digits', '--bs', '3', '--samples_per_class', '2'], 2, True),  # refused by the checks
    ('Search_Index', ['--help'], 0, True),
    ('Export_ONNX', ['--help'], 0, True),
    ('Test_pretrained_models', ['--help'], 0, True),
    ('Input_Baseline', ['--help'], 0, True),
]

RUN_COMMANDS = textwrap.dedent('''\
    import contextlib, importlib, io, json, sys
    from plumbing.errors import exit_code

    results = []
    for module_name, arguments in json.loads(sys.argv[1]):
        output = io.StringIO()
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            try:
                code = exit_code(lambda: importlib.import_module(module_name).main(arguments))
            except SystemExit as stop:  # argparse's --help and errors
                code = stop.code
        results.append({'code': code, 'output': output.getvalue(), 'modules': sorted(sys.modules)})
    print(json.dumps(results))
''')


def heavy_modules(modules, torch_allowed):
    forbidden = HEAVY if torch_allowed else HEAVY + NEEDS_NO_TORCH
    return sorted(name for name in modules if any(name == top or name.startswith(top + '.') for top in forbidden))


def run_python(code, *args, env=None):
    result = subprocess.run([sys.executable, '-c', code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, 'WANDB_MODE': 'disabled', **(env or {})})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_help_dry_run_and_argument_errors_import_no_heavy_library(tmp_path):
    results = run_python(RUN_COMMANDS, json.dumps([[name, arguments] for name, arguments, _, _ in COMMANDS]),
                         env={'XDG_CACHE_HOME': str(tmp_path)})  # digits' folder, which a dry run does not write
    seen = set()
    for (name, arguments, code, torch_allowed), result in zip(COMMANDS, results, strict=True):
        command = f'{name}.py {" ".join(arguments)}'
        assert result['code'] == code, (command, result['output'])
        assert heavy_modules(set(result['modules']) - seen, torch_allowed) == [], command
        seen.update(result['modules'])
    help_text, dry_run = results[3]['output'], results[4]['output']
    assert 'usage: main.py' in help_text and '--loss' in help_text and '--dataset' in help_text
    assert '"dataset": "digits"' in dry_run and 'loss: multisimilarity_obd_sd' in dry_run
    assert 'error' in results[5]['output'] and '--bs' in results[6]['output']
    assert not os.listdir(tmp_path)


def test_the_search_coordinator_lists_and_splits_a_dataset_without_torch(tmp_path):
    """What Hyperparameter_Search.py's check of the base run does with the data: the split files listed, the
    validation split carved out; no image is opened, so neither torch nor torchvision is needed."""
    for split, classes in (('train', ('ant', 'bee', 'cat', 'dog')), ('test', ('eel', 'fox'))):
        for label in classes:
            os.makedirs(tmp_path / split / label)
            for index in range(3):
                (tmp_path / split / label / f'{index}.jpg').write_bytes(b'not decoded')
    code = textwrap.dedent('''\
        import argparse, json, sys
        import datasets

        opt = argparse.Namespace(dataset='folder', source_path=sys.argv[1], split_file=None, cv_folds=None,
                                 cv_fold=None, use_tv_split=True, tv_split_perc=0.5, tv_split_by_samples=False, seed=0)
        _, splits, _ = datasets.load_splits(opt)
        training, validation, _ = datasets.split_validation(opt, splits['training'])
        print(json.dumps({'sizes': [len(training.samples), len(validation.samples), len(splits['testing'].samples)],
                          'modules': sorted(sys.modules)}))
    ''')
    result = run_python(code, str(tmp_path))
    assert result['sizes'] == [6, 6, 6]
    assert heavy_modules(result['modules'], torch_allowed=False) == []
