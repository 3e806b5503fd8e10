"""Headless Chromium through selenium for the dashboard tests and docs/screenshots.py."""

import shutil

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait


def chromium(width=1280, height=860):
    binary = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        raise AssertionError("chromium and chromedriver are missing: install the Debian packages chromium and "
                             "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def wait(driver, condition, timeout=10):
    """Until ``condition(driver)`` is truthy (selenium polls it); its value.

    The dashboard redraws live, so an element found a moment ago may be gone: that is one more try.
    """
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def click(driver, css, text="", timeout=10):
    """Click the first element matching ``css`` (and containing ``text``) once it is there."""

    def attempt(d):
        for element in d.find_elements(By.CSS_SELECTOR, css):
            if text in element.text:
                element.click()
                return True
        return False

    return wait(driver, attempt, timeout)
