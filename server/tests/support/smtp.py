"""A real SMTP server for the mail tests: aiosmtpd, storing every message in a Maildir.

It binds 127.0.0.1 port 0 itself and prints the port it got, so no other process can take the
port between choosing it and listening on it (a test that picked a free port first could hand
the same port to two servers running side by side, and read the wrong mailbox).

Usage: python3 smtp.py MAILDIR
"""

import asyncio
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP


async def main(maildir: str) -> None:
    handler = Mailbox(maildir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler), host="127.0.0.1", port=0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
