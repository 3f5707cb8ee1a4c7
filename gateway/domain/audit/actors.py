"""Who administrative events name, and what allowed the action they record.

Approving, reviewing, reading evidence and managing identities is done by an
*operator*, who is one of:

- a pamgate user acting through one of their roles: the events name them, and
  their authority is the role that allowed the action (``role:admin``);
- the local administrator: whoever runs ``pamgate`` on the gateway host with
  its config and database, and so can do anything anyway. The events name them
  ``local-admin:<os-user>@<host>`` and their authority is ``local-admin``.

The operator's actions carry these to the domain services as the ``actor``
of their events (see :class:`ActingOperator`), together with where the action
came from (``via_session``: the SSH session that ran the command), which goes
into each event's details.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: The authority of the local administrator's actions: host access to the config and database.
LOCAL_ADMIN_AUTHORITY = "local-admin"


def local_admin_name(os_user: str, host: str) -> str:
    """How the trail names the local administrator: ``local-admin:<os-user>@<host>``."""
    return f"{LOCAL_ADMIN_AUTHORITY}:{os_user}@{host}"


def role_authority(roles: Iterable[str]) -> str:
    """The authority of a pamgate user's action: the roles that allowed it (``role:admin``)."""
    return "role:" + ",".join(sorted(roles))


class ActingOperator(str):
    """An operator's name, as the actor of the events one of their actions causes, carrying
    what allowed the action (the events' authority) and where it came from (details added
    to each event, such as ``via_session``).

    A ``str`` on purpose: the domain services take ``actor: str`` and record it as the
    event's actor and in columns such as ``revoked_by``. Passing this instead keeps every
    service, and every caller of it, as it is; :func:`gateway.domain.audit.trail.admin_authority`
    and :class:`gateway.domain.audit.trail.AuditEvent` read the rest. Anything built from it
    (``str(actor)``, an f-string) is a plain name again.
    """

    authority: str
    details: Mapping[str, Any]

    def __new__(
        cls, name: str, *, authority: str, details: Mapping[str, Any] | None = None
    ) -> ActingOperator:
        acting = super().__new__(cls, name)
        acting.authority = authority
        acting.details = dict(details or {})
        return acting

    def __repr__(self) -> str:
        return f"ActingOperator({str(self)!r}, authority={self.authority!r})"
