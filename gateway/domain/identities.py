"""Human identities: users, their passwords, registered keys and TOTP second factor.

Plain Python over the store; no SSH here. The human lane, the CLI and the
console all go through :class:`UserDirectory`.

Security notes:

- Passwords are stored as argon2id hashes only, and are never logged.
- :meth:`UserDirectory.verify_password` spends the same argon2 work for an
  unknown or disabled user as for a known one, so timing does not reveal
  which names exist.
- TOTP secrets are stored sealed (AES-256-GCM, :mod:`gateway.crypto.secret_box`)
  under a key kept outside the database; nothing here handles one in clear
  except to return it to the administrator who set it up.
- A TOTP code is accepted once: the accepted time step is stored, and any
  code for that step or an earlier one is refused afterwards. The update is a
  single conditional ``UPDATE``, so two connections racing with the same
  code cannot both win.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from gateway.config import NAME_RE
from gateway.crypto.keys import parse_public_key_line
from gateway.crypto.secret_box import SecretBox, SecretBoxError
from gateway.domain.audit.trail import (
    ActorType,
    AuditEvent,
    AuditLog,
    AuditRecord,
    Trail,
    admin_authority,
)
from gateway.domain.login_certificates import (
    REVOKED_DISABLED,
    REVOKED_MFA_RESET,
    REVOKED_PASSWORD_SET,
    revoke_user_certificates,
)
from gateway.errors import IdentityError, InvalidName, UnknownUser, UserExists
from gateway.store.database import Store
from gateway.store.models import User, UserKey

TOTP_PERIOD_SECONDS = 30
TOTP_DIGITS = 6
TOTP_ISSUER = "pamgate"
#: The longest password a user may be given (longer answers are refused unchecked).
MAX_PASSWORD_LENGTH = 1024


@dataclass(frozen=True)
class UserView:
    """A read-only snapshot of a user, safe to pass around and print."""

    name: str
    groups: tuple[str, ...]
    disabled: bool
    has_password: bool
    key_fingerprints: tuple[str, ...]
    created_at: datetime


class TotpCheck(StrEnum):
    """What a TOTP code turned out to be."""

    ACCEPTED = "accepted"
    WRONG = "wrong"
    #: Right for its time step, but that step (or a later one) was used already.
    REUSED = "reused"


@dataclass(frozen=True)
class TotpEnrolment:
    """What a user needs to set up their authenticator app."""

    user: str
    secret: str
    uri: str


def validate_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid user/target/account name, else raise InvalidName."""
    if not NAME_RE.match(name):
        raise InvalidName(
            f"invalid {kind} name {name!r}: use letters, digits, '_', '.', '-' "
            "(starting with a letter or '_', at most 64 characters)"
        )
    return name


