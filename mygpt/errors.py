"""Errors a user can cause: scripts print them as one line and exit, never with a traceback."""


class UserError(Exception):
    """Something the user can fix (a path, a flag, the network); `exit_code` is the script's."""

    exit_code = 2


class DataError(UserError):
    """The training text cannot be used; the message says why."""


class NonFiniteError(UserError):
    """Training diverged: a loss or gradient norm is nan or infinite; nothing more is saved."""

    exit_code = 1


class SaveError(UserError):
    """A run's file could not be written; the message says what is lost and what is kept."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is (cli.run_main): the same clean-up runs, nothing is left."""
