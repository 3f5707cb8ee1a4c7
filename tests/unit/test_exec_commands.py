"""Transfer servers started by exec: how the gateway reads the command, and what a rule says.

A hostile client chooses the exec command: wrappers (``exec``, ``env``,
``sudo``, ``sh -c``), absolute paths, options in odd places, pipes. Each
command below either is recognised (and held to the rule) or is unclear
(and refused under any rule that limits something).
"""

from __future__ import annotations

import hashlib

import pytest

from gateway.domain.transfer.commands import (
    ExecTransfer,
    UnclearTransfer,
    classify_exec,
    with_stream_args,
)
from gateway.domain.transfer.modes import Direction, TransferMode
from gateway.domain.transfer.policy import TransferPolicy
from gateway.ssh.transfer.stream_auditors import RsyncAuditor, StreamAuditor

UP, DOWN = Direction.UPLOAD, Direction.DOWNLOAD
RSYNC_UP = "rsync --server -logDtpre.iLsfxCIvu . /srv/in/"
RSYNC_DOWN = "rsync --server --sender -logDtpre.iLsfxCIvu . /srv/out/log"


@pytest.mark.parametrize(
    ("command", "tool", "direction"),
    [
        ("scp -t /tmp", "scp", UP),
        ("scp -v -p -f -- /etc/hosts", "scp", DOWN),
        ("/usr/bin/scp -tf x", "scp", DOWN),  # -f wins, as in OpenSSH's scp
        (RSYNC_UP, "rsync", UP),
        (RSYNC_DOWN, "rsync", DOWN),
        # --rsync-path wrappers, as rsync joins them into the command.
        (f"exec {RSYNC_UP}", "rsync", UP),
        (f"sudo -u root -E {RSYNC_UP}", "rsync", UP),
        (f"cd /srv && {RSYNC_UP}", "rsync", UP),
        (f"/usr/local/bin/{RSYNC_DOWN}", "rsync", DOWN),
        (f"sh -c '{RSYNC_UP}'", "rsync", UP),
        (f"env LANG=C nice -n 5 nohup {RSYNC_UP}", "rsync", UP),
        (f"env -u HOME -S '{RSYNC_UP}'", "rsync", UP),
        (f"timeout 60 {RSYNC_UP}", "rsync", UP),
        ("busybox sh -c 'dd of=/x'", "dd", UP),
        ("su root -c 'scp -f /etc/shadow'", "scp", DOWN),
        (f"echo start\n{RSYNC_UP}", "rsync", UP),  # a newline ends a command
        (f"echo a#b; {RSYNC_UP}", "rsync", UP),  # '#' inside a word is no comment
        # An SFTP server by path: what `sftp -s /usr/lib/openssh/sftp-server` sends.
        ("/usr/lib/openssh/sftp-server", "sftp", None),
        ("/usr/libexec/openssh/sftp-server -R -l INFO", "sftp", None),
        ("exec /usr/lib/sftp-server", "sftp", None),
        # Ansible's fallback (ssh plugin; docker/kubectl plugins wrap it in sh -c).
        ("dd of=/root/.ansible/tmp/x/AnsiballZ_ping.py bs=65536", "dd", UP),
        ("/bin/sh -c 'dd of=/tmp/x bs=65536 count=0 && sleep 0'", "dd", UP),
        ("dd if=/var/log/syslog bs=65536", "dd", DOWN),
        ("dd if=/dev/stdin of=/tmp/x", "dd", UP),
    ],
)
def test_transfer_servers_are_recognised_however_started(
    command: str, tool: str, direction: Direction | None
) -> None:
    found = classify_exec(command)
    assert isinstance(found, ExecTransfer), found
    assert (found.tool, found.direction) == (tool, direction)


@pytest.mark.parametrize(
    "command",
    ["scp a b", "rsync -a /a /b", "ls -la", "", "cat /etc/rsyncd.conf", "echo ok",
     "dd if=/dev/zero of=/tmp/blank count=1", "command -v rsync", "bash script.sh"],
)  # fmt: skip
def test_ordinary_commands_are_no_transfer(command: str) -> None:
    assert classify_exec(command) is None


