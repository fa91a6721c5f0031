"""Helpers for tests that run main.py and Test_pretrained_models.py, in-process or as a subprocess."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME_KEYS = ('train_time_s', 'eval_time_s')
TINY_ARCH = 'test_resnet_normalize'


def run_script(script, *args, timeout=300, env=None):
    """Run a repository script as a user would; returns the CompletedProcess (text). `env` adds to the environment,
    or removes where a value is None (W&B is disabled unless `env` says otherwise)."""
    environment = {**os.environ, 'WANDB_MODE': 'disabled', **(env or {})}
    environment = {name: value for name, value in environment.items() if value is not None}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def run_entry_point(module_name, *args):
    """A script's main(argv) run as its `__main__` block runs it (plumbing.errors.exit_code), but in this process,
    which has paid already for the imports that a subprocess repeats (seconds each): the exit code (stderr for
    capsys)."""
    import importlib

    from plumbing.errors import exit_code

    module = importlib.import_module(module_name)
    return exit_code(lambda: module.main([str(a) for a in args]))


def run_main(*args):
    """main.main in-process; a UserError comes back as the SystemExit that the command line would give."""
    import main
    from plumbing.errors import UserError, exit_with

    try:
        return main.main([str(a) for a in args])
    except UserError as error:
        with pytest.raises(SystemExit) as stop:
            exit_with(error)
        return stop.value.code


def one_line_error(capsys, code):
    """The one-line error an entry point printed, after a check that it is one line and that the exit `code` is 2,
    a user error's."""
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1 and err.startswith('error: '), err
    return err


def read_summary(folder):
    with open(os.path.join(folder, 'summary.json')) as stream:
        return json.load(stream)


def comparable(history):
    """A summary history without the wall-clock fields."""
    return [{k: v for k, v in entry.items() if k not in TIME_KEYS} for entry in history]


def tiny_run_flags(source, save_path, **overrides):
    """A small CPU run on a generated cub200 folder: timm's test_resnet (a ResNet of a few thousand weights, with
    BatchNorm) at 32 px, 2 classes x 4 images a batch. A run takes a third of resnet18's time and its checkpoints
    a 25th of the disk; a test about a particular network names its --arch."""
    flags = {'--dataset': 'cub200', '--source': source, '--save_path': save_path, '--arch': TINY_ARCH,
             '--not_pretrained': None, '--image_size': 32, '--bs': 8, '--samples_per_class': 4, '--n_epochs': 2,
             '--kernels': 0, '--embed_dim': 16, '--lr': 1e-3, '--group': 'tiny', '--PSD': None, '--OBDP': None,
             '--kd_lambda': 10}
    flags.update(overrides)
    args = []
    for flag, value in flags.items():
        if value is False:
            continue
        args.append(flag)
        if value is not None:
            args += value if isinstance(value, list) else [str(value)]
    return args


def recording_criteria(monkeypatch):
    """Every training step of the runs to come, as [{'epoch', 'loss', 'labels', 'gradient'}]: the criterion main.py
    selects records its loss, the batch's labels and the size (sum of |.|) of the gradient it sends into the
    embeddings."""
    import criteria

    steps, select = [], criteria.select

    def recording_select(loss, opt, n_classes=None):
        criterion = select(loss, opt, n_classes=n_classes)
        forward = criterion.forward

        def recording_forward(batch, labels, teacher_batch=None, epoch=0):
            value = forward(batch, labels, teacher_batch=teacher_batch, epoch=epoch)
            step = {'epoch': epoch, 'loss': value.item(), 'labels': labels.tolist(), 'gradient': 0.0}
            batch.register_hook(lambda grad: step.update(gradient=grad.abs().sum().item()))
            steps.append(step)
            return value

        criterion.forward = recording_forward
        return criterion

    monkeypatch.setattr(criteria, 'select', recording_select)
    return steps
