"""One mail identity: SMTP AUTH, POP3, IMAP and FTP give the same, documented answer for every spelling of a login.

The rule is in testbed/mail/credentials.py; SPELLINGS drives both the wire tests (standard library clients
against running servers) and the unit tests of the checker.
"""

from __future__ import annotations

import ftplib
import hashlib
import hmac
import imaplib
import poplib
import smtplib

import pytest
from twisted.cred.credentials import CramMD5Credentials, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.mail import pop3
from twisted.python.failure import Failure

from testbed.mail.credentials import APOPCredentials, MailChecker, login_user
from testbed.mail.store import InvalidNameError, MailStore

USERS = {"Alice@Example.test": "secret"}

#: (what the spelling is, user name, password, accepted by the documented rule)
SPELLINGS = [
    ("exact", "Alice@Example.test", "secret", True),
    ("lower-cased", "alice@example.test", "secret", True),
    ("upper-cased domain", "Alice@EXAMPLE.TEST", "secret", True),
    ("upper-cased local part", "ALICE@Example.test", "secret", True),
    ("bare local part", "Alice", "secret", False),
    ("surrounding spaces", "  Alice@Example.test ", "secret", True),
    ("wrong password", "Alice@Example.test", "Secret", False),
    ("unknown user", "bob@Example.test", "secret", False),
]
SPELLING_PARAMS = pytest.mark.parametrize(("user", "password", "accepted"),
                                          [pytest.param(*spelling[1:], id=spelling[0]) for spelling in SPELLINGS])


@pytest.fixture
def testbed_scenario():
    return {"servers": {"http": {"enabled": False}, "dns": {"enabled": False}}, "users": USERS}


# -- the standard library's clients: True when logged in, False when refused as a bad login --------------------------


def smtp_auth(mechanism: str):
    def login(server, user: str, password: str) -> bool:
        with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.user, smtp.password = user, password  # what smtplib's auth objects read
            authobject = {"PLAIN": smtp.auth_plain, "LOGIN": smtp.auth_login, "CRAM-MD5": smtp.auth_cram_md5}
            try:
                smtp.auth(mechanism, authobject[mechanism])
            except smtplib.SMTPAuthenticationError as e:
                assert e.smtp_code == 535, e  # refused as credentials, not as a malformed exchange
                return False
            return True

    return login


def pop3_login(apop: bool):
    def login(server, user: str, password: str) -> bool:
        pop = poplib.POP3(server.host, server.port, timeout=10)
        try:
            if apop:
                pop.apop(user, password)
            else:
                pop.user(user)
                pop.pass_(password)
        except poplib.error_proto as e:
            assert e.args[0].startswith(b"-ERR [AUTH]"), e
            pop.quit()
            return False
        pop.quit()  # gives the maildrop lock back before the next login
        return True

    return login


def imap_login(cram_md5: bool):
    def login(server, user: str, password: str) -> bool:
        imap = imaplib.IMAP4(server.host, server.port, timeout=10)
        try:
            if cram_md5:
                imap.login_cram_md5(user, password)
            else:
                imap.login(user, password)
        except imaplib.IMAP4.error as e:
            text = e.args[0].decode() if isinstance(e.args[0], bytes) else e.args[0]
            assert "[AUTHENTICATIONFAILED]" in text, e
            imap.logout()
            return False
        imap.logout()
        return True

    return login


def ftp_login(server, user: str, password: str) -> bool:
    with ftplib.FTP() as ftp:
        ftp.connect(server.host, server.port, timeout=10)
        try:
            ftp.login(user, password)
        except ftplib.error_perm as e:
            assert str(e).startswith("530 "), e
            return False
        return True


