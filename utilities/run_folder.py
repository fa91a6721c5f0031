"""Where a run writes: a fresh folder save_path/<dataset>/<name>, never an existing one; finding runs to resume."""
import glob
import os

from utilities.errors import UserError

LAST_CHECKPOINT = 'last.pth'
CONFIG_FILE = 'config.json'  # the resolved configuration, written when a run starts


def new_run_folder(save_path, dataset, name):
    """Create and return a folder that did not exist (name, name_1, name_2, ...)."""
    parent = os.path.join(save_path, dataset)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise UserError(f'cannot create {parent} ({error.strerror}); pass a writable --save_path') from None
    if not os.access(parent, os.W_OK):
        raise UserError(f'{parent} is not writable; pass a writable --save_path')
    candidate, number = os.path.join(parent, name), 0
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            number += 1
            candidate = os.path.join(parent, f'{name}_{number}')
        except OSError as error:
            raise UserError(f'cannot create {candidate} ({error.strerror}); pass a writable --save_path') from None


def resume_checkpoint(resume, save_path, dataset, name):
    """--resume RUN_FOLDER | CHECKPOINT | auto -> path of the checkpoint to continue from."""
    if resume == 'auto':
        pattern = os.path.join(save_path, dataset, glob.escape(name) + '*', LAST_CHECKPOINT)
        candidates = [path for path in glob.glob(pattern) if is_run_named(os.path.basename(os.path.dirname(path)), name)]
        if not candidates:
            raise UserError(f'--resume auto found no run of --dataset {dataset} --group {name} with a {LAST_CHECKPOINT} '
                            f'under {os.path.join(save_path, dataset)}; start it without --resume')
        return max(candidates, key=os.path.getmtime)
    if os.path.isdir(resume):
        path = os.path.join(resume, LAST_CHECKPOINT)
        if not os.path.isfile(path):
            raise UserError(f'{resume} holds no {LAST_CHECKPOINT}: nothing to resume there (the run ended before its '
                            f'first epoch?); start it again without --resume')
        return path
    if os.path.isfile(resume):
        return resume
    raise UserError(f'--resume {resume}: no such run folder or checkpoint; give a run folder, its {LAST_CHECKPOINT}, '
                    f'or auto')


def is_run_named(folder, name):
    """Whether a run folder is `name` or `name_<number>` (the suffix new_run_folder adds)."""
    suffix = folder[len(name):]
    return folder.startswith(name) and (suffix == '' or (suffix.startswith('_') and suffix[1:].isdigit()))
