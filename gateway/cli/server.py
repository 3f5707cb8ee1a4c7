"""Running a gateway node and its database: ``init``, ``serve``, ``demo``,
``console``, ``db upgrade``/``db revision``, ``status`` and ``check-config``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.common import local_admin, open_services, upstream_ca_line
from gateway.config import GatewayConfig, find_config_path, load_config
from gateway.crypto.secret_box import KEY_ENV_VAR
from gateway.errors import PamgateError
from gateway.processes import process_exists

#: How long ``pamgate node reload|drain`` wait for the node to answer (it looks every 2 s).
ANSWER_SECONDS = 15.0
#: Why a node may not answer a reload or drain request.
SILENT = (
    "it acts when it reads the request (see 'pamgate audit tail'); a node of a release "
    "before 'node reload' and 'node drain' never does: stop it with SIGTERM instead"
)

if TYPE_CHECKING:
    from gateway.cli.common import Subcommands
    from gateway.domain.audit.trail import AuditRecord
    from gateway.domain.node_control import NodeControl

EXAMPLE_CONFIG = """\
# pamgate gateway configuration (written by 'pamgate init').
# Every setting is described in config/pamgate.example.toml in the source tree.

[gateway]
name = "pamgate"
data_dir = "."          # relative to this file

[listeners.human]
address = "127.0.0.1"
port = 2222

