"""Screenshots of the dashboard's main views, into docs/screenshots/: rerun after changing the dashboard.

python docs/screenshots.py    (needs chromium, chromium-driver and selenium, as the browser tests do)
It starts a testbed with the control API on a free loopback port, sends it some traffic (mail with an
attachment, HTTP requests, DNS queries, an FTP upload, a fault that fires) and photographs each view.
"""

import ftplib
import io
import os
import smtplib
import sys
import urllib.request
from email.message import EmailMessage

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

from _browser import chromium, click, wait  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from testbed import control, runtime  # noqa: E402
from testbed.harness import Testbed  # noqa: E402

VIEWS = ("overview", "mail", "http", "dns", "connections", "faults", "ftp")


def traffic(bed):
    bed.call(bed.faults.add, server="smtp", on="RCPT", action="reply", code=451, times=1, name="greylist once")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "shop@example.test", "alice@example.test", "Your order #1042"
    message.set_content("Thanks for your order.\nIt ships tomorrow.")
    message.add_alternative("<h1>Thanks for your order</h1><p>It ships <b>tomorrow</b>.</p>", subtype="html")
    message.add_attachment(b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="invoice.pdf")
    smtp = bed["smtp"]
    for attempt in range(2):
        try:
            with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
                client.send_message(message)
        except smtplib.SMTPRecipientsRefused:
            pass
    for path in ("/api/users", "/health", "/api/orders?id=1042"):
        try:
            urllib.request.urlopen(bed["http"].url + path, timeout=5).close()
        except urllib.error.HTTPError:
            pass
    import dns.message
    import dns.query

    for name in ("www.example.test", "missing.example.test"):
        dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=bed["dns"].port, timeout=5)
    ftp = ftplib.FTP()
    ftp.connect(bed["ftp"].host, bed["ftp"].port, timeout=10)
    ftp.login("alice@example.test", "secret")
    ftp.storbinary("STOR report.csv", io.BytesIO(b"id,total\n1042,99.50\n"))
    ftp.quit()


def main():
    from twisted.internet import reactor

    runtime.start_reactor_thread(reactor)
    bed = Testbed({"users": {"alice@example.test": "secret"},
                   "servers": {"http": {"routes": [{"path": "/api/users", "json": {"users": []}}]},
                               "dns": {"records": {"www.example.test": {"A": "127.0.0.1"}}}}}, reactor=reactor)
    control.attach(bed, "tcp:0:interface=127.0.0.1")
    runtime.call(reactor, bed.start)
    traffic(bed)
    driver = chromium(1280, 800)
    try:
        for view in VIEWS:
            driver.get(f"{bed.control.url}/#{view}")
            wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#view h2"))
            if view == "mail":
                click(driver, "#inbox tr[data-uid]")
                wait(driver, lambda d: d.find_elements(By.ID, "mail-html"))
            if view == "connections":
                click(driver, 'tr[data-conn="smtp/1"]')
                fault = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#conversation tr.event-fault"))[0]
                driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", fault)
            path = os.path.join(HERE, "screenshots", f"{view}.png")
            driver.save_screenshot(path)
            print(path)
    finally:
        driver.quit()
        runtime.call(reactor, bed.stop)


if __name__ == "__main__":
    main()
