"""The docs: generated reference pages match the code, the site builds strictly, the systemd
unit is valid and confined, the README stays a short entry point, and the several-nodes
page's config and HAProxy examples are read by pamgate and haproxy as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.cli import reference_docs
from gateway.cli.reference_docs import PAGES, REFERENCE_DIR
from gateway.config import load_config
from tests.support.docs import DOCS, ROOT, page


@pytest.mark.parametrize("name", sorted(PAGES))
def test_generated_reference_pages_are_up_to_date(name: str) -> None:
    committed = (REFERENCE_DIR / name).read_text()
    assert committed == PAGES[name](), (
        f"docs/reference/{name} is stale: run `.venv/bin/python -m gateway.cli.reference_docs`"
    )


def test_every_setting_is_explained() -> None:
    table_rows = [
        line for line in page("reference/configuration.md").splitlines()
        if line.startswith("| `")
    ]  # fmt: skip
    assert len(table_rows) > 60
    unexplained = [row.split("|")[1].strip() for row in table_rows if row.rstrip().endswith("|  |")]
    assert not unexplained, f"settings without a #: comment in gateway/config.py: {unexplained}"


def test_every_command_has_its_help_in_the_reference() -> None:
    from gateway.cli.app import build_parser

    text = page("reference/cli.md")
    for sub in reference_docs._subcommands(build_parser()):
        assert f"## `{sub.prog}`" in text


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    html = (tmp_path / "site" / "tutorial" / "index.html").read_text()
    tutorial = re.sub(r"<[^>]+>", "", html)  # the text, without the highlighting's spans
    assert "Five-minute tour" in tutorial and "request approve" in tutorial  # README included


def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert not {p for p in pages if p not in nav}, "pages missing from mkdocs.yml nav"


def test_the_readme_is_a_short_entry_point() -> None:
    readme = page("README.md")
    assert len(readme.splitlines()) <= 250
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), f"README links to a missing page: {link}"


def test_the_systemd_unit_is_valid_and_confined(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed to check config/pamgate.service"
    pamgate = Path(sys.executable).with_name("pamgate")
    unit = tmp_path / "pamgate.service"
    unit.write_text(
        (ROOT / "config" / "pamgate.service").read_text().replace(
            "/opt/pamgate/bin/pamgate", str(pamgate)
        )
    )
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True
    )
    exposure = re.search(r"Overall exposure level for pamgate.service: ([\d.]+)", security.stdout)
    assert exposure, security.stdout[-2000:] + security.stderr
    documented = re.search(r"rates the unit ([\d.]+)", page("operations/systemd.md"))
    assert documented and float(exposure.group(1)) <= float(documented.group(1))


def _block_after(text: str, marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->``, its indentation removed."""
    after = text.split(f"<!-- {marker} -->", 1)[1]
    found = re.search(r"```\w*\n(.*?)^\s*```", after, re.S | re.M)
    assert found, f"no code block after <!-- {marker} -->"
    return textwrap.dedent(found.group(1))


def test_the_three_node_example_config_is_read_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "pamgate.toml"
    path.write_text(_block_after(page("operations/several-nodes.md"), "three-node-config"))
    config = load_config(path)
    assert config.node.name == "gw1"
    assert config.gateway.database_url.startswith("postgresql+psycopg://")
    assert config.recordings.url == "s3://pamgate-recordings/prod"
    assert config.recordings.s3_object_lock == "compliance"
    assert [str(n) for n in config.listeners.human.proxy_protocol_from] == ["10.0.0.5/32"]


def test_the_documented_haproxy_file_is_valid(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(haproxy).exists(), "haproxy is needed (scripts/setup.sh --test installs it)"
    text = page("operations/several-nodes.md")
    found = re.search(r"```\n(# /etc/haproxy/haproxy.cfg.*?)```", text, re.S)
    assert found, "the HAProxy example is gone from several-nodes.md"
    config = tmp_path / "haproxy.cfg"
    config.write_text(found.group(1))
    checked = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
