"""A real SMTP server for the mail tests: aiosmtpd, storing every message in a Maildir.

By default it binds 127.0.0.1 port 0 itself and prints the port it got, so no other process
can take the port between choosing it and listening on it (a test that picked a free port
first could hand the same port to two servers running side by side, and read the wrong
mailbox). `--port N` binds that port instead (a test that starts the server late, after the
sender already tried it). `--auth USER:PASSWORD` requires SMTP sign-in with exactly that
user and password before any mail is accepted.

Usage: python3 smtp.py MAILDIR [--port N] [--auth USER:PASSWORD]
"""

import argparse
import asyncio
import logging
import warnings

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult


async def main(args: argparse.Namespace) -> None:
    handler = Mailbox(args.maildir)
    kwargs = {}
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticate(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login == user.encode() and auth_data.password == password.encode()
            return AuthResult(success=ok)

        # Sign-in over a plain connection: the test runs on loopback only.
        kwargs = dict(authenticator=authenticate, auth_required=True, auth_require_tls=False)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, **kwargs), host="127.0.0.1", port=args.port
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    # Sign-in without TLS is what the test wants (loopback only): no warnings about it.
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    parser = argparse.ArgumentParser()
    parser.add_argument("maildir")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--auth")
    asyncio.run(main(parser.parse_args()))