#: client -> (server, login). The digest mechanisms check the same rule through IUsernameHashedPassword.
CLIENTS = {
    "smtplib AUTH PLAIN": ("smtp", smtp_auth("PLAIN")),
    "smtplib AUTH LOGIN": ("smtp", smtp_auth("LOGIN")),
    "smtplib AUTH CRAM-MD5": ("smtp", smtp_auth("CRAM-MD5")),
    "poplib USER/PASS": ("pop3", pop3_login(apop=False)),
    "poplib APOP": ("pop3", pop3_login(apop=True)),
    "imaplib LOGIN": ("imap", imap_login(cram_md5=False)),
    "imaplib AUTHENTICATE CRAM-MD5": ("imap", imap_login(cram_md5=True)),
    "ftplib USER/PASS": ("ftp", ftp_login),
}


@pytest.fixture
def servers(smtp_server, pop3_server, imap_server, ftp_server):
    return {"smtp": smtp_server, "pop3": pop3_server, "imap": imap_server, "ftp": ftp_server}


def answers(servers, user: str, password: str) -> dict[str, bool]:
    return {client: login(servers[server], user, password) for client, (server, login) in CLIENTS.items()}


@SPELLING_PARAMS
def test_every_server_and_mechanism_gives_the_documented_answer(servers, user, password, accepted):
    assert answers(servers, user, password) == dict.fromkeys(CLIENTS, accepted)


def test_a_user_added_at_runtime_logs_in_everywhere_and_a_reset_forgets_it(testbed, servers):
    testbed.call(testbed.mail.add_user, "Carol@Example.test", "c4r0l")
    assert answers(servers, "carol@example.TEST", "c4r0l") == dict.fromkeys(CLIENTS, True)
    testbed.reset()
    assert answers(servers, "carol@example.test", "c4r0l") == dict.fromkeys(CLIENTS, False)


def test_every_server_knows_the_user_by_the_user_key_and_journals_no_password(testbed, servers):
    name = " ALICE@example.TEST"
    with smtplib.SMTP(servers["smtp"].host, servers["smtp"].port, timeout=10) as smtp:
        smtp.login(name, "secret")
        smtp.sendmail("sender@example.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhi\r\n")
    for client in ("poplib USER/PASS", "imaplib LOGIN", "ftplib USER/PASS"):
        server, login = CLIENTS[client]
        assert login(servers[server], name, "secret")
    assert [m.auth_user for m in servers["smtp"].wait_for(1)] == ["alice@example.test"]
    assert [s.user for s in servers["pop3"].sessions] == ["alice@example.test"]
    assert [e["user"] for e in servers["imap"].logins] == ["alice@example.test"]
    assert {e["user"] for e in testbed.journal.query("command", server="ftp") if "user" in e} == {"alice@example.test"}
    # Commands and replies hide passwords (the raw wire capture, "data" events, holds what was sent).
    assert "secret" not in repr(testbed.journal.query(["command", "reply"]))


# -- the checker itself ---------------------------------------------------------------------------------------------


def check(checker: MailChecker, credentials):
    """The avatar ID, or the Failure (the checker answers at once)."""
    results = []
    checker.requestAvatarId(credentials).addBoth(results.append)
    (result,) = results
    return result


def accepted_as(result) -> str | None:
    if isinstance(result, Failure):
        assert result.check(UnauthorizedLogin)
        return None
    return result


@pytest.fixture
def store():
    return MailStore(users=USERS)


@SPELLING_PARAMS
@pytest.mark.parametrize("encode", [str.encode, str], ids=["bytes", "str"])
def test_checker_follows_the_rule_for_names_as_bytes_and_text(store, user, password, accepted, encode):
    result = check(MailChecker(store), UsernamePassword(encode(user), encode(password)))
    assert accepted_as(result) == ("alice@example.test" if accepted else None)