class UserDirectory:
    """Create, change and authenticate human users."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        *,
        secret_box: Callable[[], SecretBox],
        totp_skew_steps: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        #: Called when a TOTP secret is sealed or opened (the key is read then, not before).
        self._secret_box = secret_box
        self._skew = totp_skew_steps
        self._clock = clock
        self._hasher = PasswordHasher()
        self._decoy: str | None = None

    def _decoy_hash(self) -> str:
        """A real hash of a random password, built the first time an unknown user is answered.

        Verifying against it costs exactly what verifying a real user's
        password costs. Built lazily: hashing costs ~0.5 s of CPU, and most
        commands never need it.
        """
        if self._decoy is None:
            self._decoy = self._hasher.hash(pyotp.random_base32())
        return self._decoy

    def prepare_for_logins(self) -> None:
        """Build the decoy hash now (a serving node calls this at start), so that the first
        unknown user is not answered later than the others."""
        self._decoy_hash()

    # -- administration -------------------------------------------------

    def add_user(
        self,
        name: str,
        *,
        actor: str,
        groups: Iterable[str] = (),
        password: str | None = None,
        public_keys: Iterable[str] = (),
    ) -> TotpEnrolment:
        """Create a user and return their TOTP enrolment.

        A user needs a password, a registered key, or both: either one is the
        first factor, and TOTP is always the second. ``actor`` is the
        administrator, recorded in the human audit trail.
        """
        validate_name("user", name)
        group_list = sorted({validate_name("group", g) for g in groups})
        keys = [parse_public_key_line(line) for line in public_keys]
        if password is None and not keys:
            raise IdentityError(f"user {name!r} needs a password or an SSH key (or both)")
        if password is not None:
            _check_password_quality(password)
        secret = pyotp.random_base32()
        now = self._now()
        with self._store.transaction() as db:
            clash = db.scalar(select(User.name).where(func.lower(User.name) == name.lower()))
            if clash is not None:
                # Names differing only in case would read as one person in logs.
                raise UserExists(f"user {clash!r} exists already")
            user = User(
                name=name,
                password_hash=self._hasher.hash(password) if password is not None else None,
                totp_secret=self._secret_box().seal(secret, name),
                totp_last_step=None,
                groups=group_list,
                disabled=False,
                created_at=now,
                updated_at=now,
            )
            for key_data, fingerprint, comment in keys:
                user.keys.append(
                    UserKey(
                        key_data=key_data, fingerprint=fingerprint, comment=comment, added_at=now
                    )
                )
            db.add(user)
            factors = ["password"] if password is not None else []
            factors += ["key"] if keys else []
            factors.append("totp")
            record = self._admin_event(
                db, actor, "user.created", name, groups=group_list, factors=factors
            )
        self._audit.committed(record)
        return self.enrolment(name, secret)

    def list_users(self) -> list[UserView]:
        """All users, by name."""
        with self._store.transaction(write=False) as db:
            return [_view(u) for u in db.scalars(select(User).order_by(User.name))]

    def get(self, name: str) -> UserView | None:
        """The user called ``name``, or None."""
        with self._store.transaction(write=False) as db:
            user = db.scalar(select(User).where(User.name == name))
            return _view(user) if user else None

    def enabled_among(self, names: Collection[str]) -> dict[str, UserView]:
        """The users among ``names`` that exist and are enabled, as they are now (two queries,
        however many names: the lanes' watch reads every live user each second)."""
        if not names:
            return {}
        query = (
            select(User)
            .where(User.name.in_(list(names)), User.disabled.is_(False))
            .options(selectinload(User.keys))
        )
        with self._store.transaction(write=False) as db:
            return {user.name: _view(user) for user in db.scalars(query)}

    def set_disabled(self, name: str, disabled: bool, *, actor: str, reason: str = "") -> None:
        """Disable or enable a user (``reason`` goes into the trail). A disabled user cannot
        log in."""
        with self._store.transaction() as db:
            user = self._require(db, name)
            user.disabled = disabled
            user.updated_at = self._now()
            action = "user.disabled" if disabled else "user.enabled"
            record = self._admin_event(db, actor, action, name, reason=reason)
            revoked = self._revoke_login_certificates(db, actor, name, REVOKED_DISABLED)
        for committed in (record, *revoked):
            self._audit.committed(committed)

    def set_groups(self, name: str, groups: Iterable[str], *, actor: str) -> None:
        """Replace a user's groups (which decide what the policy lets them do)."""
        group_list = sorted({validate_name("group", g) for g in groups})
        with self._store.transaction() as db:
            user = self._require(db, name)
            before = list(user.groups or [])
            user.groups = group_list
            user.updated_at = self._now()
            record = self._admin_event(
                db, actor, "user.groups_set", name, before=before, after=group_list
            )
        self._audit.committed(record)

    def set_password(self, name: str, password: str, *, actor: str) -> None:
        """Replace a user's password; their login certificates are revoked with the old one."""
        _check_password_quality(password)
        with self._store.transaction() as db:
            user = self._require(db, name)
            user.password_hash = self._hasher.hash(password)
            user.updated_at = self._now()
            record = self._admin_event(db, actor, "user.password_set", name)
            # A new password is set when the old one may be known; a certificate signed
            # on the strength of the old one must not outlive it.
            revoked = self._revoke_login_certificates(db, actor, name, REVOKED_PASSWORD_SET)
        for committed in (record, *revoked):
            self._audit.committed(committed)

    def reset_mfa(self, name: str, *, actor: str) -> TotpEnrolment:
        """Give a user a new TOTP secret; the old one stops working at once."""
        secret = pyotp.random_base32()
        with self._store.transaction() as db:
            user = self._require(db, name)
            user.totp_secret = self._secret_box().seal(secret, name)
            user.totp_last_step = None
            user.updated_at = self._now()
            record = self._admin_event(db, actor, "user.mfa_reset", name)
            # A login certificate stands for the old factor: it goes with it.
            revoked = self._revoke_login_certificates(db, actor, name, REVOKED_MFA_RESET)
        for committed in (record, *revoked):
            self._audit.committed(committed)
        return self.enrolment(name, secret)

    def add_key(self, name: str, public_key_line: str, *, actor: str) -> str:
        """Register a public key for a user; returns its fingerprint."""
        key_data, fingerprint, comment = parse_public_key_line(public_key_line)
        with self._store.transaction() as db:
            user = self._require(db, name)
            if any(k.key_data == key_data for k in user.keys):
                raise IdentityError(f"that key is registered for {name!r} already")
            user.keys.append(
                UserKey(
                    key_data=key_data,
                    fingerprint=fingerprint,
                    comment=comment,
                    added_at=self._now(),
                )
            )
            record = self._admin_event(db, actor, "user.key_added", name, key=fingerprint)
        self._audit.committed(record)
        return fingerprint

    @staticmethod
    def enrolment(name: str, secret: str) -> TotpEnrolment:
        """The otpauth:// URI an authenticator app scans."""
        uri = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_SECONDS).provisioning_uri(
            name=name, issuer_name=TOTP_ISSUER
        )
        return TotpEnrolment(user=name, secret=secret, uri=uri)

    # -- authentication -------------------------------------------------

    def verify_password(self, name: str, password: str) -> bool:
        """True if ``name`` is an enabled user with this password.

        Costs one argon2 verification whatever the outcome.
        """
        with self._store.transaction(write=False) as db:
            user = db.scalar(select(User).where(User.name == name))
            stored = user.password_hash if user is not None and not user.disabled else None
            usable = stored is not None
        matched = self._password_matches(
            stored if stored is not None else self._decoy_hash(), password
        )
        return usable and matched

    def key_is_registered(self, name: str, key_data: str) -> bool:
        """True if ``name`` is an enabled user and ``key_data`` (``<type> <base64>``) is theirs."""
        with self._store.transaction(write=False) as db:
            user = db.scalar(select(User).where(User.name == name))
            if user is None or user.disabled:
                return False
            return any(hmac.compare_digest(k.key_data, key_data) for k in user.keys)

    def verify_totp(self, name: str, code: str) -> bool:
        """True if ``code`` is a valid, unused TOTP code for an enabled user.

        Accepting a code burns its time step and every earlier one.
        """
        return self.check_totp(name, code) == TotpCheck.ACCEPTED

    def check_totp(self, name: str, code: str) -> TotpCheck:
        """Whether ``code`` is a valid, unused TOTP code for an enabled user; a right code
        whose time step was already used (a second login within 30 s) is ``REUSED``.

        Accepting a code burns its time step and every earlier one.
        """
        code = code.strip().replace(" ", "")
        with self._store.transaction(write=False) as db:
            user = db.scalar(select(User).where(User.name == name))
            stored = user.totp_secret if user is not None else None
            usable = user is not None and not user.disabled
        # An unknown user's code is checked against a random secret: the same work.
        secret = self._secret_box().open(stored, name) if stored else pyotp.random_base32()
        step = self._matching_step(secret, code)
        if not usable or step is None:
            return TotpCheck.WRONG
        with self._store.transaction() as db:
            # An UPDATE without RETURNING yields a CursorResult (Session.execute is typed as
            # returning the Result base).
            result = cast(
                "CursorResult[Any]",
                db.execute(
                    update(User)
                    .where(User.name == name)
                    .where(User.disabled.is_(False))
                    .where(or_(User.totp_last_step.is_(None), User.totp_last_step < step))
                    .values(totp_last_step=step)
                ),
            )
            return TotpCheck.ACCEPTED if result.rowcount == 1 else TotpCheck.REUSED

    def credentials_match(self, name: str, password: str, totp_secret: str) -> bool:
        """True if ``name`` has exactly this password and TOTP secret (used by the demo)."""
        with self._store.transaction(write=False) as db:
            user = db.scalar(select(User).where(User.name == name))
            if user is None or user.password_hash is None:
                return False
            sealed_secret, stored_hash = user.totp_secret, user.password_hash
        stored_secret = self._secret_box().open(sealed_secret, name)
        password_ok = self._password_matches(stored_hash, password)
        return password_ok and hmac.compare_digest(stored_secret, totp_secret)

    # -- secrets at rest ----------------------------------------------------

    def check_secrets(self) -> None:
        """Raise SecretBoxError unless every TOTP secret is sealed with the loaded key.

        A serving node calls this at start, so a missing or wrong key, or secrets
        left in clear, stop it with a clear message instead of failing logins.
        """
        with self._store.transaction(write=False) as db:
            stored = list(db.execute(select(User.name, User.totp_secret)))
        plain = [name for name, value in stored if not SecretBox.is_sealed(value)]
        if plain:
            raise SecretBoxError(
                f"{len(plain)} TOTP secrets are stored in clear (users {', '.join(plain[:5])}"
                f"{', ...' if len(plain) > 5 else ''}): run 'pamgate db upgrade'"
            )
        box = self._secret_box()
        if stored:
            name, value = stored[0]
            box.open(value, name)  # the key opens them (else: which key sealed them)

    def seal_plain_secrets(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Seal every TOTP secret still stored in clear (``pamgate db upgrade``); returns how
        many. ``progress(done, total)`` is called after each batch of 100."""
        with self._store.transaction(write=False) as db:
            names = [
                name for name, value in db.execute(select(User.name, User.totp_secret))
                if not SecretBox.is_sealed(value)
            ]  # fmt: skip
        box = self._secret_box() if names else None
        for start in range(0, len(names), 100):
            batch = names[start : start + 100]
            with self._store.transaction() as db:
                for user in db.scalars(select(User).where(User.name.in_(batch))):
                    if box is not None and not SecretBox.is_sealed(user.totp_secret):
                        user.totp_secret = box.seal(user.totp_secret, user.name)
            if progress is not None:
                progress(start + len(batch), len(names))
        return len(names)

    def has_sealed_secrets(self) -> bool:
        """Whether any TOTP secret is stored sealed (so a key exists somewhere)."""
        with self._store.transaction(write=False) as db:
            values = db.scalars(select(User.totp_secret))
            return any(SecretBox.is_sealed(value) for value in values)

    # -- internals --------------------------------------------------------

    def _revoke_login_certificates(
        self, db: Session, actor: str, name: str, reason: str
    ) -> list[AuditRecord]:
        """Revoke ``name``'s login certificates in the transaction ``db`` (disable, MFA reset)."""
        _, records = revoke_user_certificates(
            db, self._audit, name, reason=reason, actor=actor, actor_type=ActorType.ADMIN,
            authority=admin_authority(actor), source=None, at=self._now(),
        )  # fmt: skip
        return records

    def _admin_event(
        self, db: Session, actor: str, action: str, user: str, *, reason: str = "",
        **details: object,
    ) -> AuditRecord:  # fmt: skip
        return self._audit.append(
            db,
            Trail.HUMAN,
            AuditEvent(
                actor=actor,
                actor_type=ActorType.ADMIN,
                action=action,
                target=f"user:{user}",
                authority=admin_authority(actor),
                reason=reason,
                details=details,
            ),
        )

    def _password_matches(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def _matching_step(self, secret: str, code: str) -> int | None:
        # ASCII digits only: str.isdigit() accepts Arabic-Indic and other digits, which
        # hmac.compare_digest refuses with a TypeError (it takes ASCII strings only).
        if len(code) != TOTP_DIGITS or not all("0" <= c <= "9" for c in code):
            return None
        totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_SECONDS)
        now_step = int(self._clock() // TOTP_PERIOD_SECONDS)
        matched = None
        # Check every step in the window (no early exit) to keep timing flat.
        for step in range(now_step - self._skew, now_step + self._skew + 1):
            if hmac.compare_digest(totp.generate_otp(step), code):
                matched = step
        return matched

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @staticmethod
    def _require(db: Session, name: str) -> User:
        user = db.scalar(select(User).where(User.name == name))
        if user is None:
            raise UnknownUser(f"no user named {name!r}")
        return user


def _check_password_quality(password: str) -> None:
    if len(password) < 8:
        raise IdentityError("password too short: use at least 8 characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise IdentityError(f"password too long: use at most {MAX_PASSWORD_LENGTH} characters")


def _view(user: User) -> UserView:
    return UserView(
        name=user.name,
        groups=tuple(user.groups or ()),
        disabled=user.disabled,
        has_password=user.password_hash is not None,
        key_fingerprints=tuple(k.fingerprint for k in user.keys),
        created_at=user.created_at,
    )
