"""Typed errors. Each renders as one line naming the file or field at fault; the CLI maps the
class to an exit code, so callers never parse messages."""

from __future__ import annotations


class DnscacheError(Exception):
    """Base class: `str(err)` is the one line the user sees."""

    exit_code = 1


class ConfigError(DnscacheError):
    """The settings file or a command-line option is invalid. Nothing was changed."""

    exit_code = 3


class FactsError(DnscacheError):
    """A host fact could not be read (e.g. an unreadable os-release)."""

    exit_code = 4


class ValidationError(DnscacheError):
    """A staged file failed its validator (e.g. named-checkconf). Nothing was swapped in."""

    exit_code = 5


class ApplyError(DnscacheError):
    """Applying failed after the host was touched; the transaction rolled back."""

    exit_code = 6


class RollbackError(DnscacheError):
    """Restoring a checkpoint failed; the message names the file left behind."""

    exit_code = 7


class CommandError(DnscacheError):
    """An external command failed or timed out."""

    exit_code = 8


class CloudWatchError(DnscacheError):
    """A CloudWatch call failed (credentials, permissions, endpoint)."""

    exit_code = 10


class StatsParseError(DnscacheError):
    """A statistics payload (bind or ethtool) could not be parsed."""

    exit_code = 9


class StateError(DnscacheError):
    """The agent's state directory is damaged (a truncated, foreign or non-UTF-8 manifest, an
    entry with missing fields, a missing or corrupt backup). The message names the file and
    what to do; nothing was changed because of it."""

    exit_code = 11


class LockedError(DnscacheError):
    """Another agent process holds the state directory's lock (EX_TEMPFAIL: try again)."""

    exit_code = 75


class InternalError(DnscacheError):
    """Anything that is not one of the errors above: a bug, or a host state nobody foresaw.
    The CLI's error boundary turns it into one line (the traceback is logged at -vv);
    EX_SOFTWARE."""

    exit_code = 70