@pytest.mark.parametrize(
    ("command", "why"),
    [
        (f"{RSYNC_DOWN} | gzip -9", "piped or redirected"),  # counts a compressed stream
        ("scp -f /etc/shadow > /tmp/copy", "piped or redirected"),
        ("dd if=/etc/shadow | base64", "piped or redirected"),
        (f"{RSYNC_UP}; scp -t /tmp", "more than one transfer server"),
        ("scp -t /tmp -f", "options after its operands"),  # -f read two ways
        ("scp -Z -t /tmp", "an option it does not have"),
        ("rsync --server -M --sender . /x", "--sender where rsync may read it otherwise"),
        ("rsync --server --log-file --sender . /x", "--sender where rsync may read"),
        ("rsync -v --server . /x", "where the client never puts it"),
        ("rsync --server --daemon .", "daemon mode"),
        ("rsync --server -s --iconv=utf8 .", "-s with --iconv"),
        ("taskset 1 rsync --server . /x", "in an argument of taskset"),
        ("sh -c 'rsync \"$@\"' rsync --server . /x", "the arguments of a shell script"),
        ("x=/usr/bin/scp; $x -t /tmp", "a variable"),
        ("$(echo rsync) --server", "rsync"),
        ("/opt/rsync-3.2 --server . /x", "a program named like one"),
        ("sudo -Z rsync --server . /x", "sudo with options it cannot read"),
        ("sh -c 'scp -t /x", "unbalanced quotes"),
        ('sh -c "sh -c \'sh -c \\"sh -c scp\\"\'"', None),  # nested, but still read
    ],
)
def test_what_cannot_be_followed_is_unclear(command: str, why: str | None) -> None:
    found = classify_exec(command)
    if why is None:
        assert found is None or isinstance(found, (ExecTransfer, UnclearTransfer))
        return
    assert isinstance(found, UnclearTransfer), found
    assert why in found.reason


@pytest.mark.parametrize(
    ("option", "shown"),
    [("-logDtprze.iLsfxCIvu", "-z"), ("-z", "-z"), ("--compress", "--compress"),
     ("--new-compress", "--new-compress"), ("--compress-level=1", "--compress-level=1"),
     ("--zc=zstd", "--zc=zstd"), ("--compress-choice=lz4", "--compress-choice=lz4")],
)  # fmt: skip
def test_rsync_compression_is_seen_in_every_spelling(option: str, shown: str) -> None:
    found = classify_exec(f"rsync --server --sender -logDtpre.iLsfxCIvu {option} . /x")
    assert isinstance(found, ExecTransfer) and found.compression == shown
    # The letters after -e are -e's argument, not options.
    plain = classify_exec("rsync --server --sender -e.iLsfxCIvuz . /x")
    assert isinstance(plain, ExecTransfer) and plain.compression is None


# -- what a rule says ----------------------------------------------------------------------


def policy(mode: TransferMode, cap: int | None = None, paths: tuple[str, ...] | None = None):
    return TransferPolicy(mode, "rule r", cap, paths)


def test_each_mode_refuses_the_other_direction_and_deny_refuses_all() -> None:
    upload, download = classify_exec(RSYNC_UP), classify_exec(RSYNC_DOWN)
    sftp = classify_exec("/usr/lib/openssh/sftp-server")
    assert upload is not None and download is not None and sftp is not None
    down = policy(TransferMode.DOWNLOAD_ONLY)
    assert down.exec_refusal(upload) == (
        "pamgate: rsync upload refused: rule r allows file transfer download-only"
    )
    assert down.exec_refusal(download) is None and down.exec_refusal(sftp) is None
    assert policy(TransferMode.UPLOAD_ONLY).exec_refusal(download) is not None
    deny = policy(TransferMode.DENY)
    assert all(deny.exec_refusal(found) for found in (upload, download, sftp))
    dd = classify_exec("dd of=/tmp/module.py bs=65536")
    assert dd is not None
    assert down.exec_refusal(dd) == (
        "pamgate: dd upload refused: rule r allows file transfer download-only"
    )


def test_unclear_commands_are_refused_wherever_something_is_limited() -> None:
    unclear = classify_exec(f"{RSYNC_DOWN} | gzip")
    assert isinstance(unclear, UnclearTransfer)
    assert policy(TransferMode.ALLOW).exec_refusal(unclear) is None
    for limited in (policy(TransferMode.DOWNLOAD_ONLY), policy(TransferMode.ALLOW, cap=10),
                    policy(TransferMode.ALLOW, paths=("/srv",))):  # fmt: skip
        message = limited.exec_refusal(unclear)
        assert message is not None and "cannot follow (rsync with its input" in message


def test_compression_is_refused_under_a_cap_only() -> None:
    compressed = classify_exec(f"{RSYNC_DOWN} -z")
    assert compressed is not None
    assert policy(TransferMode.DOWNLOAD_ONLY).exec_refusal(compressed) is None
    message = policy(TransferMode.DOWNLOAD_ONLY, cap=100_000).exec_refusal(compressed)
    assert message is not None
    assert message.startswith("pamgate: rsync compression (-z) refused: rule r caps files")


def test_a_sender_that_writes_on_the_target_is_refused_under_download_only() -> None:
    removing = classify_exec(f"{RSYNC_DOWN} --remove-source-files")
    assert isinstance(removing, ExecTransfer)
    assert removing.changes_target == "--remove-source-files"
    assert "rsync --remove-source-files refused" in (
        policy(TransferMode.DOWNLOAD_ONLY).exec_refusal(removing) or ""
    )
    assert policy(TransferMode.ALLOW).exec_refusal(removing) is None


def test_path_scopes_need_the_paths_on_the_command_line() -> None:
    scoped = policy(TransferMode.ALLOW, paths=("/srv/drop",))
    inside, outside = classify_exec("scp -t /srv/drop/x"), classify_exec("scp -t /etc")
    protected = classify_exec("rsync --server -slogDtpre.iLsfxCIvu")
    assert inside is not None and outside is not None and protected is not None
    assert scoped.exec_refusal(inside) is None
    assert "outside the allowed paths" in (scoped.exec_refusal(outside) or "")
    assert "no paths on its command line" in (scoped.exec_refusal(protected) or "")


