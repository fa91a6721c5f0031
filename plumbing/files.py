"""Crash-safe file writes: temporary file in the same folder, flush, fsync, rename; the user's umask applies."""
import io
import json
import os
import re
import tempfile

from plumbing.errors import UserError
from plumbing.lazy import lazy_module

torch = lazy_module('torch')  # for atomic_torch_save alone: the other writers need no torch

# What atomic_write_bytes names its temporary files: .<file name>.<8 random characters>.tmp
TEMPORARY_NAME = re.compile(r'^\..+\.[A-Za-z0-9_]{8}\.tmp$')


class FileWriteError(UserError):
    """A file could not be written (disk full, no permission, ...); its previous version, if any, is unchanged."""

    def __init__(self, path, error):
        super().__init__(f'cannot write {path} ({error.strerror or error}); its previous version, if any, is '
                         f'unchanged and nothing half-written was left')
        self.path = path


def atomic_write_bytes(path, data):
    """Replace `path` with `data` so that a crash leaves either the old or the new file, never a partial one.

    The file gets the permissions any other tool would give it under the user's umask (mkstemp alone gives 0600);
    an OSError (e.g. a full disk) becomes a FileWriteError naming the file.
    """
    def write(temporary):
        with open(temporary, 'wb') as stream:
            stream.write(data)
    atomic_write_with(path, write)


def atomic_write_with(path, write):
    """atomic_write_bytes for a writer that wants a file name: `write(temporary_path)` writes the new content (e.g.
    faiss.write_index, or a stream of CSV rows), which then is flushed to disk and replaces `path`; nothing is held
    in memory here."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    except OSError as error:
        raise FileWriteError(path, error) from None
    try:
        os.fchmod(handle, 0o666 & ~current_umask())
        os.close(handle)
        write(temporary)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(error, OSError):
            raise FileWriteError(path, error) from None
        raise
    sync_folder(folder)


def current_umask():
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def remove_stale_temporaries(folder):
    """Delete the temporary files that atomic writes killed mid-way (SIGKILL, power loss) left in `folder`;
    returns their names. Call it only while no other process writes into `folder`."""
    stale = sorted(name for name in os.listdir(folder) if TEMPORARY_NAME.match(name))
    for name in stale:
        os.remove(os.path.join(folder, name))
    return stale


def sync_folder(folder):
    """fsync a folder so a rename in it survives a power loss (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode('utf-8'))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + '\n')


def atomic_torch_save(obj, path):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())
