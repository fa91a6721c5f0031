"""One process at a time per run folder: a lock file that names its holder and dies with it."""
import fcntl
import logging
import os
import socket
import time

from plumbing.errors import UserError
from plumbing.files import remove_stale_temporaries

logger = logging.getLogger(__name__)

LOCK_FILE = 'run.lock'


class RunFolderLock:
    """An exclusive flock on <folder>/run.lock, taken on creation and held until `release()`.

    The kernel drops a flock when its process ends in any way (SIGKILL included), so a lock file that a dead
    process left behind is simply taken over. The file says who holds it: pid, host and start time.
    """

    def __init__(self, folder, in_use_hint=None):
        self.path = os.path.join(folder, LOCK_FILE)
        self.descriptor = None
        while self.descriptor is None:
            try:
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                raise UserError(f'cannot create {self.path} ({error.strerror}); the run folder must be '
                                f'writable') from None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                hint = in_use_hint or ('two processes must not write one run folder: wait for it to end (or stop '
                                       'it), or start a new run without --resume')
                raise UserError(f'{folder} is in use by {self.holder()}; {hint}') from None
            except OSError as error:  # a filesystem without file locks (e.g. Lustre mounted without flock)
                logger.warning('cannot lock %s (%s): nothing keeps a second process out of this run folder',
                               self.path, error.strerror)
                self.descriptor = descriptor
                break
            if self.still_named(descriptor):
                self.descriptor = descriptor
            else:  # its holder removed the file between our open and flock: lock the file there now
                os.close(descriptor)
        os.ftruncate(self.descriptor, 0)
        stamp = time.strftime('%Y-%m-%d %H:%M:%S')
        os.write(self.descriptor, f'pid {os.getpid()} on host {socket.gethostname()} since {stamp}\n'.encode())

    def still_named(self, descriptor):
        try:
            return os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            return False

    def holder(self):
        try:
            with open(self.path) as stream:
                return f'another process ({stream.read().strip() or "starting"})'
        except OSError:
            return 'another process'

    def release(self):
        """Remove the lock file, then drop the lock (a process waiting on the file retries on the new one)."""
        if self.descriptor is None:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        os.close(self.descriptor)
        self.descriptor = None

    def __del__(self):
        self.release()


def claim_run_folder(folder, in_use_hint=None):
    """Lock `folder` for this process and clear what an earlier process killed mid-write left there; `in_use_hint`
    says what to do where another process holds it (a run folder's advice unless given)."""
    lock = RunFolderLock(folder, in_use_hint)
    stale = remove_stale_temporaries(folder)
    if stale:
        logger.info('removed %d temporary files that an interrupted write left in %s: %s', len(stale), folder,
                    ', '.join(stale))
    return lock
