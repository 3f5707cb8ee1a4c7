"""Config loading: valid files load; every error names the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config, openssh_public_key_problem
from gateway.errors import ConfigError
from tests.support.config import HOST_KEY, TARGET

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pamgate.toml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return str(caught.value)


def test_example_config_is_valid() -> None:
    config = load_config(ROOT / "config" / "pamgate.example.toml")
    assert config.target("web01") is not None
    assert config.target("web01").account_when_unnamed == "deploy"


def test_defaults_and_relative_data_dir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TARGET))
    assert config.data_dir == tmp_path.resolve()
    assert config.database_url == f"sqlite:///{tmp_path.resolve() / 'pamgate.db'}"
    assert config.listeners.human.port == 2222
    assert config.target("web01").port == 22
    assert config.target("web01").upstream_auth == "certificate"


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file.*pamgate init"):
        load_config(tmp_path / "absent.toml")


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[gateway\nname = 1")
    assert "pamgate.toml: not valid TOML" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TARGET.replace('host = "127.0.0.1"', 'host = "h"\nport = 70000'), "targets[0].port:"),
        (TARGET + "alowed_groups = []\n", "targets[0].alowed_groups: unknown key"),
        ("[listeners.human]\nport = 'x'\n", "listeners.human.port:"),
        (
            TARGET.replace(HOST_KEY, "ssh-ed25519 not-base64!"),
            "host_keys[0]: the key data is not valid base64",
        ),
        (
            TARGET.replace(HOST_KEY, "ssh-rsa " + HOST_KEY.split()[1]),
            "is for 'ssh-ed25519', not 'ssh-rsa'",
        ),
        (TARGET + 'default_account = "admin"\n', "default_account 'admin' is not one of accounts"),
        (TARGET + TARGET, "target name 'web01' is used twice"),
        (TARGET.replace('"web01"', '"web 01"'), "targets[0].name:"),
        (TARGET + 'upstream_auth = "key"\n', 'upstream_auth = "key" needs key_file'),
        ("[upstream]\ncertificate_ttl_seconds = 3600\n", "upstream.certificate_ttl_seconds:"),
        (
            "[auth]\nmax_failures_per_user = 5\n",
            "auth.max_failures_per_user: replaced by auth.user_source_failures",
        ),
        (
            "[auth]\nlockout_seconds = 300\n",
            "auth.lockout_seconds: replaced by auth.backoff_seconds",
        ),
        (
            '[listeners.human]\nport = 2222\nmax_startups = "100:30:10"\n',
            "listeners.human: max_startups '100:30:10': give start:rate:full",
        ),
        ("[auth]\nbackoff_seconds = 60\nmax_backoff_seconds = 10\n", "shorter than backoff"),
        (
            TARGET.replace('host_keys = ["' + HOST_KEY + '"]', "host_keys = []"),
            "targets[0].host_keys:",
        ),
        ('[recordings]\nurl = "s3:/bucket"\n', "recordings.url: give s3://BUCKET"),
        ('[recordings]\nurl = "s3://Bad_Bucket/x"\n', "recordings.url: give"),
        ('[recordings]\ns3_object_lock = "forever"\n', "recordings.s3_object_lock:"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    message = error_for(tmp_path, text)
    assert str(tmp_path / "pamgate.toml") in message
    assert expected in message


def test_public_key_shape_check() -> None:
    assert openssh_public_key_problem(HOST_KEY) is None
    assert openssh_public_key_problem("ssh-ed25519") is not None
    assert openssh_public_key_problem("ssh-ed25519 AAAA") is not None


def test_an_s3_url_names_the_bucket_and_the_prefix(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[recordings]\nurl = "s3://recs.example/site-1/gw/"\n'))
    assert (config.recordings.bucket, config.recordings.prefix) == ("recs.example", "site-1/gw")
    bare = load_config(write(tmp_path, '[recordings]\nurl = "s3://recs"\n')).recordings
    assert (bare.bucket, bare.prefix) == ("recs", "")