# -- rsync -s: the arguments on the stream -------------------------------------------------


def stream_args(*args: str) -> bytes:
    return b"".join(arg.encode() + b"\0" for arg in ("rsync", *args)) + b"\0"


def test_stream_arguments_are_read_as_if_on_the_command_line() -> None:
    receiver = classify_exec("rsync --server -slogDtpre.iLsfxCIvu")
    assert isinstance(receiver, ExecTransfer) and receiver.protected_args
    found = with_stream_args(receiver, ["rsync", "--delete", ".", "/srv/in"])
    assert isinstance(found, ExecTransfer) and found.paths == ("/srv/in",)
    assert found.direction == UP
    sneaky = with_stream_args(receiver, ["rsync", "--sender", ".", "/etc/shadow"])
    assert isinstance(sneaky, UnclearTransfer) and "--sender" in sneaky.reason
    compressed = with_stream_args(receiver, ["rsync", "--compress-level=9", ".", "/x"])
    assert isinstance(compressed, ExecTransfer) and compressed.compression


def test_rsync_auditor_holds_the_stream_arguments_until_read() -> None:
    transfer = classify_exec("rsync --server -slogDtpre.iLsfxCIvu")
    assert isinstance(transfer, ExecTransfer)
    auditor = RsyncAuditor(policy(TransferMode.UPLOAD_ONLY), transfer, "rsync --server -s")
    args = stream_args(".", "/srv/in")
    held = auditor.from_client(args[:5])
    assert held.forward == b"" and not held.abort
    released = auditor.from_client(args[5:] + b"protocol")
    assert released.forward == args + b"protocol"
    [closed] = auditor.finish(0)
    assert closed.details["path"] == "/srv/in" and closed.details["complete"] is True


@pytest.mark.parametrize(
    ("args", "rule", "message"),
    [
        (stream_args("--sender", ".", "/etc/shadow"), TransferMode.UPLOAD_ONLY, "--sender"),
        (stream_args("--daemon", "."), TransferMode.ALLOW, "daemon mode"),
        (stream_args("--zl=9", ".", "/x"), TransferMode.UPLOAD_ONLY, "compression (--zl=9)"),
    ],
)
def test_rsync_stream_arguments_that_the_rule_refuses_close_the_channel(
    args: bytes, rule: TransferMode, message: str
) -> None:
    transfer = classify_exec("rsync --server -slogDtpre.iLsfxCIvu")
    assert isinstance(transfer, ExecTransfer)
    auditor = RsyncAuditor(policy(rule, cap=100), transfer, "rsync --server -s")
    verdict = auditor.from_client(args)
    assert verdict.abort and message in verdict.abort and verdict.forward == b""
    assert [e.action for e in verdict.events] == ["file.refused"]
    assert auditor.from_client(b"more").forward == b""
    flood = RsyncAuditor(policy(rule), transfer, "rsync --server -s")
    assert flood.from_client(b"x" * (2 * 1024 * 1024)).abort


def test_dd_streams_are_hashed_and_complete_when_dd_exits_0() -> None:
    transfer = classify_exec("dd of=/tmp/module.py bs=65536")
    assert isinstance(transfer, ExecTransfer)
    auditor = StreamAuditor(policy(TransferMode.UPLOAD_ONLY), transfer, "dd of=/tmp/module.py")
    assert auditor.from_client(b"print('hi')\n").forward == b"print('hi')\n"
    assert auditor.from_target(b"0+1 records in\n").forward == b"0+1 records in\n"
    [closed] = auditor.finish(0)
    assert closed.details["sha256"] == hashlib.sha256(b"print('hi')\n").hexdigest()
    assert (closed.details["bytes"], closed.details["complete"]) == (12, True)
    failed = StreamAuditor(policy(TransferMode.UPLOAD_ONLY), transfer, "dd")
    failed.from_client(b"x")
    [closed] = failed.finish(1)
    assert closed.details["complete"] is False and closed.details["sha256"] is None
    capped = StreamAuditor(policy(TransferMode.ALLOW, cap=10), transfer, "dd")
    assert capped.from_client(b"x" * 10).forward == b"x" * 10
    over = capped.from_client(b"y")
    assert over.abort and over.forward == b""
    [closed] = capped.finish(None)
    assert closed.details["bytes"] == 10 and closed.outcome == "interrupted"
    # Ansible copies an empty file with count=0: nothing flows, and it is still audited.
    empty = classify_exec("dd of=/tmp/empty bs=65536 count=0")
    assert isinstance(empty, ExecTransfer)
    opened, closed = StreamAuditor(policy(TransferMode.UPLOAD_ONLY), empty, "dd").finish(0)
    assert (opened.action, closed.action) == ("file.opened", "file.closed")
    assert closed.details["path"] == "/tmp/empty" and closed.details["bytes"] == 0
