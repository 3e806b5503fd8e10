"""The integration tests' clients: a missing one fails the test with its Debian package named."""

import os

import pytest
from _clients import PACKAGES, Client


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_a_missing_client_fails_naming_its_debian_package(name, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: nothing is installed
    with pytest.raises(pytest.fail.Exception, match=f"runs {name}, which is not installed: "
                                                    f"apt-get install {PACKAGES[name]}$"):
        os.fspath(Client(name))


def test_an_installed_client_is_its_path_on_path(monkeypatch, tmp_path):
    fake = tmp_path / "curl"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert os.fspath(Client("curl")) == str(fake)
