"""Who may log in: the one cred checker behind SMTP AUTH, POP3, IMAP and FTP logins, over the mail store's users.
Every server asks `MailChecker`, so a user name and password get the same answer everywhere, by the rule below.

The user-name rule. A login name names the user whose configured address it
equals after these steps, and no others:

1. Leading and trailing spaces and tabs are dropped: " alice@example.test " is
   alice@example.test.
2. The whole address is case-insensitive, the local part as well as the domain:
   ALICE@example.test, alice@EXAMPLE.TEST and Alice@Example.Test are one user,
   known by the lower-cased address (`normalize_user`, also the store's key).
3. A name without "@" is a whole user name, never an abbreviation: "alice"
   names only a user configured as "alice", not alice@example.test, even when
   she is the only alice (so whether a login works never depends on who else
   is configured).

Anything else is refused, exactly like a wrong password: an unknown name; a
name no user can have (empty, longer than 255 bytes, with "/", "\\", "..", a
leading ".", NUL, CR or LF, or bytes that are not UTF-8); a user without a
password (one created by mail to an unknown recipient, or found in a maildir).
Passwords are compared exactly, case and spaces included; CRAM-MD5 and APOP
digests are recomputed from the configured cleartext. The checker keeps no
password and never logs or journals one: it reads the store's, which come from
the scenario or `MailStore.add_user`. Anonymous FTP is not a user and does not
come here.
"""

from __future__ import annotations

import hmac
from hashlib import md5

from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.internet import defer
from zope.interface import implementer

from testbed.mail.store import InvalidNameError, MailStore, normalize_user

__all__ = ["APOPCredentials", "MailChecker", "login_user"]

#: What rule 1 drops around a login name.
_BLANKS = " \t"


def login_user(name: str | bytes) -> str:
    """The user key login ``name`` stands for by the rule above; `InvalidNameError` (a ValueError) if none.

    Whether that user exists and has a password is the store's business: `MailChecker` asks it.
    """
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidNameError(f"user name is not UTF-8: {name!r}") from None
    if isinstance(name, str):
        name = name.strip(_BLANKS)
    return normalize_user(name)  # refuses whatever the store cannot hold, str or not


@implementer(ICredentialsChecker)
class MailChecker:
    """Checks a user name and password (or CRAM-MD5/APOP digest) against the users of a `MailStore`.

    Reads the store at every login, so users added or reset at runtime count at once. The
    avatar ID is the user key (`login_user`); a refusal is an ``UnauthorizedLogin`` that names
    neither the user nor the password.
    """

    credentialInterfaces = (IUsernamePassword, IUsernameHashedPassword)

    def __init__(self, store: MailStore) -> None:
        self.store = store

    def requestAvatarId(self, credentials):
        try:
            user = login_user(credentials.username)
            accepted = self._password_matches(user, credentials)
        except ValueError:  # an unusable name, or a password that is not UTF-8
            accepted = False
        return defer.succeed(user) if accepted else defer.fail(error.UnauthorizedLogin())

    def _password_matches(self, user: str, credentials) -> bool:
        if IUsernamePassword.providedBy(credentials):
            password = credentials.password
            if isinstance(password, bytes):
                password = password.decode("utf-8")  # not UTF-8: a ValueError, refused
            return self.store.check_password(user, password)
        # A digest (CRAM-MD5, APOP) can only be checked by recomputing it from the cleartext.
        password = self.store.password(user)
        return password is not None and bool(credentials.checkPassword(password.encode("utf-8")))


@implementer(IUsernameHashedPassword)
class APOPCredentials:
    """POP3 APOP credentials (RFC 1939) whose check works: Twisted's compares a str digest with bytes.

    Not a subclass of ``twisted.mail.pop3.APOPCredentials``: importing that module installs a reactor.
    """

    def __init__(self, magic: bytes, username: bytes, digest: bytes):
        self.magic = magic
        self.username = username
        self.digest = digest

    def checkPassword(self, password: bytes) -> bool:
        expected = md5(self.magic + password).hexdigest().encode("ascii")
        return hmac.compare_digest(expected, bytes(self.digest).lower())
