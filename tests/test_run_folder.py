import os
import time

import pytest

from plumbing.errors import UserError
from run_folder.folder import new_run_folder, resume_checkpoint


def test_new_run_folders_never_reuse_a_name(tmp_path):
    folders = [new_run_folder(str(tmp_path), 'cub200', 'CUB_MS') for _ in range(3)]
    assert [os.path.basename(f) for f in folders] == ['CUB_MS', 'CUB_MS_1', 'CUB_MS_2']


def test_resume_auto_takes_the_newest_run_of_the_group_only(tmp_path):
    paths = {}
    for name in ('CUB_MS', 'CUB_MS_1', 'CUB_MS_obdsd', 'CUB_MS_2'):
        folder = tmp_path / 'cub200' / name
        folder.mkdir(parents=True)
        paths[name] = folder / 'last.pth'
        paths[name].write_bytes(b'')
        time.sleep(0.01)
    os.utime(paths['CUB_MS_obdsd'], (time.time() + 60, time.time() + 60))
    assert resume_checkpoint('auto', str(tmp_path), 'cub200', 'CUB_MS') == str(paths['CUB_MS_2'])
    with pytest.raises(UserError, match='no run of --dataset cars196'):
        resume_checkpoint('auto', str(tmp_path), 'cars196', 'CUB_MS')
