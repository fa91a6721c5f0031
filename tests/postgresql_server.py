"""A throwaway PostgreSQL server for the tests: a cluster made by initdb in a temporary folder, started by pg_ctl on
a Unix socket in that folder (no TCP port, so nothing else can reach it and no port can clash), stopped and removed
afterwards.

The server refuses to run as root, so a root process (CI) runs initdb and pg_ctl as an unprivileged user: the
`postgres` system user that Debian's postgresql package creates. The binaries are taken from PATH, else from Debian's
/usr/lib/postgresql/<version>/bin. Where they or that user are missing, the server is Unavailable: the test skips,
unless REQUIRED is set in the environment (.ci/run sets it), and then it fails.
"""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile

REQUIRED = 'OBD_SD_REQUIRE_POSTGRESQL'
SERVER_USER = 'postgres'


class Unavailable(Exception):
    """No PostgreSQL server can be started here; the message says why."""


def not_here(why):
    """A test that needs the server: skipped, or failed where the environment sets REQUIRED (CI)."""
    import pytest

    if os.environ.get(REQUIRED):
        pytest.fail(f'{REQUIRED} is set and no PostgreSQL server can start: {why}')
    pytest.skip(f'no PostgreSQL server: {why}')


def server_binaries():
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (the newest)."""
    on_path = shutil.which('initdb')
    candidates = [os.path.dirname(on_path)] if on_path else []
    candidates += sorted(glob.glob('/usr/lib/postgresql/*/bin'),
                         key=lambda folder: [int(part) for part in folder.split('/')[-2].split('.') if part.isdigit()],
                         reverse=True)
    for folder in candidates:
        if all(os.access(os.path.join(folder, name), os.X_OK) for name in ('initdb', 'pg_ctl')):
            return folder
    raise Unavailable('PostgreSQL\'s initdb and pg_ctl are not installed (Debian: apt-get install postgresql)')


class PostgreSQLServer:
    """`with PostgreSQLServer() as server:` a running server; `server.url(database)` its Optuna storage URL."""

    def __init__(self):
        self.binaries = server_binaries()
        self.account = None
        if os.geteuid() == 0:
            try:
                self.account = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise Unavailable(f'the server refuses root, and there is no unprivileged user {SERVER_USER!r} to '
                                  f'run it (Debian\'s postgresql package creates it)') from None
        self.folder = None

    def run(self, *command):
        """Run one of the server's programs as the server's user; Unavailable with its output where it fails."""
        as_user = {} if self.account is None else {'user': self.account.pw_uid, 'group': self.account.pw_gid,
                                                   'extra_groups': []}
        result = subprocess.run([os.path.join(self.binaries, command[0]), *command[1:]], capture_output=True,
                                text=True, timeout=120, cwd=self.folder, **as_user)
        if result.returncode != 0:
            raise Unavailable(f'{command[0]} failed: {(result.stderr or result.stdout).strip()[-500:]}')

    @property
    def data(self):
        return os.path.join(self.folder, 'data')

    def __enter__(self):
        self.folder = tempfile.mkdtemp(prefix='obd_sd_postgresql_')
        try:
            if self.account is not None:
                os.chown(self.folder, self.account.pw_uid, self.account.pw_gid)
            self.run('initdb', '--pgdata', self.data, '--auth', 'trust', '--username', SERVER_USER, '--encoding',
                     'UTF8', '--no-sync')
            options = f"-c listen_addresses='' -c unix_socket_directories='{self.folder}' -c fsync=off"
            self.run('pg_ctl', '--pgdata', self.data, '--log', os.path.join(self.folder, 'server.log'), '--wait',
                     '--timeout', '60', '--options', options, 'start')
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exception):
        try:
            self.run('pg_ctl', '--pgdata', self.data, '--mode', 'immediate', '--wait', 'stop')
        finally:
            self.remove()

    def remove(self):
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database=SERVER_USER):
        """The storage URL of `database` (as --storage takes it), through the server's socket."""
        return f'postgresql://{SERVER_USER}@/{database}?host={self.folder}'

    def create_database(self, name):
        """A new empty database `name`; its URL."""
        import psycopg

        with psycopg.connect(host=self.folder, user=SERVER_USER, dbname=SERVER_USER, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE {name}')
        return self.url(name)
