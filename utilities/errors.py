"""The one exception type for bad user input, and how entry points report it."""
import sys


class UserError(Exception):
    """A problem with the user's input (path, flag, file): reported as one line, no traceback."""


def exit_with(error, code=2):
    """Print `error` as one line on stderr and exit non-zero."""
    message = ' '.join(str(error).split())
    print(f'error: {message}', file=sys.stderr)
    sys.exit(code)