# Add targets like this, then restart 'pamgate serve':
# [[targets]]
# name = "web01"
# host = "10.0.0.5"
# port = 22
# accounts = ["root", "deploy"]
# default_account = "deploy"
# host_keys = ["ssh-ed25519 AAAA..."]   # ssh-keyscan -t ed25519 10.0.0.5
#
# [[rules]]
# id = "ops-web01"
# groups = ["ops"]
# targets = ["web01"]
# mode = "allow"
"""


def add_commands(commands: Subcommands) -> None:
    """``init``, ``serve``, ``demo``, ``console``, ``db`` and ``status``."""
    # init loads the config itself: it may have to write a starter one first.
    commands.add_parser(
        "init",
        help="create the data directory, keys, upstream CA and database",
        description=(
            "Create the data directory, the human-lane host key, the upstream CA and the "
            "database. Writes a starter config file if there is none. Safe to run again: "
            "existing keys are never overwritten."
        ),
    ).set_defaults(handler=cmd_init, needs_config=False)

    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description=(
            "Run the gateway in the foreground until SIGINT or SIGTERM. With several relay "
            "workers ([node] workers), each worker process listens on both lanes' ports and "
            "this process supervises them and runs the node-wide duties."
        ),
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="relay worker processes (overrides [node] workers; 0: one per core, "
        "1: everything in one process)",
    )
    serve.set_defaults(handler=cmd_serve)

    demo = commands.add_parser(
        "demo",
        help="run a demo gateway with a real OpenSSH target and two users",
        description=(
            "Start a gateway on 127.0.0.1 with one demo target (a real OpenSSH sshd with a "
            "shell, trusting the gateway's upstream CA) and two demo users, then print the "
            "ssh command, passwords and TOTP secrets. State is kept in --data-dir, which "
            "holds a config file usable with every other command. Runs until Ctrl-C."
        ),
    )
    demo.add_argument(
        "--data-dir", type=Path, default=Path("pamgate-demo"), help="default: ./pamgate-demo"
    )
    demo.add_argument(
        "--port", type=int, help="human lane port on first run (default: 2222, or a free port)"
    )
    demo.add_argument(
        "--machine-port",
        type=int,
        help="machine lane port on first run (default: 2223, or a free port)",
    )
    demo.set_defaults(handler=cmd_demo, needs_config=False)

    console = commands.add_parser(
        "console",
        help="the terminal console for approvers, auditors and administrators",
        description=(
            "Open the Textual console: sign in with your pamgate user name, password and TOTP "
            "code. What you can do follows your groups ([console] in the config): approvers "
            "decide requests, auditors watch sessions, replay recordings and read the audit "
            "trails, admins terminate sessions and manage identities. It locks itself after "
            "[console] idle_lock without input."
        ),
    )
    console.set_defaults(handler=cmd_console)

    db = commands.add_parser("db", help="the database schema").add_subparsers(
        dest="db_command", metavar="ACTION", required=True
    )
    db.add_parser(
        "upgrade",
        help="apply pending schema migrations",
        description=(
            "Bring the database schema to this release of pamgate, one revision at a time, "
            "printing each, then seal TOTP secrets still stored in clear (with progress), "
            "making the key file DATA_DIR/keys/totp_secrets.key if the database has no sealed "
            "secret yet and $PAMGATE_TOTP_KEY is not set. A database created before migrations "
            "is adopted. Stop the gateway nodes first; they refuse to start on an outdated "
            "schema or on secrets in clear."
        ),
    ).set_defaults(handler=cmd_db_upgrade)
    revision = db.add_parser(
        "revision",
        help="write a migration for model changes (developers)",
        description=(
            "Compare gateway/store/models.py with the newest revision and write a new revision "
            "file under gateway/store/migrations/versions (needs a source checkout)."
        ),
    )
    revision.add_argument("-m", "--message", required=True, help="what the revision adds")
    revision.set_defaults(handler=cmd_db_revision, needs_config=False)
    commands.add_parser(
        "status",
        help="nodes, heartbeats, live sessions and database health",
        description=(
            "Show the database (reachable, round trip, schema revision) and every gateway "
            "node sharing it: status, age of its last heartbeat and live sessions. Exits 1 "
            "if the database is unreachable or its schema is outdated, or a node is silent "
            "or dead (retire a dead node for good with 'pamgate node forget NAME')."
        ),
    ).set_defaults(handler=cmd_status)
    node = commands.add_parser("node", help="the gateway nodes sharing this database")
    node_commands = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    forget = node_commands.add_parser(
        "forget",
        help="remove a retired node from the registry",
        description=(
            "Remove a node that is stopped or dead from the nodes 'pamgate status' lists, so "
            "it no longer counts against the deployment's health. Refused while the node is "
            "up or still has live sessions. Audited (node.forgotten)."
        ),
    )
    forget.add_argument("name", metavar="NAME", help="the node's [node] name")
    forget.set_defaults(handler=cmd_node_forget)
    reload = node_commands.add_parser(
        "reload",
        help="make a running node re-read its policy, keeping live sessions",
        description=(
            "Ask a running node (on any host sharing the database) to re-read its config "
            "file's targets, target groups and rules, and wait for its answer. Live sessions "
            "go on; those the new policy no longer allows are ended within seconds. An "
            "invalid file changes nothing (exit 1 with the reason). Other settings need a "
            "restart. SIGHUP to 'pamgate serve' does the same for a local node. Audited "
            "(node.reload_requested, then node.reloaded or node.reload_failed)."
        ),
    )
    reload.add_argument(
        "name", metavar="NAME", nargs="?", help="the node's [node] name (default: this one)"
    )
    reload.set_defaults(handler=cmd_node_reload)
    drain = node_commands.add_parser(
        "drain",
        help="stop a node gently: no new sessions, live ones end by a deadline",
        description=(
            "Ask a running node (on any host sharing the database) to drain: within seconds "
            "it refuses new sessions and its /healthz answers 503, its live sessions' users "
            "are warned, those still live at the deadline are ended (reason 'node drained') "
            "and the node stops with exit status 0. Asking again moves the deadline. Audited "
            "(node.drain_requested, node.draining, node.drained)."
        ),
    )
    drain.add_argument("name", metavar="NAME", help="the node's [node] name")
    drain.add_argument(
        "--deadline", default="30m", metavar="DURATION",
        help="how long live sessions may go on, e.g. 90s, 15m, 2h (default: 30m)",
    )  # fmt: skip
    drain.set_defaults(handler=cmd_node_drain)


def _worker_count(text: str) -> int:
    """``--workers``: a whole number from 0 (one per core) up."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= count <= 512:
        raise argparse.ArgumentTypeError(f"{count}: give 0 (one per core) to 512")
    return count


def add_check_config_command(commands: Subcommands) -> None:
    """``check-config`` (added last, so it comes last in ``pamgate --help``)."""
    commands.add_parser(
        "check-config",
        help="validate the config file and exit",
        description="Load and validate the config file; print problems with file and key.",
    ).set_defaults(handler=cmd_check_config)


