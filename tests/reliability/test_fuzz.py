"""Hostile input, fuzzed with hypothesis: a clear error (the module's PamgateError or
RecordingError) and no crash, for login names, config files, certificates and recordings.

The example counts scale with the suite's size (CI: ``SIZE.fuzz_examples``); the
counts actually tried are reported as figures.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import NAME_RE, ConfigError, load_config
from gateway.crypto.certificates import (
    MAX_PRINCIPALS,
    CertificateMalformed,
    parse_certificate,
    parse_certificate_line,
)
from gateway.domain.access import parse_login_name
from gateway.errors import DestinationSyntaxError
from recordings.asciicast import Event, RecordingError, iter_events
from recordings.commands import CommandExtractor
from recordings.player import PlainRecording, Player, RecordingIndex, screen_at
from recordings.sanitize import TerminalSanitizer
from recordings.terminal import TerminalModel
from tests.support.escapes import dangerous_sequences
from tests.support.reliability import SIZE
from tui.widgets import TerminalImage

pytestmark = pytest.mark.reliability

FUZZ = settings(
    max_examples=SIZE.fuzz_examples,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "pamgate.example.toml"

#: Characters that matter to login-name syntax, plus controls, wide and invisible ones.
ODD = ":@/\\ \t\n\r\x00\x1b\x7f\u202e\u200b\ufeffé漢🙂-_.."
login_text = st.text(alphabet=st.sampled_from(ODD) | st.characters(), max_size=300)


def count(figures: dict[str, Any]) -> None:
    figures["examples"] = figures.get("examples", 0) + 1


@given(login_text)
@FUZZ
def test_login_names(figures: dict[str, Any], text: str) -> None:
    count(figures)
    try:
        login = parse_login_name(text)
    except DestinationSyntaxError as exc:
        assert str(exc)
        return
    # Whatever is accepted is made only of plain names.
    assert NAME_RE.match(login.user)
    for part in (login.target, login.account):
        assert part is None or NAME_RE.match(part)


# -- config files --------------------------------------------------------------------------

#: Values of every TOML type, and text that is not TOML at all.
toml_values = st.sampled_from(
    ['""', "0", "-1", "1e400", "true", "[]", "[1, \"a\"]", "{}", "{ a = 1 }", '"x" * 3',
     '"\\u0000"', "'''\n'''", "1979-05-27T07:32:00Z", "nan", '"' + "a" * 5000 + '"', "=", "[[",
     '"127.0.0.1"', '"2m"', '"-5m"', "65536", '"web01"', '["*"]']
)  # fmt: skip


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    """The example config with lines dropped, values of the wrong type, and unknown keys."""
    lines = EXAMPLE_CONFIG.read_text().splitlines()
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "retype", "unknown", "garbage"]))
        line = lines[index]
        if action == "drop":
            del lines[index]
        elif action == "retype" and "=" in line and not line.lstrip().startswith("#"):
            lines[index] = f"{line.split('=', 1)[0]}= {draw(toml_values)}"
        elif action == "unknown":
            lines.insert(index, f"surprise_{draw(st.integers(0, 9))} = {draw(toml_values)}")
        else:
            lines.insert(index, draw(st.text(max_size=40)))
        if not lines:
            lines = [""]
    return "\n".join(lines) + "\n"


@given(mutated_configs())
@FUZZ
def test_config_files(figures: dict[str, Any], text: str) -> None:
    count(figures)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pamgate.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(path) in str(exc), exc  # the message names the file


# -- certificates --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A real user certificate, a plain key, and a certificate with 5000 principals."""
    folder = tmp_path_factory.mktemp("certs")
    ca, key = folder / "ca", folder / "key"
    for path in (ca, key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)

    def sign(principals: str) -> bytes:
        subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "fuzz", "-n", principals,
                        "-V", "-5m:+5m", str(key.with_suffix(".pub"))], check=True)  # fmt: skip
        line = (folder / "key-cert.pub").read_text()
        return base64.b64decode(line.split()[1])

    return {
        "good": sign("svc"),
        # ssh-keygen stops at 256 principals; asyncssh signs as many as asked.
        "huge": asyncssh.read_private_key(str(ca))
        .generate_user_certificate(
            asyncssh.read_public_key(str(key.with_suffix(".pub"))),
            "fuzz",
            principals=[f"p{n}" for n in range(5000)],
        )
        .public_data,
        "plain": base64.b64decode(key.with_suffix(".pub").read_text().split()[1]),
    }


