"""Exceptions. Each also inherits a builtin, so callers can catch either kind."""

from __future__ import annotations


class LaminMagicError(Exception):
    """Base class: a problem the user can fix; the message says how, in one line."""


class InvalidArgumentError(LaminMagicError, ValueError):
    """A malformed name, version, option or value."""


class UnsupportedTypeError(LaminMagicError, TypeError):
    """An object of a type no registered format can store."""


class NotFoundError(LaminMagicError, LookupError):
    """No record matches: an unknown name, version or id."""


class MultipleResultsError(LaminMagicError, LookupError):
    """`.one()` found more than one record."""


class InstanceError(LaminMagicError, RuntimeError):
    """The instance cannot be used: unreadable, not writable, a newer schema, a bad path."""


class IntegrityError(LaminMagicError, RuntimeError):
    """Stored bytes are missing or do not match their recorded size and hash."""
