"""The pamgate error hierarchy.

Every error a user or operator can see derives from :class:`PamgateError`, so
the CLI can print it as one clear line and exit non-zero, and the lanes can
show it in the user's terminal. Messages name the thing that is wrong and,
where there is one, what to do about it.
"""

from __future__ import annotations


class PamgateError(Exception):
    """Base class for all errors pamgate reports to people."""


class ConfigError(PamgateError):
    """The configuration file is missing, unreadable or invalid."""


class StoreError(PamgateError):
    """The database cannot be opened or written."""


class IdentityError(PamgateError):
    """A problem with a user record (unknown, duplicate, bad input)."""


class UnknownUser(IdentityError):
    """No user of that name exists."""


class UserExists(IdentityError):
    """A user of that name exists already."""


class InvalidName(PamgateError):
    """A user, target or account name is not of the accepted form."""


class DestinationError(PamgateError):
    """The login name does not name a reachable target and account."""


class DestinationSyntaxError(DestinationError):
    """The login name is not ``user``, ``user:target`` or ``user:account@target``."""


class UnknownTarget(DestinationError):
    """The target named in the login is not configured."""


class UnknownAccount(DestinationError):
    """The account named in the login is not allowed on the target."""


class AccessDenied(DestinationError):
    """The user may not reach this target."""


class UpstreamError(PamgateError):
    """The gateway could not reach or keep the session with the target."""


class UpstreamUnreachable(UpstreamError):
    """The target refused or did not answer the connection."""


class HostKeyMismatch(UpstreamError):
    """The target presented a host key other than the pinned one."""


class UpstreamAuthFailed(UpstreamError):
    """The target did not accept the gateway's credential."""


class CertificateAuthorityError(PamgateError):
    """A CA key is missing or cannot be used."""


class UsageError(PamgateError):
    """A command was given in a way it cannot run as (exit status 2, like a usage error)."""