@SPELLING_PARAMS
def test_checker_follows_the_rule_for_cram_md5_and_apop_digests(store, user, password, accepted):
    cram = CramMD5Credentials(b"testbed.test")
    challenge = cram.getChallenge()
    cram.setResponse(user.encode() + b" " + hmac.new(password.encode(), challenge, hashlib.md5).hexdigest().encode())
    magic = b"<1.2@testbed.test>"
    apop = APOPCredentials(magic, user.encode(), hashlib.md5(magic + password.encode()).hexdigest().encode())
    expected = "alice@example.test" if accepted else None
    assert accepted_as(check(MailChecker(store), cram)) == expected
    assert accepted_as(check(MailChecker(store), apop)) == expected


def test_apop_credentials_fix_twisteds_never_matching_check():
    magic, digest = b"<1.2@testbed.test>", hashlib.md5(b"<1.2@testbed.test>secret").hexdigest().encode()
    assert not pop3.APOPCredentials(magic, b"alice", digest).checkPassword(b"secret")
    assert APOPCredentials(magic, b"alice", digest).checkPassword(b"secret")
    assert APOPCredentials(magic, b"alice", digest.upper()).checkPassword(b"secret")  # hex digits in either case
    assert not APOPCredentials(magic, b"alice", digest).checkPassword(b"Secret")


@pytest.mark.parametrize(("name", "key"), [
    ("Alice@Example.test", "alice@example.test"),
    (b"ALICE@EXAMPLE.TEST", "alice@example.test"),
    ("\t alice@example.test \t", "alice@example.test"),
    ("Postmaster", "postmaster"),  # a bare name stays bare: never completed with a domain
    ("J\u00f6rg@Example.test".encode(), "j\u00f6rg@example.test"),
])
def test_login_user_gives_the_user_key(name, key):
    assert login_user(name) == key


@pytest.mark.parametrize("name", ["", "  ", "\t", "alice@example.test\r\n", "../alice", ".alice", "a/b", b"\xff\xfe",
                                  None])
def test_login_user_refuses_names_no_user_can_have(name):
    with pytest.raises(InvalidNameError):
        login_user(name)


def test_a_bare_name_is_a_user_of_its_own():
    store = MailStore(users={"postmaster": "pm", "alice@example.test": "secret"})
    checker = MailChecker(store)
    assert check(checker, UsernamePassword(b" POSTMASTER", b"pm")) == "postmaster"
    assert accepted_as(check(checker, UsernamePassword(b"postmaster@example.test", b"pm"))) is None
    assert accepted_as(check(checker, UsernamePassword(b"alice", b"secret"))) is None


def test_users_without_a_password_never_log_in(store):
    store.resolve_recipient("dave@example.test")  # delivery creates a mailbox, not a login
    checker = MailChecker(store)
    for password in (b"", b"None"):
        assert accepted_as(check(checker, UsernamePassword(b"dave@example.test", password))) is None


def test_passwords_compare_exactly(store):
    store.add_user("carol@example.test", " two  words ")
    checker = MailChecker(store)
    assert check(checker, UsernamePassword(b"carol@example.test", b" two  words ")) == "carol@example.test"
    for wrong in (b"two  words", b"two words", b" TWO  WORDS ", b"\xff"):
        assert accepted_as(check(checker, UsernamePassword(b"carol@example.test", wrong))) is None


def test_the_checker_reads_the_store_at_every_login(store):
    checker = MailChecker(store)
    assert accepted_as(check(checker, UsernamePassword(b"carol@example.test", b"pw"))) is None
    store.add_user("carol@example.test", "pw")
    assert check(checker, UsernamePassword(b"carol@example.test", b"pw")) == "carol@example.test"
    store.reset()
    assert accepted_as(check(checker, UsernamePassword(b"carol@example.test", b"pw"))) is None


def test_a_refusal_names_neither_user_nor_password(store):
    result = check(MailChecker(store), UsernamePassword(b"alice@example.test", b"hunter2"))
    assert isinstance(result, Failure) and result.check(UnauthorizedLogin)
    assert "alice" not in str(result.value) and "hunter2" not in str(result.value)
