"""TLS material: the throwaway CA, a server certificate Python's ssl and curl accept, and the bad kinds."""

import datetime
import ssl

import pytest
from cryptography import x509

from testbed.tls import KINDS, CertificateAuthority, ServerTLS


@pytest.fixture(scope="module")
def tls():
    return ServerTLS()


def san_of(cert):
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_the_server_certificate_names_localhost_and_both_loopback_addresses(tls):
    (cert,), _ = tls.chain("valid")
    san = san_of(cert)
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert cert.issuer == tls.ca.cert.subject


def test_the_ca_file_loads_into_python_ssl(tls):
    context = ssl.create_default_context(cafile=tls.ca_path)
    assert any("twisted-testbed" in str(c["subject"]) for c in context.get_ca_certs())


@pytest.mark.parametrize("kind", ["expired", "not_yet_valid"])
def test_bad_validity_windows(tls, kind):
    (cert,), _ = tls.chain(kind)
    now = datetime.datetime.now(datetime.timezone.utc)
    if kind == "expired":
        assert cert.not_valid_after_utc < now
    else:
        assert cert.not_valid_before_utc > now


def test_wrong_host_self_signed_and_untrusted_ca(tls):
    (wrong,), _ = tls.chain("wrong_host")
    assert san_of(wrong).get_values_for_type(x509.DNSName) == ["wrong-host.invalid"]
    (own,), _ = tls.chain("self_signed")
    assert own.issuer == own.subject
    (stranger,), _ = tls.chain("untrusted_ca")
    assert stranger.issuer != tls.ca.cert.subject


def test_every_kind_builds_a_context(tls):
    for kind in KINDS:
        assert tls.options(kind).getContext() is not None
    with pytest.raises(ValueError, match="unknown certificate kind 'bogus'"):
        tls.options("bogus")


def test_a_ca_loaded_from_files_signs_the_server_certificate(tmp_path):
    ca = CertificateAuthority.generate("loaded CA")
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "ca.key").write_bytes(ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    loaded = CertificateAuthority.load(str(tmp_path / "ca.pem"), str(tmp_path / "ca.key"))
    (cert,), _ = ServerTLS(loaded).chain()
    assert cert.issuer == ca.cert.subject


def test_a_scenario_can_bring_its_own_ca_and_servers_present_chains_it_signed(tmp_path):
    from cryptography.hazmat.primitives import serialization

    from testbed.harness import Testbed

    ca = CertificateAuthority.generate("company test CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "ca.key").write_bytes(ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    scenario = tmp_path / "s.toml"
    scenario.write_text('[tls]\nca_cert = "ca.pem"\nca_key = "ca.key"\nhostnames = ["testbed.internal"]\n')
    bed = Testbed(str(scenario))
    (cert,), _ = bed.tls.chain()
    assert cert.issuer == ca.cert.subject
    assert san_of(cert).get_values_for_type(x509.DNSName) == ["testbed.internal"]
    assert open(bed.ca_path, "rb").read() == ca.cert_pem
