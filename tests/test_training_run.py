"""End-to-end training runs on tiny generated datasets, on the CPU."""
import glob
import math
import os
import re
import shlex

import pytest
import torch
from PIL import Image

from runs import ROOT, read_summary, recording_criteria, run_main, run_script, tiny_run_flags

pytestmark = pytest.mark.slow  # every test here completes a training run


def paper_command(group):
    """The argv of a Sample_Runs/SampleRuns.sh command, by its --group."""
    text = open(os.path.join(ROOT, 'Sample_Runs', 'SampleRuns.sh')).read().replace('\\\n', ' ')
    for line in text.splitlines():
        if line.startswith('python main.py') and f'--group {group} ' in line:
            return shlex.split(line)[2:]
    raise AssertionError(f'no command of group {group}')


def test_paper_cub_obdsd_command_runs_on_cpu(make_cub200, tmp_path):
    data = make_cub200(n_classes=112, per_class=2, image_size=16)
    args = [a.replace('$datapath', str(data.parent)) for a in paper_command('CUB_MS_obdsd_e150_lamda-1000.0_d-w0.3')]
    args += ['--not_pretrained', '--image_size', '32', '--n_epochs', '2', '--kernels', '0', '--save_path', tmp_path]
    result = run_script('main.py', *args, env={'WANDB_MODE': 'offline'})
    assert result.returncode == 0, result.stderr[-2000:]
    folder = tmp_path / 'cub200' / 'CUB_MS_obdsd_e150_lamda-1000.0_d-w0.3'
    summary = read_summary(folder)
    history = summary['history']
    assert [entry['epoch'] for entry in history] == [0, 1]
    assert history[0]['loss_kd'] == 0 and history[1]['loss_kd'] > 0
    for entry in history:
        assert {'loss', 'loss_rank', 'train_time_s', 'eval_time_s', 'e_recall@1', 'e_recall@8', 'nmi', 'f1',
                'mAP@R'} <= set(entry)
        assert 0 <= entry['e_recall@1'] <= entry['e_recall@2'] <= entry['e_recall@8'] <= 1
    assert set(summary['best']) == {'e_recall@1', 'nmi'} and set(summary['best_epoch']) == {'e_recall@1', 'nmi'}
    for name in ('best_e_recall@1.pth', 'best_nmi.pth', 'last.pth'):
        checkpoint = torch.load(folder / name, weights_only=True)
        assert checkpoint['config']['arch'] == 'resnet50_normalize_frozen'
        assert checkpoint['state_dict']['model.last_linear.weight'].shape == (128, 2048)
    assert (folder / 'metrics.csv').read_text().count('\n') == 3
    with Image.open(folder / 'curves.png') as curves:
        assert curves.format == 'PNG' and min(curves.size) > 100
    run_id = torch.load(folder / 'last.pth', weights_only=True)['training_state']['online_run_id']
    offline, = glob.glob(str(folder / 'wandb' / f'offline-run-*-{run_id}'))  # W&B logged offline into the folder
    assert glob.glob(f'{offline}/run-{run_id}.wandb')


@pytest.mark.slow  # the README's demo, as a process of its own
def test_digits_demo_reports_recall_every_epoch(tmp_path):
    result = run_script('main.py', '--dataset', 'digits', '--PSD', '--OBDP', '--n_epochs', '2',
                        '--source', tmp_path / 'digits', '--save_path', tmp_path / 'runs')
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'defaults applied where you set nothing' in result.stdout
    recalls = re.findall(r'epoch (\d) \|.*e_recall@1 ([0-9.]+)', result.stdout)
    assert [epoch for epoch, _ in recalls] == ['0', '1']
    assert all(float(value) > 0.5 for _, value in recalls), 'digits are easy: recall well above chance'


def test_runs_never_overwrite_an_existing_run(make_cub200, tmp_path):
    data = make_cub200(n_classes=6, per_class=4)
    flags = tiny_run_flags(data, tmp_path, **{'--n_epochs': 1})
    assert run_main(*flags) == 0
    first = read_summary(tmp_path / 'cub200' / 'tiny')
    assert run_main(*flags) == 0
    assert read_summary(tmp_path / 'cub200' / 'tiny') == first
    second = read_summary(tmp_path / 'cub200' / 'tiny_1')
    assert [entry['epoch'] for entry in second['history']] == [0] and second['config'] == first['config']
    assert len(second['sessions']) == 1 and second['sessions'][0]['started'] >= first['sessions'][0]['ended']


