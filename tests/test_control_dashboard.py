"""The dashboard in a real browser (headless Chromium): every view loads, mail arrives live, a fault added
through the form fires on the next connection and shows inline in that connection's conversation."""

import smtplib

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from _browser import chromium, click, wait
from _control import Api, start, stop

VIEWS = {"overview": "Overview", "mail": "Mail", "http": "HTTP", "dns": "DNS", "ftp": "FTP",
         "connections": "Connections", "faults": "Faults"}


@pytest.fixture(scope="module")
def bed():
    bed = start({"users": {"alice@example.test": "pw-alice-9"},
                 "servers": {"pop3": {"enabled": False}, "imap": {"enabled": False}}})
    yield bed
    stop(bed)


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture
def page(bed, browser):
    Api(bed.control.url + "/api/v1").post("/reset")
    browser.get(bed.control.url + "/#overview")
    wait(browser, lambda d: d.find_element(By.ID, "live").text == "live")
    return browser


def heading(driver):
    return driver.find_element(By.CSS_SELECTOR, "#view h2").text


def open_view(driver, view):
    click(driver, f'#nav a[data-view="{view}"]')
    wait(driver, lambda d: heading(d) == VIEWS[view])


def send(bed, subject, to="alice@example.test"):
    smtp = bed["smtp"]
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.sendmail("app@example.test", [to], f"Subject: {subject}\r\nFrom: app@example.test\r\n\r\nbody\r\n")


def test_every_view_loads(page):
    for view in VIEWS:
        open_view(page, view)
        assert not page.find_elements(By.CSS_SELECTOR, "#view .error:not(:empty)"), view
    open_view(page, "overview")
    assert "smtp" in page.find_element(By.ID, "view").text


def test_a_message_sent_over_smtp_appears_in_the_inbox_without_a_reload(bed, page):
    open_view(page, "mail")
    page.execute_script("window.sameDocument = true")
    send(bed, "live delivery")
    click(page, "#inbox tr[data-uid]", "live delivery")
    assert page.execute_script("return window.sameDocument") is True
    wait(page, lambda d: "live delivery" in d.find_element(By.ID, "mail-reader").text)
    assert "pw-alice-9" not in page.page_source


def test_a_fault_added_through_the_form_fires_and_shows_inline_in_its_connection(bed, page):
    open_view(page, "faults")
    Select(page.find_element(By.NAME, "server")).select_by_value("smtp")
    Select(page.find_element(By.NAME, "on")).select_by_value("RCPT")
    Select(page.find_element(By.NAME, "action")).select_by_value("reply")
    page.find_element(By.NAME, "param:code").send_keys("451")
    page.find_element(By.NAME, "times").send_keys("1")
    page.find_element(By.ID, "fault-add").click()
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-rule="runtime:1"]'))

    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(bed, "refused")
    assert refused.value.recipients["alice@example.test"][0] == 451
    wait(page, lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-rule="runtime:1"] .fired').text == "1")

    open_view(page, "connections")
    click(page, 'tr[data-conn="smtp/1"]')
    wait(page, lambda d: "reply at RCPT by rule runtime:1" in
         d.find_element(By.CSS_SELECTOR, "#conversation tr.event-fault.fault-fired").text)
