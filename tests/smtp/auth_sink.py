"""An SMTP server for tests/credentials_e2e.rs that requires STARTTLS and AUTH (aiosmtpd's command line cannot
ask for AUTH). Keeps every message in a Maildir. Run with Debian's python3 (python3-aiosmtpd):

    /usr/bin/python3 tests/smtp/auth_sink.py PORT MAILDIR CERT KEY USER PASSWORD

Prints "ready" once it accepts connections, then serves until killed.
"""

import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    port, maildir, cert, key, user, password = sys.argv[1:7]

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        Mailbox(maildir),
        hostname="127.0.0.1",
        port=int(port),
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