def test_psd_without_obdp_and_validation_split(make_cub200, tmp_path):
    data = make_cub200(n_classes=10, per_class=4)
    flags = tiny_run_flags(data, tmp_path, **{'--OBDP': False, '--use_tv_split': None, '--tv_split_perc': 0.6,
                                               '--evaluation_metrics': ['e_recall@1', 'nmi', 'mAP@R']})
    assert run_main(*flags) == 0
    summary = read_summary(tmp_path / 'cub200' / 'tiny')
    history = summary['history']
    assert history[0]['loss_kd'] == 0 and history[1]['loss_kd'] > 0
    # 5 training classes: int(5 x 0.6) = 3 of them train, the other 2 validate; the 5 test classes as they are
    session, = summary['sessions']
    assert session['split_sizes'] == {'training': 12, 'validation': 8, 'testing': 20}
    assert session['split_classes'] == {'training': 3, 'validation': 2, 'testing': 5}
    for entry in history:
        for name in ('e_recall@1', 'nmi', 'mAP@R'):
            assert 0 <= entry[f'val_{name}'] <= 1 and 0 <= entry[name] <= 1, name


def test_other_losses_train(make_cub200, tmp_path, monkeypatch):
    """Margin (inside OBD-SD), triplet and contrastive each train the network: every step's loss is finite and
    positive and sends a gradient into the embeddings, the logged loss is the mean of the steps' losses, the
    metrics are in [0, 1]; margin's own parameter beta moves, for classes its batches held only."""
    steps = recording_criteria(monkeypatch)
    data = make_cub200(n_classes=6, per_class=4)
    for loss in ('margin_obd_sd', 'triplet', 'contrastive'):
        steps.clear()
        extra = {'--PSD': False, '--OBDP': False} if not loss.endswith('_obd_sd') else {}
        # class_distinct: every batch holds 2 classes (class_random may draw one class twice: no negative, loss 0)
        epochs = 2 if loss.endswith('_obd_sd') else 1  # epoch 1: the distillation term is on
        flags = tiny_run_flags(data, tmp_path, **{'--loss': loss, '--n_epochs': epochs, '--group': loss,
                                                  '--data_sampler': 'class_distinct', **extra})
        assert run_main(*flags) == 0
        folder = tmp_path / 'cub200' / loss
        history = read_summary(folder)['history']
        assert [entry['epoch'] for entry in history] == list(range(epochs)), loss
        assert sorted({step['epoch'] for step in steps}) == list(range(epochs)), loss
        for step in steps:
            assert math.isfinite(step['loss']) and step['loss'] > 0, (loss, step)
            assert step['gradient'] > 0, (loss, step)  # the loss, not only weight decay, moves the network
        for entry in history:
            losses = [step['loss'] for step in steps if step['epoch'] == entry['epoch']]
            assert entry['loss'] == pytest.approx(sum(losses) / len(losses), rel=1e-5), loss
            assert entry['skipped_nonfinite'] == 0
            assert 0 <= entry['e_recall@1'] <= entry['e_recall@2'] <= entry['e_recall@8'] <= 1, loss
            assert 0 <= entry['nmi'] <= 1 and 0 <= entry['mAP@R'] <= 1, loss
        if loss == 'margin_obd_sd':
            assert history[0]['loss_kd'] == 0 and history[1]['loss_kd'] > 0, 'the distillation term trains in epoch 1'
            state = torch.load(folder / 'last.pth', weights_only=True)['training_state']['criterion']
            beta = state['base_loss.beta']
            assert beta.shape == (3,), 'one boundary per training class'
            moved = set(torch.nonzero(beta != torch.full_like(beta, 1.2)).flatten().tolist())
            assert moved and moved <= {label for step in steps for label in step['labels']}, (beta, steps)


