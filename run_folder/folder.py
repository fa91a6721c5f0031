"""Where a run writes: a fresh folder save_path/<dataset>/<name>, never an existing one; finding runs to resume."""
import glob
import os

from plumbing.errors import UserError

LAST_CHECKPOINT = 'last.pth'
CONFIG_FILE = 'config.json'  # the resolved configuration, written when a run starts


def check_run_name(name, flag):
    """UserError unless `name` (from `flag`) is one folder name, so the run folder stays inside --save_path."""
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    if any(sep in name for sep in separators) or name in ('.', '..'):
        suggestion = name
        for sep in separators:
            suggestion = suggestion.replace(sep, '_')
        raise UserError(f'{flag} {name} would name the run folder, which must be one folder name inside --save_path '
                        f'(no "/", not "." or ".."); pass e.g. {flag} {suggestion.strip("._") or "run"}, or name the '
                        f'folder with --savename and say where runs go with --save_path')


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
        return newest_resumable(save_path, dataset, name)
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


def newest_resumable(save_path, dataset, name):
    """The last.pth of the run of `name` written last; a UserError when a run folder of `name` created after it
    has no last.pth (a run that never finished an epoch, or is still in its first): the user must choose."""
    pattern = os.path.join(save_path, dataset, glob.escape(name) + '*')
    folders = [path for path in glob.glob(pattern)
               if os.path.isdir(path) and is_run_named(os.path.basename(path), name)]
    resumable = [os.path.join(path, LAST_CHECKPOINT) for path in folders
                 if os.path.isfile(os.path.join(path, LAST_CHECKPOINT))]
    if not resumable:
        raise UserError(f'--resume auto found no run of --dataset {dataset} --group {name} with a {LAST_CHECKPOINT} '
                        f'under {os.path.join(save_path, dataset)}; start it without --resume')
    newest = max(resumable, key=os.path.getmtime)
    newer_without = [path for path in folders if not os.path.isfile(os.path.join(path, LAST_CHECKPOINT))
                     and os.path.getmtime(path) > os.path.getmtime(newest)]
    if newer_without:
        folder = max(newer_without, key=os.path.getmtime)
        raise UserError(f'--resume auto: the newest run of --group {name}, {folder}, has no {LAST_CHECKPOINT} (it '
                        f'never finished an epoch), and the one before, {os.path.dirname(newest)}, has; resume that '
                        f'one with --resume {os.path.dirname(newest)}, or start {name} anew without --resume')
    return newest


def last_checkpoint_note(folder):
    """Where a stopped run stands, for its error message: its last complete checkpoint, or that there is none."""
    path = os.path.join(folder, LAST_CHECKPOINT)
    if os.path.isfile(path):
        return f'the last complete checkpoint {path} is intact'
    return f'no checkpoint of {folder} was complete yet'


def how_to_continue(folder):
    """After the cause is fixed: resume from the last checkpoint, or start again where there is none."""
    if os.path.isfile(os.path.join(folder, LAST_CHECKPOINT)):
        return f'continue with --resume {folder}'
    return 'start the run again'


def is_run_named(folder, name):
    """Whether a run folder is `name` or `name_<number>` (the suffix new_run_folder adds)."""
    suffix = folder[len(name):]
    return folder.startswith(name) and (suffix == '' or (suffix.startswith('_') and suffix[1:].isdigit()))
