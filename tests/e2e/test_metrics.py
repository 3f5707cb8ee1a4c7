"""The [metrics] endpoint, scraped as Prometheus and a load balancer would."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.devtools.openssh_target import free_port
from tests.support.gateway import launch_gateway
from tests.support.nodes import sample, scrape

pytestmark = pytest.mark.openssh


def test_metrics_count_what_happened_and_health_answers(tmp_path: Path) -> None:
    port = free_port()
    with launch_gateway(tmp_path, f"\n[metrics]\nport = {port}\n") as gateway:
        status, before = scrape(port, "/metrics")
        assert status == 200
        user = gateway.make_user()
        assert gateway.run_ssh(user, "web01", "echo metered").returncode == 0
        refused = gateway.make_user()
        refused.password = "not-the-password"
        assert gateway.run_ssh(refused, "web01", "true").returncode != 0
        status, after = scrape(port, "/metrics")
        assert status == 200
        for name, labels, grew_by in (
            ("pamgate_logins_total", {"lane": "human", "outcome": "success"}, 1),
            ("pamgate_sessions_started_total", {"lane": "human"}, 1),
            ("pamgate_sessions_ended_total", {"lane": "human", "status": "closed"}, 1),
        ):
            assert sample(after, name, **labels) - sample(before, name, **labels) == grew_by, name
        assert sample(after, "pamgate_logins_total", lane="human", outcome="failure") >= 1
        assert sample(after, "pamgate_relay_bytes_total", lane="human",
                      direction="from_target") >= len("metered\n")  # fmt: skip
        assert sample(after, "pamgate_audit_append_seconds_count") > 0
        live = re.search(r'pamgate_sessions_live\{lane="human",node="([^"]+)"\} 0\.0', after)
        assert live, "this node's live sessions, none left"
        assert sample(after, "pamgate_requests_pending") == 0
        assert sample(after, "pamgate_workers") == 1
        assert "# TYPE pamgate_audit_append_seconds histogram" in after
        status, body = scrape(port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok", body
        assert json.loads(body)["node"] == live.group(1)
        assert scrape(port, "/nothing")[0] == 404


def test_no_endpoint_unless_a_port_is_set(tmp_path: Path) -> None:
    with launch_gateway(tmp_path) as gateway:
        log = (gateway.data_dir / "logs" / "gateway.log").read_text()
        assert "/metrics" not in log
