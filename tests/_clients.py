"""The real clients the integration tests drive (curl, swaks, dig, lftp), found on PATH when a test runs one.

A missing client fails the test that needs it with its Debian package named, never a skip.
"""

import os
import shutil

import pytest

#: Each client and the Debian package that ships it; .ci/run installs them all.
PACKAGES = {"curl": "curl", "swaks": "swaks", "dig": "bind9-dnsutils", "lftp": "lftp"}


class Client(os.PathLike):
    """A client's executable, looked up when a command line uses it: ``subprocess.run([CURL, ...])``."""

    def __init__(self, name: str):
        self.name = name

    def __fspath__(self) -> str:
        path = shutil.which(self.name)
        if path is None:
            pytest.fail(f"this test runs {self.name}, which is not installed: "
                        f"apt-get install {PACKAGES[self.name]}", pytrace=False)
        return path

    def __repr__(self) -> str:
        return f"Client({self.name!r})"


CURL = Client("curl")
SWAKS = Client("swaks")
DIG = Client("dig")
LFTP = Client("lftp")
