"""Audit trails: hash chains, tamper detection on a real SQLite file, concurrency, checkpoints."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.domain.audit.checkpoints import CheckpointBook, ensure_signing_key
from gateway.domain.audit.syslog import SyslogForwarder
from gateway.domain.audit.trail import (
    ActorType,
    AuditEvent,
    AuditLog,
    AuditWriteFailed,
    MissingAuthority,
    Trail,
)
from gateway.domain.identities import UserDirectory
from gateway.errors import StoreError
from gateway.store.database import Store
from tests.support.gateway import run_cli
from tests.support.secrets import test_secret_box

#: These tests tamper with the SQLite file directly (the chain logic they check
#: is the same on every backend); the PostgreSQL pass deselects them (-m "not sqlite").
SQLITE_ONLY = pytest.mark.sqlite


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "pamgate.db"


@pytest.fixture()
def audit(store: Store) -> AuditLog:
    return AuditLog(store)


def human(action: str = "auth.failure", actor: str = "alice", **kwargs: object) -> AuditEvent:
    return AuditEvent(
        actor=actor,
        actor_type=ActorType.HUMAN,
        action=action,
        outcome="failure",
        source="10.0.0.1",
        **kwargs,
    )  # type: ignore[arg-type]


def fill(audit: AuditLog, count: int, trail: Trail = Trail.HUMAN) -> None:
    for number in range(count):
        audit.record(trail, human(reason=f"attempt {number}"))


def sql(db_path: Path, statement: str, *params: object) -> None:
    connection = sqlite3.connect(db_path)
    with connection:
        connection.execute(statement, params)
    connection.close()


def test_chain_links_every_event(audit: AuditLog) -> None:
    fill(audit, 5)
    records = list(audit.events(Trail.HUMAN))
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in zip(records, records[1:], strict=False))
    result = audit.verify(Trail.HUMAN)
    assert result.ok and result.count == 5 and result.head_hash == records[-1].hash


def test_any_text_chains_the_same_as_verify_recomputes_it(audit: AuditLog) -> None:
    """On PostgreSQL the database chains the events (pamgate_audit_append) from the text
    this side serialised: quotes, escapes, control characters and non-ASCII text hash
    to what verify recomputes, and the record returned is the row stored."""
    odd = 'quote " backslash \\ newline \n tab \t bell \x07 é 漢字 🔐 \u2028'
    recorded = [
        audit.record(
            Trail.HUMAN,
            AuditEvent(
                actor="älice",
                actor_type=ActorType.HUMAN,
                action="auth.failure",
                outcome="failure",
                reason=odd,
                target=None,
                source="::1",
                details={"odd": odd, "nested": {"n": [1, None]}},
            ),
        ),  # fmt: skip
        audit.record(
            Trail.MACHINE,
            AuditEvent(
                actor="ci",
                actor_type=ActorType.MACHINE,
                action="auth.failure",
                outcome="failure",
                reason="",
                details={},
            ),
        ),  # fmt: skip
    ]
    assert audit.verify(Trail.HUMAN).ok and audit.verify(Trail.MACHINE).ok
    stored = [next(iter(audit.events(Trail.HUMAN))), next(iter(audit.events(Trail.MACHINE)))]
    assert stored == recorded
    assert recorded[0].reason == odd and recorded[0].seq == 1


def test_trails_are_separate(audit: AuditLog) -> None:
    fill(audit, 3, Trail.HUMAN)
    audit.record(
        Trail.MACHINE,
        AuditEvent(actor="ci-deploy", actor_type=ActorType.MACHINE, action="auth.success"),
    )
    assert [r.actor for r in audit.events(Trail.MACHINE)] == ["ci-deploy"]
    assert all(r.actor == "alice" for r in audit.events(Trail.HUMAN))
    assert audit.head(Trail.MACHINE)[0] == 1 and audit.head(Trail.HUMAN)[0] == 3
    assert audit.verify(Trail.MACHINE).ok and audit.verify(Trail.HUMAN).ok


def test_privileged_success_needs_authority(audit: AuditLog) -> None:
    with pytest.raises(MissingAuthority):
        audit.record(
            Trail.HUMAN,
            AuditEvent(actor="alice", actor_type=ActorType.HUMAN, action="session.start"),
        )
    assert audit.head(Trail.HUMAN)[0] == 0


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("reason", "attempt 3!"),
        ("actor", "mallory"),
        ("ts", "2020-01-01T00:00:00.000000Z"),
        ("details", '{"x":1}'),
        ("hash", "f" * 64),
        ("prev_hash", "e" * 64),
    ],
)
def test_an_edit_is_detected_and_named(
    audit: AuditLog, db_path: Path, column: str, value: str
) -> None:
    fill(audit, 6)
    sql(db_path, f"UPDATE audit_human SET {column} = ? WHERE seq = 4", value)
    result = audit.verify(Trail.HUMAN)
    assert not result.ok
    assert result.first_bad_seq in (4, 5)  # editing a hash shows at its successor
    assert "event" in result.problem


@SQLITE_ONLY
def test_one_byte_edit_fails_naming_the_event(audit: AuditLog, db_path: Path) -> None:
    fill(audit, 4)
    sql(db_path, "UPDATE audit_human SET reason = 'attempt 1' || char(10) WHERE seq = 2")
    result = audit.verify(Trail.HUMAN)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "contents do not match its hash (edited)" in result.problem


@SQLITE_ONLY
def test_deleted_row_is_detected(audit: AuditLog, db_path: Path) -> None:
    fill(audit, 6)
    sql(db_path, "DELETE FROM audit_human WHERE seq = 3")
    result = audit.verify(Trail.HUMAN)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "missing (deleted)" in result.problem


@SQLITE_ONLY
def test_swapped_rows_are_detected(audit: AuditLog, db_path: Path) -> None:
    fill(audit, 6)
    connection = sqlite3.connect(db_path)
    with connection:
        connection.execute("UPDATE audit_human SET seq = -1 WHERE seq = 2")
        connection.execute("UPDATE audit_human SET seq = 2 WHERE seq = 3")
        connection.execute("UPDATE audit_human SET seq = 3 WHERE seq = -1")
    connection.close()
    result = audit.verify(Trail.HUMAN)
    assert (result.ok, result.first_bad_seq) == (False, 2)


@SQLITE_ONLY
def test_inserted_row_is_detected(audit: AuditLog, db_path: Path) -> None:
    fill(audit, 3)
    row = list(audit.events(Trail.HUMAN))[-1]
    sql(
        db_path,
        "INSERT INTO audit_human (seq, ts, actor, actor_type, action, outcome, reason, details, "
        "prev_hash, hash) VALUES (4, ?, 'x', 'human', 'auth.success', 'success', '', '{}', ?, ?)",
        row.ts,
        row.hash,
        "a" * 64,
    )
    result = audit.verify(Trail.HUMAN)
    assert not result.ok and result.first_bad_seq == 4


@SQLITE_ONLY
def test_truncation_after_checkpoint_is_detected(
    audit: AuditLog, db_path: Path, tmp_path: Path
) -> None:
    key = tmp_path / "keys" / "audit_signing"
    ensure_signing_key(key)
    book = CheckpointBook(audit, key, tmp_path / "audit" / "checkpoints.jsonl", "node1")
    fill(audit, 5)
    book.checkpoint()
    off_box = tmp_path / "copy.jsonl"
    off_box.write_text(book.path.read_text())
    # Cut the tail and repair the head, so the chain itself looks intact.
    last_kept = list(audit.events(Trail.HUMAN))[2]
    sql(db_path, "DELETE FROM audit_human WHERE seq > 3")
    sql(db_path, "UPDATE audit_heads SET seq = 3, hash = ? WHERE trail = 'human'", last_kept.hash)
    assert audit.verify(Trail.HUMAN).ok
    problem = book.problems(Trail.HUMAN, book.read(off_box))
    assert problem and "truncated" in problem and "event 5" in problem


def test_forged_checkpoint_is_rejected(audit: AuditLog, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "audit_signing"
    ensure_signing_key(key)
    book = CheckpointBook(audit, key, tmp_path / "checkpoints.jsonl", "node1")
    fill(audit, 2)
    book.checkpoint()
    forged = json.loads(book.path.read_text().splitlines()[0])
    forged["seq"] = 1
    book.path.write_text(json.dumps(forged) + "\n")
    from gateway.domain.audit.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="not a valid signed checkpoint"):
        book.read()


def test_concurrent_threads_never_fork_the_chain(audit: AuditLog) -> None:
    def writer(name: str) -> None:
        for _ in range(40):
            audit.record(Trail.HUMAN, human(actor=name))

    threads = [threading.Thread(target=writer, args=(f"user{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = audit.verify(Trail.HUMAN)
    assert result.ok and result.count == 320


def test_concurrent_processes_never_fork_the_chain(audit: AuditLog, store: Store) -> None:
    script = (
        "import sys\n"
        "from gateway.store.database import Store\n"
        "from gateway.domain.audit.trail import AuditLog, AuditEvent, ActorType, Trail\n"
        "log = AuditLog(Store(sys.argv[1]))\n"
        "for i in range(60):\n"
        "    log.record(Trail.HUMAN, AuditEvent(actor=sys.argv[2], actor_type=ActorType.HUMAN,"
        " action='auth.failure', outcome='failure'))\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, store.url, f"p{i}"]) for i in range(3)
    ]
    fill(audit, 60)
    assert all(p.wait(timeout=120) == 0 for p in processes)
    result = audit.verify(Trail.HUMAN)
    assert result.ok and result.count == 240


def test_verify_while_other_processes_append_never_raises_a_false_alarm(
    audit: AuditLog, store: Store
) -> None:
    """Each verification sees one snapshot: its head and its rows agree, however many
    events other processes commit meanwhile (on PostgreSQL, reading the head and the rows
    in two statements once reported "event N lies beyond the trail's head")."""
    script = (
        "import sys\n"
        "from gateway.store.database import Store\n"
        "from gateway.domain.audit.trail import AuditLog, AuditEvent, ActorType, Trail\n"
        "log = AuditLog(Store(sys.argv[1]))\n"
        "for i in range(300):\n"
        "    log.record(Trail.HUMAN, AuditEvent(actor=sys.argv[2], actor_type=ActorType.HUMAN,"
        " action='auth.failure', outcome='failure'))\n"
    )
    fill(audit, 5)
    writers = [
        subprocess.Popen([sys.executable, "-c", script, store.url, f"p{i}"]) for i in range(2)
    ]
    verifications, counts = 0, []
    try:
        while verifications < 100 or any(writer.poll() is None for writer in writers):
            result = audit.verify(Trail.HUMAN)
            assert result.ok, result
            counts.append(result.count)
            verifications += 1
        assert all(writer.wait(timeout=120) == 0 for writer in writers)
    finally:
        for writer in writers:  # before the database is dropped under them
            writer.kill()
            writer.wait()
    assert counts == sorted(counts)  # a later verification never sees fewer events
    assert len(set(counts)) > 1, "the verifications never ran while the writers wrote"
    assert audit.verify(Trail.HUMAN).count == 605


@SQLITE_ONLY
def test_audit_failure_means_the_action_does_not_happen(store: Store, db_path: Path) -> None:
    users = UserDirectory(store, AuditLog(store), secret_box=test_secret_box())
    sql(
        db_path,
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_human "
        "BEGIN SELECT RAISE(ABORT, 'audit disk full'); END",
    )
    with pytest.raises(StoreError):
        users.add_user("alice", actor="root", password="correct horse")
    assert users.get("alice") is None
    with pytest.raises(AuditWriteFailed):
        AuditLog(store).record(Trail.HUMAN, human())


def udp_receiver() -> socket.socket:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    return receiver


def test_syslog_forwarding_rfc5424(audit: AuditLog, store: Store) -> None:
    receiver = udp_receiver()
    forwarder = SyslogForwarder(store, audit, "127.0.0.1", receiver.getsockname()[1], "udp")
    audit.record(Trail.HUMAN, human(reason="before forwarding was configured"))
    assert forwarder.forward_new() == 0  # history is not replayed
    record = audit.record(Trail.HUMAN, human(reason="bad code"))
    assert forwarder.forward_new() == 1
    message, _ = receiver.recvfrom(65535)
    forwarder.close()
    receiver.close()
    header, _, body = message.partition(b" \xef\xbb\xbf")
    assert header.startswith(b"<84>1 ")  # authpriv.warning, RFC 5424 version 1
    assert b' pamgate - human [pamgate@32473 trail="human" seq="2"' in header
    assert json.loads(body)["hash"] == record.hash
    assert forwarder.cursor(Trail.HUMAN) == 2


def test_an_unreachable_collector_delays_nothing_and_misses_nothing(
    audit: AuditLog, store: Store
) -> None:
    """The copy follows the trail: records written while the TCP collector is away
    are sent, in order, once it is back, and the writers never wait for it."""
    with socket.socket() as probe:  # a port with nothing listening on it, for now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forwarder = SyslogForwarder(store, audit, "127.0.0.1", port, "tcp")
    assert forwarder.forward_new() == 0  # starts at the (empty) head
    started = time.monotonic()
    for number in range(50):
        audit.record(Trail.HUMAN, human(reason=f"while away {number}"))
    assert time.monotonic() - started < 5
    assert forwarder.forward_new() == 0  # connection refused: nothing sent, cursor kept
    assert forwarder.cursor(Trail.HUMAN) == 0
    collector = socket.socket()
    collector.bind(("127.0.0.1", port))
    collector.listen()
    try:
        assert forwarder.forward_new() == 50
        connection, _ = collector.accept()
        connection.settimeout(5)
        received = b""
        while received.count(b"while away") < 50:
            chunk = connection.recv(65536)
            assert chunk, received[-200:]
            received += chunk
        connection.close()
    finally:
        forwarder.close()
        collector.close()
    reasons = re.findall(rb"while away (\d+)", received)
    assert [int(n) for n in reasons] == list(range(50))  # each once, in trail order
    assert forwarder.cursor(Trail.HUMAN) == 50


def test_two_nodes_copy_each_record_once(audit: AuditLog, store: Store) -> None:
    receiver = udp_receiver()
    port = receiver.getsockname()[1]
    first = SyslogForwarder(store, audit, "127.0.0.1", port, "udp", node="gw1")
    second = SyslogForwarder(store, audit, "127.0.0.1", port, "udp", node="gw2")
    first.forward_new()
    fill(audit, 5)
    assert second.forward_new() == 0  # gw1 holds the lease
    assert first.forward_new() == 5
    seqs = [
        int(re.search(rb'seq="(\d+)"', receiver.recvfrom(65535)[0]).group(1))  # type: ignore[union-attr]
        for _ in range(5)
    ]
    receiver.close()
    assert seqs == [1, 2, 3, 4, 5]


@pytest.mark.openssh
def test_cli_verify_export_tail_checkpoint(tmp_path: Path) -> None:
    config = tmp_path / "pamgate.toml"
    assert run_cli("--config", str(config), "init").returncode == 0
    for name in ("ann", "ben"):
        added = run_cli(
            "--config",
            str(config),
            "user",
            "add",
            name,
            "--password-stdin",
            input_text="a long password\n",
        )
        assert added.returncode == 0, added.stderr
    verified = run_cli("--config", str(config), "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "human: OK, 3 events" in verified.stdout and "machine: OK, 1 events" in verified.stdout
    exported = run_cli("--config", str(config), "audit", "export", "--trail", "human")
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(e["seq"], e["action"], e["target"]) for e in lines] == [
        (1, "ca.created", "node:pamgate"),  # by init, with the administrator as actor
        (2, "user.created", "user:ann"),
        (3, "user.created", "user:ben"),
    ]
    machine = run_cli("--config", str(config), "audit", "export", "--trail", "machine").stdout
    assert [json.loads(line)["action"] for line in machine.splitlines()] == ["ca.created"]
    since = run_cli("--config", str(config), "audit", "export", "--trail", "human", "--since", "1h")
    assert len(since.stdout.splitlines()) == 3
    bad_since = run_cli(
        "--config", str(config), "audit", "export", "--trail", "human", "--since", "soon"
    )
    assert bad_since.returncode == 1 and "--since 'soon'" in bad_since.stderr
    tail = run_cli("--config", str(config), "audit", "tail", "-n", "1")
    assert tail.stdout.startswith("#3 ") and "user.created" in tail.stdout
    checkpoint = run_cli("--config", str(config), "audit", "checkpoint")
    assert checkpoint.returncode == 0 and "human: event 3" in checkpoint.stdout
    sql(tmp_path / "pamgate.db", "UPDATE audit_human SET target = 'user:bem' WHERE seq = 3")
    broken = run_cli("--config", str(config), "audit", "verify", "--trail", "human")
    assert broken.returncode == 1
    assert (
        "human: BROKEN: event 3 (user.created by " in broken.stdout
        and "contents do not match its hash (edited)" in broken.stdout
    )
