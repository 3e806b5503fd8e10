"""Regression tests for the IMAP defects the fuzz campaign found (issue 9): SEARCH, mailbox names, literal sizes.

Bad input gets BAD or NO and a journal entry; nothing is logged as an unhandled error.
"""

from __future__ import annotations

import pytest

from testbed.journal import ERROR
from testbed.mail.store import MailStore
from testbed.servers.imap.store import MAX_SEARCH_NESTING

from _logs import describe, errors_logged
from test_imap import RAW, Session

USER = "alice@example.test"


@pytest.fixture
def session():
    store = MailStore(users={USER: "secret"})
    store.deliver(USER, RAW)
    return Session(store).login()


def test_deeply_nested_search_keys_get_bad_and_nothing_is_logged(session):
    with errors_logged() as logged:
        reply = session(b"a SEARCH " + b"NOT " * 5000 + b"ALL")
        nested = session(b"b SEARCH " + b"(" * 500 + b"ALL" + b")" * 500)
    assert reply == b"a BAD search keys nested deeper than %d\r\n" % MAX_SEARCH_NESTING
    assert nested == b"b BAD search keys nested deeper than %d\r\n" % MAX_SEARCH_NESTING
    assert [describe(e) for e in logged] == []
    # Nesting within the bound still works.
    assert session(b"c SEARCH " + b"NOT " * 10 + b"ALL") == b"* SEARCH 1\r\nc OK SEARCH completed\r\n"


@pytest.mark.parametrize("keys", [b"NIL", b"FROM NIL", b"NOT NIL", b"(NIL)", b"LARGER NIL"])
def test_nil_search_keys_get_bad_and_nothing_is_logged(session, keys):
    with errors_logged() as logged:
        reply = session(b"a SEARCH " + keys)
    assert reply.startswith(b"a BAD ") and b"NIL" in reply
    assert [describe(e) for e in logged] == []


@pytest.mark.parametrize("command", [b"SELECT &ZZZ-", b"CREATE &\xff-", b"SELECT \xff\xfe", b"RENAME INBOX &ZZZ-",
                                     b"STATUS &ZZZ- (MESSAGES)", b"LIST \"\" &ZZZ-"])
def test_an_undecodable_mailbox_name_gets_no_and_a_journal_entry_not_a_traceback(session, command):
    with errors_logged() as logged:
        reply = session(b"a " + command)
    assert reply.startswith(b"a NO Illegal mailbox name: ")
    assert [describe(e) for e in logged] == []
    [entry] = session.journal.query(ERROR, error="undecodable mailbox name")
    assert entry["command"] == command.split()[0].decode()


@pytest.mark.parametrize("literal", [b"{-1}", b"{1_0}", b"{+5}", b"{ 5}", b"{0x5}", b"{\xd9\xa1}"])
def test_a_malformed_literal_size_gets_bad(session, literal):
    assert session(b"a SELECT " + literal) .startswith(b"a BAD Illegal syntax: Invalid literal size: ")
    assert session(b"b NOOP") == b"b OK NOOP No operation performed\r\n"


def test_append_with_a_negative_literal_does_not_swallow_the_next_command(session):
    assert session(b"a APPEND INBOX {-5}") .startswith(b"a BAD Illegal syntax: Invalid literal size: ")
    assert session(b"b NOOP") == b"b OK NOOP No operation performed\r\n"
    assert session.journal.query(ERROR, error="invalid literal size")