def test_bfloat16_autocast_run_keeps_float32_losses(make_cub200, tmp_path, monkeypatch):
    from criteria.obd_sd import ObdSdLoss

    seen = []
    original = ObdSdLoss.forward

    def recording(self, batch, labels, teacher_batch=None, epoch=0):
        loss = original(self, batch, labels, teacher_batch=teacher_batch, epoch=epoch)
        seen.append((batch.dtype, None if teacher_batch is None else teacher_batch.dtype, loss.dtype))
        return loss

    monkeypatch.setattr(ObdSdLoss, 'forward', recording)
    data = make_cub200(n_classes=6, per_class=4)
    assert run_main(*tiny_run_flags(data, tmp_path, **{'--amp': None})) == 0
    history = read_summary(tmp_path / 'cub200' / 'tiny')['history']
    assert history[1]['loss_kd'] > 0 and all(entry['loss'] == entry['loss'] for entry in history)
    assert set(seen) == {(torch.bfloat16, None, torch.float32), (torch.bfloat16, torch.bfloat16, torch.float32)}


def test_corrupt_images_are_left_out_and_counted_in_the_run_log(make_cub200, tmp_path):
    data = make_cub200(n_classes=6, per_class=4, corrupt=2, truncated=1)
    assert run_main(*tiny_run_flags(data, tmp_path, **{'--n_epochs': 1})) == 0
    log = (tmp_path / 'cub200' / 'tiny' / 'log.txt').read_text()
    assert 'cub200 training: left out 2 unreadable images' in log
    assert len(read_summary(tmp_path / 'cub200' / 'tiny')['history']) == 1


def test_evaluate_every_skips_epochs_but_always_evaluates_the_last(make_cub200, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, 'compile', lambda module: compiled.append(type(module).__name__))
    data = make_cub200(n_classes=4, per_class=4)
    assert run_main(*tiny_run_flags(data, tmp_path, **{'--n_epochs': 3, '--evaluate_every': 2,
                                                       '--compile': None})) == 0
    assert compiled == ['TimmEmbedding'], '--compile compiles the student only'
    folder = tmp_path / 'cub200' / 'tiny'
    summary = read_summary(folder)
    evaluated = [entry['epoch'] for entry in summary['history'] if 'e_recall@1' in entry]
    assert [entry['epoch'] for entry in summary['history']] == [0, 1, 2] and evaluated == [1, 2]
    assert set(summary['best_epoch'].values()) <= {1, 2}
    best = torch.load(folder / 'best_e_recall@1.pth', weights_only=True)
    assert best['epoch'] == summary['best_epoch']['e_recall@1']
    assert (folder / 'curves.png').exists()


def test_a_compiled_run_trains_and_its_checkpoint_loads_without_compile(make_cub200, tmp_path):
    """A real torch.compile (inductor, which builds C++ kernels on the CPU): the run compiles, trains and evaluates;
    its checkpoints hold the plain state-dict keys (no `_orig_mod.`), so a network built without --compile loads
    them strictly and Test_pretrained_models.py scores the run's best model as the run did."""
    import json
    import shutil

    if not (shutil.which('cc') or shutil.which('gcc')):
        pytest.skip('torch.compile on the CPU needs a C compiler (cc or gcc), and this machine has none')
    import torch._dynamo
    import torch._inductor.config

    import architectures
    from run_folder.checkpoint import load_weights
    from runs import run_entry_point

    arch = 'test_vit_normalize'  # identical blocks share their kernels: the least C++ to compile of timm's test nets
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    data = make_cub200(n_classes=4, per_class=4)
    with torch._inductor.config.patch({'cpp.vec_isa_ok': False}):  # scalar C++ kernels: the same graphs, less to build
        assert run_main(*tiny_run_flags(data, tmp_path, **{'--n_epochs': 1, '--compile': None, '--arch': arch})) == 0
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] >= 1, 'nothing was compiled'
    torch._dynamo.reset()
    folder = tmp_path / 'cub200' / 'tiny'
    for name in ('best_e_recall@1.pth', 'last.pth'):
        keys = torch.load(folder / name, weights_only=True)['state_dict']
        assert keys and not any('_orig_mod' in key for key in keys), name
    network = architectures.build(arch, 16, pretrained=False, image_size=32)
    load_weights(network, str(folder / 'best_e_recall@1.pth'))
    out = tmp_path / 'compiled.json'
    assert run_entry_point('Test_pretrained_models', '--dataset', 'cub200', '--source', data, '--kernels', 0,
                           '--checkpoint', folder / 'best_e_recall@1.pth', '--out', out) == 0
    scored = json.loads(out.read_text())['results']['checkpoint']['metrics']['e_recall@1']
    assert scored == pytest.approx(read_summary(folder)['best']['e_recall@1'], abs=1e-6)
