"""``zwo-alpaca passwd USER``: set (or remove) an HTTP Basic authentication user in the config file.

Adding the first user turns authentication on for the device API and the setup pages; removing the
last one turns it off (see ``docs/security.md``). The password is stored as a salted scrypt hash
under ``server.auth.users``, never in clear. A running server notices the change within a second
or two; it need not be restarted.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from alpaca_server.security import hash_password, users_from, valid_username
from zwo_common.config import Config

MIN_RECOMMENDED_LENGTH = 8


def add_parser(subparsers: Any) -> None:
    """Register ``zwo-alpaca passwd``."""
    p = subparsers.add_parser(
        "passwd",
        help="set a password for HTTP Basic authentication (turns authentication on)",
        description="Set the password of USER for the web pages and the Alpaca API (stored hashed in the "
        "config file). The first user turns HTTP Basic authentication on; --delete of the last one turns it "
        "off. ASCOM clients (NINA, ...) then need the user name and password in their Alpaca settings.",
    )
    p.add_argument("user", nargs="?", metavar="USER", help="the user name (no ':' or spaces)")
    p.add_argument("--config", metavar="FILE", help="config file (default ~/.config/zwo-alpaca/config.json; "
                   "the service uses /var/lib/zwo-alpaca/config.json)")
    p.add_argument("--delete", action="store_true", help="remove USER instead")
    p.add_argument("--list", action="store_true", help="list the users and whether authentication is on")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input (for scripts) instead of asking")
    p.set_defaults(func=run)


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass(f"New password for {args.user}: ")
    second = getpass.getpass("Again: ")
    if first != second:
        print("error: the passwords do not match; nothing changed", file=sys.stderr)
        return None
    return first


def run(args: argparse.Namespace) -> int:
    """Exit status 0 on success, 1 on a refused change, 2 on a usage error."""
    config = Config.load(args.config)
    auth = config.server_value("auth", None)
    auth = dict(auth) if isinstance(auth, dict) else {}
    users = users_from(auth)
    if args.list:
        if users:
            print(f"authentication ON ({config.path}): " + ", ".join(sorted(users)))
        else:
            print(f"authentication OFF: no users in {config.path}")
        return 0
    if not args.user:
        print("error: give a USER (or --list)", file=sys.stderr)
        return 2
    problem = valid_username(args.user)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.delete:
        if args.user not in users:
            print(f"error: there is no user {args.user!r} in {config.path}", file=sys.stderr)
            return 1
        del users[args.user]
        verb = "removed"
    else:
        password = _read_password(args)
        if password is None:
            return 1
        if not password:
            print("error: the password is empty; nothing changed", file=sys.stderr)
            return 1
        if len(password) < MIN_RECOMMENDED_LENGTH:
            print(f"warning: a password shorter than {MIN_RECOMMENDED_LENGTH} characters is easy to guess",
                  file=sys.stderr)
        users[args.user] = hash_password(password)
        verb = "saved (scrypt hash)"
    auth["users"] = users
    config.set_server_value("auth", auth)
    config.save()
    state = "ON for the Alpaca API and the setup pages" if users else "OFF (no users left)"
    print(f"password for {args.user} {verb} in {config.path}; authentication is {state}. "
          "A running server picks this up within seconds.")
    return 0