def cmd_init(args: argparse.Namespace) -> int:
    """Write a starter config if there is none, then prepare the data directory."""
    from gateway.datadir import initialize

    path = find_config_path(args.config)
    if not path.exists():
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
        # Owner-only: a config may hold a database password.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as config_file:
            config_file.write(EXAMPLE_CONFIG)
        print(f"wrote starter config {path} (mode 0600)")
    config = load_config(path)
    for line in initialize(config, actor=local_admin().name):
        print(line)
    print(f"upstream CA public key (for targets' TrustedUserCAKeys): {upstream_ca_line(config)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run this node until SIGINT or SIGTERM."""
    config: GatewayConfig = args.loaded_config
    workers = config.node.worker_count(args.workers)
    if workers > 1 and config.metrics.port is not None:
        _share_metrics_between_processes()
    from gateway.ssh.node import GatewayNode, configure_logging, run_event_loop, run_until_signalled

    configure_logging(config)
    node = GatewayNode(config, workers=workers)
    run_event_loop(run_until_signalled(node))
    return 0


def _share_metrics_between_processes() -> None:
    """Have every process of this ``serve`` count its metrics into one fresh directory
    that the endpoint adds up (prometheus_client's multiprocess mode).

    prometheus_client picks where counters live when it is imported, from
    ``PROMETHEUS_MULTIPROC_DIR``: so this runs before anything imports it, and the
    relay workers inherit the variable. The directory goes when ``serve`` exits,
    or (after a ``kill -9``) when the next ``serve`` finds its owner's pid gone.
    """
    import atexit
    import shutil
    import tempfile

    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess mode was set")
    prefix = "pamgate-metrics-"
    for left in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        owner = left.name.removeprefix(prefix).split("-")[0]
        if owner.isdigit() and not process_exists(int(owner)):
            shutil.rmtree(left, ignore_errors=True)
    directory = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo gateway, its OpenSSH target and two users until Ctrl-C."""
    from gateway.devtools.demo import run_demo

    run_demo(args.data_dir, gateway_port=args.port, machine_port=args.machine_port)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply pending schema migrations, printing each."""
    from gateway.store.database import Store

    config: GatewayConfig = args.loaded_config
    store = Store(config.database_url)
    try:
        before = store.schema_state()
        print(f"database schema: {before.describe()}")
        applied = store.upgrade(progress=lambda line: print(line, flush=True))
        if applied:
            print(f"upgraded to revision {applied[-1]} ({len(applied)} applied)")
        else:
            print("schema: nothing to do")
    finally:
        store.dispose()
    _seal_totp_secrets(config)
    return 0


def _seal_totp_secrets(config: GatewayConfig) -> None:
    """Seal the TOTP secrets still stored in clear, making the key file if none exists yet."""
    from gateway.datadir import DataDir, ensure_totp_key
    from gateway.services import GatewayServices

    services = GatewayServices.open(config)
    try:
        users = services.users
        has_key = DataDir(config.data_dir).totp_key.exists() or os.environ.get(KEY_ENV_VAR)
        if not has_key and not users.has_sealed_secrets():
            # A key made now could not open secrets sealed elsewhere: only when there are none.
            for line in ensure_totp_key(config):
                print(line)
        sealed = users.seal_plain_secrets(
            lambda done, total: print(f"sealing TOTP secrets: {done}/{total}", flush=True)
        )
        users.check_secrets()
        print(f"TOTP secrets: {sealed} sealed now; all are sealed" if sealed
              else "TOTP secrets: all sealed")  # fmt: skip
    finally:
        services.close()


def cmd_db_revision(args: argparse.Namespace) -> int:
    """Write a new migration for changes to the models (developers)."""
    from gateway.store.schema import new_revision

    print(f"wrote {new_revision(args.message)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The database and every node's health; 1 if unhealthy."""
    from gateway.domain.health import deployment_status
    from gateway.services import GatewayServices

    config: GatewayConfig = args.loaded_config
    # Not open_services: that refuses an outdated schema, which status must report.
    services = GatewayServices.open(config)
    try:
        status = deployment_status(
            services.store, services.nodes, services.recordings.storage_status()
        )
    finally:
        services.close()
    for line in status.lines(config.node.heartbeat_timeout_seconds):
        print(line)
    return 0 if status.healthy(config.node.heartbeat_timeout_seconds) else 1


def cmd_node_forget(args: argparse.Namespace) -> int:
    """Remove a retired node from the registry."""
    from gateway.domain.audit.actors import LOCAL_ADMIN_AUTHORITY

    with open_services(args) as services:
        forgotten = services.nodes.forget(
            args.name, actor=local_admin().name, authority=LOCAL_ADMIN_AUTHORITY
        )
    print(f"forgot node {forgotten.name} ({forgotten.status}, last heartbeat "
          f"{forgotten.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)")  # fmt: skip
    return 0


def cmd_node_reload(args: argparse.Namespace) -> int:
    """Ask a node to reload its policy and wait for its answer; 1 if it refused or is silent."""
    from gateway.domain.audit.actors import LOCAL_ADMIN_AUTHORITY
    from gateway.domain.node_control import RELOAD_ANSWERS

    with open_services(args) as services:
        name = args.name or services.config.node_name
        control = services.node_control
        asked = control.request_reload(
            name, actor=local_admin().name, authority=LOCAL_ADMIN_AUTHORITY
        )
        answer = _wait_for_answer(control, name, RELOAD_ANSWERS, asked)
    if answer is None:
        print(f"pamgate: node {name} did not answer within {ANSWER_SECONDS:.0f} s: {SILENT}",
              file=sys.stderr)  # fmt: skip
        return 1
    if answer.action != "node.reloaded":
        print(f"pamgate: node {name} kept its policy: {answer.reason}", file=sys.stderr)
        return 1
    details = json.loads(answer.details)
    print(f"node {name} reloaded its policy: sha256 {details['old_policy_sha256'][:12]} -> "
          f"{details['new_policy_sha256'][:12]} ({details['targets']} targets, "
          f"{details['rules']} rules)")  # fmt: skip
    for section in details.get("restart_needed", []):
        print(f"  [{section}] changed: it takes effect when the node restarts")
    return 0


def cmd_node_drain(args: argparse.Namespace) -> int:
    """Ask a node to drain by a deadline and wait until it has begun; 1 if it is silent."""
    from gateway.config import parse_duration
    from gateway.domain.audit.actors import LOCAL_ADMIN_AUTHORITY
    from gateway.domain.node_control import DRAIN_ANSWERS

    seconds = parse_duration(args.deadline, "--deadline")
    with open_services(args) as services:
        control = services.node_control
        deadline, asked = control.request_drain(
            args.name, seconds, actor=local_admin().name, authority=LOCAL_ADMIN_AUTHORITY
        )
        answer = _wait_for_answer(control, args.name, DRAIN_ANSWERS, asked)
    if answer is None:
        print(f"pamgate: node {args.name} did not answer within {ANSWER_SECONDS:.0f} s: "
              f"{SILENT}", file=sys.stderr)  # fmt: skip
        return 1
    live = json.loads(answer.details).get("live_sessions", 0)
    print(f"node {args.name} is draining: it refuses new sessions; its {live} live "
          f"sessions end by {deadline:%Y-%m-%d %H:%M:%S} UTC; then it stops")  # fmt: skip
    return 0


def _wait_for_answer(
    control: NodeControl, node: str, answers: tuple[str, ...], asked: int
) -> AuditRecord | None:
    """The node's answer to the request at ``asked`` in the human trail, once it has one
    (None after ANSWER_SECONDS)."""
    deadline = time.monotonic() + ANSWER_SECONDS
    answer = control.answer(node, answers, after_seq=asked)
    while answer is None and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = control.answer(node, answers, after_seq=asked)
    return answer


def cmd_console(args: argparse.Namespace) -> int:
    """The Textual console, for as long as the person keeps it open."""
    from tui.app import PamgateConsole

    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise PamgateError("the console needs a terminal (run it from an interactive shell)")
    with open_services(args) as services:
        PamgateConsole(services).run()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Report that the config (already loaded and validated by main) is fine."""
    config: GatewayConfig = args.loaded_config
    targets = f"{len(config.targets)} target{'s' if len(config.targets) != 1 else ''}"
    print(f"{config.source}: OK ({targets}, data dir {config.data_dir})")
    return 0
