"""``pamgate ca``: the gateway's certificate authorities: the upstream CA
(targets trust it for human sessions), the machine CA (NHI certificates) and
the login CA (people's login certificates from ``pamgate-login``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gateway.cli.common import open_services, upstream_ca_line

if TYPE_CHECKING:
    from gateway.cli.common import Subcommands


def add_commands(commands: Subcommands) -> None:
    """``ca show upstream|machine|login``."""
    ca = commands.add_parser("ca", help="certificate authorities").add_subparsers(
        dest="ca_command", metavar="SUBCOMMAND", required=True
    )
    show = ca.add_parser(
        "show",
        help="print a CA public key",
        description=(
            "Print a CA's public key as one OpenSSH line. For 'upstream', put it in the "
            "target's TrustedUserCAKeys file."
        ),
    )
    show.add_argument(
        "which", choices=["upstream", "machine", "login"],
        help="upstream: for targets' TrustedUserCAKeys; machine: signs NHI certificates; "
        "login: signs people's login certificates (pamgate-login)",
    )  # fmt: skip
    show.set_defaults(handler=cmd_ca_show)


def cmd_ca_show(args: argparse.Namespace) -> int:
    if args.which == "machine":
        with open_services(args) as services:
            print(services.machine_ca.public_key_line())
    elif args.which == "login":
        with open_services(args) as services:
            print(services.login_certificates.ca_key_line())
    else:
        print(upstream_ca_line(args.loaded_config))
    return 0