@pytest.mark.openssh  # ssh-keygen signs the seed certificates
@given(data=st.data())
@FUZZ
def test_certificates(
    figures: dict[str, Any], certificates: dict[str, bytes], data: st.DataObject
) -> None:
    count(figures)
    blob = certificates[data.draw(st.sampled_from(sorted(certificates)))]
    how = data.draw(st.sampled_from(["truncate", "flip", "garbage", "splice", "as-is"]))
    if how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    elif how == "flip":
        position = data.draw(st.integers(0, len(blob) - 1))
        blob = (
            blob[:position]
            + bytes([blob[position] ^ data.draw(st.integers(1, 255))])
            + blob[position + 1 :]
        )
    elif how == "garbage":
        blob = data.draw(st.binary(max_size=2000))
    elif how == "splice":
        blob = blob[: data.draw(st.integers(0, 60))] + data.draw(st.binary(max_size=200))
    try:
        certificate = parse_certificate(blob)
    except CertificateMalformed as exc:
        assert str(exc)
    else:
        assert len(certificate.principals) <= MAX_PRINCIPALS + 1, "principal lists are bounded"
    line = f"ssh-ed25519-cert-v01@openssh.com {base64.b64encode(blob).decode()}"
    for text in (line, line[: data.draw(st.integers(0, len(line)))]):
        with contextlib.suppress(CertificateMalformed):
            parse_certificate_line(text)


# -- recordings ----------------------------------------------------------------------------

HEADER = json.dumps({"version": 2, "width": 80, "height": 24})
event_lines = st.one_of(
    st.builds(lambda t, c, d: json.dumps([t, c, d]),
              st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70),
              st.sampled_from(["o", "i", "r", "m", "", "oo"]),
              st.text(max_size=200) | st.just("\x1b]52;c;SGVsbG8=\x07") | st.just("9999x9999")),
    st.text(max_size=200),  # broken JSON
    st.sampled_from(['[1, "o"]', '{"a": 1, "b": 2, "c": 3}', '["1", "o", "x"]', "[1, 2, 3]",
                     '[1, "o", ["x"]]', '[1, "r", "0x0"]', '[1, "r", "-5x3"]', "null", "[]"]),
    st.just(json.dumps([1.0, "o", "x" * 200_000])),  # a huge line
)  # fmt: skip
headers = st.sampled_from(
    [HEADER, "", "{", "[]", '{"version": 2, "width": "wide", "height": 24}',
     '{"version": 2, "width": 0, "height": -3}', '{"version": 1}', '{"version": 2, "width": 1e9}']
)  # fmt: skip


@given(headers, st.lists(event_lines, max_size=12))
@FUZZ
def test_recordings(figures: dict[str, Any], header: str, lines: list[str]) -> None:
    count(figures)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.cast"
        path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8", errors="replace")
        try:
            events = list(iter_events(path))
            recording = PlainRecording(path)
            index = recording.index()
            screen_at(path, index, index.duration / 2)
            out = io.StringIO()
            Player(recording, out=out, keys_fd=None, speed=1e9, idle_limit=0).play()
        except RecordingError as exc:
            assert str(exc)
            return
        assert isinstance(index, RecordingIndex) and len(events) <= len(lines)
        assert dangerous_sequences(out.getvalue()) == []


#: Escape-sequence building blocks, so random text is mostly sequences, not plain letters.
terminal_pieces = st.sampled_from(
    ["\x1b[", "\x1b[?", "\x1b[>", "\x1b]", "\x1bP", "\x1b_", "\x1b", "\x07", "\x1b\\", "\x9b",
     "\x9d", ";", "0", "1", "6", "99999999", "A", "m", "n", "h", "l", "r", "t", "J", "K", "@",
     "$", "\r\n", "\u202e", "\u0301", "漢", "x"]
)  # fmt: skip


@given(st.lists(st.lists(terminal_pieces, max_size=30).map("".join), max_size=8))
@FUZZ
def test_terminal_output_in_replay_extraction_and_console(
    figures: dict[str, Any], chunks: list[str]
) -> None:
    """Any output a session prints: the console's view draws no control, nothing raises."""
    count(figures)
    model = TerminalModel(40, 5)
    extractor = CommandExtractor(40, 5)
    for moment, chunk in enumerate(chunks):
        model.feed(chunk)
        extractor.feed(Event(float(moment), "o", chunk))
        extractor.feed(Event(float(moment), "i", "\r"))
        for strip in TerminalImage.of(model).lines:
            for segment in strip:
                assert all(unicodedata.category(c) not in ("Cc", "Cf") for c in segment.text)
    extractor.finish()
    sanitized = TerminalSanitizer().feed("".join(chunks))
    assert dangerous_sequences(sanitized) == []
