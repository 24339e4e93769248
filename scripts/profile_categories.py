#!/usr/bin/env python3
"""Sums `perf script -F comm,tid,ip,sym` call stacks by what the process was doing (scripts/profile-s1.sh).

Each sample goes to the first category whose pattern matches one of its frames (the order below matters: a
SQLite statement run from a TLS stream's task is the statement's). Generic parameters are cut from frame names
first, so a `poll<…TlsStream…>` frame does not count as TLS.
Usage: profile_categories.py server|simulator PERF_SCRIPT_OUTPUT
"""
import collections
import re
import sys

SERVER = [
    ("device signature checks", r"verify_mdm_signature|Orchard>::verify_signature"),
    ("TLS handshake", r"ExpectClientHello|ExpectFinished|emit_server_hello|tls13::client_hello"),
    ("plist parsing (reports)", r"decode_report|parse_value|parse_result|^plist::|<plist::"),
    ("SQLite (the library)", r"^sqlite3|^walCheckpoint|^pager|^vdbe|^btree"),
    ("database driver and store", r"sqlite_inline|^sqlx|<sqlx|orchard_store::"),
    ("push dispatch (APNs client)", r"orchard_apns|^h2::|<h2::|dispatch_pushes"),
    ("TLS records", r"rustls"),
    ("HTTP (hyper, axum, middleware)", r"hyper::|axum::|tower"),
    ("tokio scheduler and I/O driver", r"^tokio::|<tokio::|^mio::"),
]
SIMULATOR = [
    ("CMS signing (OpenSSL PKCS7_sign)", r"PKCS7_sign|Pkcs7::sign|Pkcs7Ref::to_der|sign_mdm_body"),
    ("TLS handshake", r"ExpectServerHello|ExpectCertificate|ExpectEncryptedExtensions|ExpectFinished|"
                      r"ExpectNewTicket|ClientConnection::new|verify_server_cert|webpki"),
    ("plist", r"^plist::|<plist::"),
    ("local APNs server", r"^h2::|<h2::|apns"),
    ("TLS records", r"rustls"),
    ("HTTP client", r"hyper|reqwest"),
    ("tokio scheduler and I/O driver", r"^tokio::|<tokio::|^mio::"),
]


def strip_generics(name):
    """`a::b<C<D>>::f` → `a::b::f`; a leading `<X as Y>` is kept (its own generics cut)."""
    out, depth = [], 0
    for i, ch in enumerate(name):
        opens_generics = ch == "<" and (depth > 0 or (i > 0 and (name[i - 1].isalnum() or name[i - 1] in "_>")))
        if opens_generics:
            depth += 1
        elif ch == ">" and depth > 0:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def samples(path):
    stack = None
    with open(path, errors="replace") as lines:
        for line in lines:
            if not line.strip():
                if stack:
                    yield stack
                stack = None
            elif not line[0].isspace():
                stack = []
            elif stack is not None:
                parts = line.split(None, 1)
                stack.append(strip_generics(parts[1].strip() if len(parts) > 1 else parts[0]))
    if stack:
        yield stack


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("server", "simulator"):
        sys.exit(__doc__)
    categories = [(name, re.compile(rx)) for name, rx in (SERVER if sys.argv[1] == "server" else SIMULATOR)]
    counts, total = collections.Counter(), 0
    for stack in samples(sys.argv[2]):
        total += 1
        for name, rx in categories:
            if any(rx.search(frame) for frame in stack):
                counts[name] += 1
                break
        else:
            counts["other"] += 1
    if total == 0:
        sys.exit("no samples")
    print(f"{total} samples")
    for name, n in counts.most_common():
        print(f"{100 * n / total:6.1f} %  {name}")


if __name__ == "__main__":
    main()
