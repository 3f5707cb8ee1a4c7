"""Users, passwords and TOTP against a real SQLite file, with an injected clock."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest
from argon2 import PasswordHasher

from gateway.crypto.keys import parse_public_key_line
from gateway.domain.audit.trail import AuditLog, Trail
from gateway.domain.identities import UserDirectory
from gateway.errors import IdentityError, InvalidName, UnknownUser, UserExists
from gateway.store.database import Store
from tests.support.clock import Clock
from tests.support.secrets import test_secret_box

PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmTjzR9GHjvjKJTd3OAMN9YLhGXgOG7r3DujrQ3pqVP me@laptop"
)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def users(store: Store, clock: Clock) -> UserDirectory:
    return UserDirectory(
        store, AuditLog(store), secret_box=test_secret_box(), totp_skew_steps=1, clock=clock
    )


def code_at(secret: str, when: float) -> str:
    return pyotp.TOTP(secret).at(when)


@pytest.mark.sqlite  # reads the SQLite file's bytes
def test_add_user_stores_argon2id_hash_not_password(users: UserDirectory, tmp_path: Path) -> None:
    enrolment = users.add_user("alice", actor="admin", groups=["ops"], password="correct horse")
    assert enrolment.uri.startswith("otpauth://totp/pamgate:alice?secret=")
    # WAL mode: recent pages are in the -wal file.
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("pamgate.db*"))
    assert b"correct horse" not in raw
    assert b"$argon2id$" in raw
    assert users.verify_password("alice", "correct horse")
    assert not users.verify_password("alice", "wrong horse")


def test_user_input_is_validated(users: UserDirectory) -> None:
    with pytest.raises(InvalidName):
        users.add_user("bad name", actor="admin", password="long enough")
    with pytest.raises(IdentityError, match="too short"):
        users.add_user("bob", actor="admin", password="short")
    with pytest.raises(IdentityError, match="needs a password or an SSH key"):
        users.add_user("bob", actor="admin")
    users.add_user("bob", actor="admin", password="long enough")
    with pytest.raises(UserExists):
        users.add_user("bob", actor="admin", password="long enough")
    with pytest.raises(UnknownUser):
        users.set_disabled("nobody", True, actor="admin")
    assert [u.name for u in users.list_users()] == ["bob"]


def test_unknown_user_costs_one_argon2_verification(users: UserDirectory) -> None:
    calls = []
    real = users._hasher

    class CountingHasher:
        def hash(self, password: str) -> str:
            return real.hash(password)

        def verify(self, hash_: str, password: str) -> bool:
            calls.append(hash_)
            return real.verify(hash_, password)

    users._hasher = CountingHasher()  # type: ignore[assignment]
    users.add_user("alice", actor="admin", password="correct horse")
    assert not users.verify_password("ghost", "correct horse")
    assert not users.verify_password("alice", "wrong horse")
    assert len(calls) == 2 and all(h.startswith("$argon2id$") for h in calls)


def test_totp_accepts_skew_and_refuses_replay(users: UserDirectory, clock: Clock) -> None:
    secret = users.add_user("alice", actor="admin", password="correct horse").secret
    assert users.verify_totp("alice", code_at(secret, clock.now - 30))  # one step behind
    assert not users.verify_totp("alice", code_at(secret, clock.now - 30))  # replay
    assert users.verify_totp("alice", code_at(secret, clock.now))
    # An older code is refused once a newer one was used.
    assert not users.verify_totp("alice", code_at(secret, clock.now - 30))
    assert not users.verify_totp("alice", code_at(secret, clock.now + 90))  # too far ahead
    clock.now += 30
    assert users.verify_totp("alice", code_at(secret, clock.now))


@pytest.mark.parametrize("junk", ["", "12345", "1234567", "abcdef", "12 34 5x"])
def test_malformed_codes_are_refused(users: UserDirectory, junk: str) -> None:
    users.add_user("alice", actor="admin", password="correct horse")
    assert not users.verify_totp("alice", junk)


def test_disabled_user_fails_every_factor(users: UserDirectory, clock: Clock) -> None:
    secret = users.add_user(
        "alice", actor="admin", password="correct horse", public_keys=[PUBLIC_KEY]
    ).secret
    users.set_disabled("alice", True, actor="admin")
    key_data = " ".join(PUBLIC_KEY.split()[:2])
    assert not users.verify_password("alice", "correct horse")
    assert not users.verify_totp("alice", code_at(secret, clock.now))
    assert not users.key_is_registered("alice", key_data)
    users.set_disabled("alice", False, actor="admin")
    assert users.key_is_registered("alice", key_data)


def test_reset_mfa_invalidates_old_secret(users: UserDirectory, clock: Clock) -> None:
    old = users.add_user("alice", actor="admin", password="correct horse").secret
    new = users.reset_mfa("alice", actor="admin").secret
    assert old != new
    assert not users.verify_totp("alice", code_at(old, clock.now))
    assert users.verify_totp("alice", code_at(new, clock.now))


def test_keys_are_parsed_and_checked(users: UserDirectory) -> None:
    key_data, fingerprint, comment = parse_public_key_line(PUBLIC_KEY)
    assert key_data == " ".join(PUBLIC_KEY.split()[:2])
    assert fingerprint.startswith("SHA256:") and comment == "me@laptop"
    for bad in [
        "nonsense",
        "ssh-ed25519 !!!",
        "ssh-rsa " + PUBLIC_KEY.split()[1],
        "ssh-ed25519-cert-v01@openssh.com AAAA",
    ]:
        with pytest.raises(IdentityError):
            parse_public_key_line(bad)
    users.add_user("alice", actor="admin", public_keys=[PUBLIC_KEY])
    with pytest.raises(IdentityError, match="registered"):
        users.add_key("alice", PUBLIC_KEY, actor="admin")
    assert users.get("alice").key_fingerprints == (fingerprint,)
    assert not users.get("alice").has_password


def test_administration_is_audited_with_the_acting_admin(
    users: UserDirectory, store: Store
) -> None:
    users.add_user("alice", actor="root@gw", groups=["ops"], password="correct horse")
    users.set_disabled("alice", True, actor="root@gw")
    users.set_disabled("alice", False, actor="carol@gw")
    users.reset_mfa("alice", actor="carol@gw")
    users.set_password("alice", "battery staple", actor="carol@gw")
    records = list(AuditLog(store).events(Trail.HUMAN))
    assert [r.action for r in records] == [
        "user.created",
        "user.disabled",
        "user.enabled",
        "user.mfa_reset",
        "user.password_set",
    ]
    assert [r.actor for r in records[:2]] == ["root@gw", "root@gw"]
    assert all(r.actor_type == "admin" and r.target == "user:alice" for r in records)
    # Plain names are code on the host's own authority; operators carry theirs (test_operators).
    assert all(r.authority == "local-admin" for r in records)
    assert "correct horse" not in str(records) and "battery" not in str(records)
    assert list(AuditLog(store).events(Trail.MACHINE)) == []


def test_refused_change_leaves_no_audit_event(users: UserDirectory, store: Store) -> None:
    users.add_user("alice", actor="root", password="correct horse")
    with pytest.raises(UserExists):
        users.add_user("alice", actor="root", password="correct horse")
    with pytest.raises(UnknownUser):
        users.reset_mfa("ghost", actor="root")
    assert [r.action for r in AuditLog(store).events(Trail.HUMAN)] == ["user.created"]


def test_decoy_hash_is_built_only_for_an_unknown_user(users: UserDirectory, monkeypatch) -> None:
    hashed: list[str] = []

    class CountingHasher(PasswordHasher):
        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            hashed.append(str(password))
            return super().hash(password, salt=salt)

    monkeypatch.setattr(users, "_hasher", CountingHasher())
    users.add_user("kim", actor="tests", password="a long password")
    assert len(hashed) == 1  # kim's own password
    assert users.verify_password("kim", "a long password")
    assert len(hashed) == 1  # a known user costs no decoy
    assert not users.verify_password("nobody", "a long password")
    assert not users.verify_password("nobody2", "guess")
    assert len(hashed) == 2  # built once, for the first unknown user
