"""Certificates for a run: a throwaway CA, the servers' certificate, and deliberately bad ones.

The CA is generated per run (or loaded from PEM files) and written to a file
clients can trust; ``options(kind)`` gives a Twisted context factory serving a
valid, expired, not-yet-valid, wrong-host, self-signed or untrusted-CA chain.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
import warnings
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from testbed.registry import CERTIFICATE_KINDS as KINDS

_DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: generated in microseconds, and every client we test with speaks it.
    return ec.generate_private_key(ec.SECP256R1())


def _san(hostnames: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertificateAuthority:
    """A CA that signs server certificates."""

    def __init__(self, cert: x509.Certificate, key):
        self.cert = cert
        self.key = key

    @classmethod
    def generate(cls, name: str = "twisted-testbed throwaway CA") -> "CertificateAuthority":
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY).not_valid_after(now + 3650 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: str, key_path: str) -> "CertificateAuthority":
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return _pem_cert(self.cert)

    def issue(self, hostnames: Sequence[str], not_before: datetime.datetime | None = None,
              not_after: datetime.datetime | None = None) -> tuple[x509.Certificate, object]:
        """A server certificate for ``hostnames`` (DNS names or IP addresses), signed by this CA."""
        key = _key()
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - _DAY)
            .not_valid_after(not_after or now + 825 * _DAY)
            .add_extension(_san(hostnames), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


def _negotiate_alpn_politely(context) -> None:
    """Replace Twisted 26.10's ALPN callback, which answers a client whose offer does not overlap
    (curl offers h2) with b"" and so an OpenSSL internal_error alert, with one that declines.

    The protocols a listener speaks come from ``alpn`` on the factory under TLS (the fault wrapper).
    """
    from OpenSSL import SSL

    def select(connection, offered):
        tls_protocol = connection.get_app_data()
        factory = getattr(getattr(tls_protocol, "factory", None), "wrappedFactory", None)
        for protocol in getattr(factory, "alpn", ()):
            if protocol in offered:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS

    context.set_alpn_select_callback(select)


class ServerTLS:
    """The TLS material of a run: the CA, its file, and context factories by kind."""

    def __init__(self, ca: CertificateAuthority | None = None, hostnames: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
                 directory: str | None = None):
        self.ca = ca or CertificateAuthority.generate()
        self.hostnames = list(hostnames)
        self._directory = directory
        self._ca_path: str | None = None
        self._chains: dict[str, tuple[list[x509.Certificate], object]] = {}
        self._options: dict[tuple[str, tuple[str, ...]], object] = {}

    @property
    def ca_path(self) -> str:
        """A PEM file holding the CA certificate, for clients to trust (written on first use)."""
        if self._ca_path is None:
            directory = self._directory or tempfile.mkdtemp(prefix="testbed-tls-")
            self._ca_path = os.path.join(directory, "testbed-ca.pem")
            self.write_ca(self._ca_path)
        return self._ca_path

    def write_ca(self, path: str) -> str:
        with open(path, "wb") as f:
            f.write(self.ca.cert_pem)
        return path

    def chain(self, kind: str = "valid") -> tuple[list[x509.Certificate], object]:
        """The certificate chain (leaf first) and key served for ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"unknown certificate kind {kind!r}; expected one of {', '.join(KINDS)}")
        if kind not in self._chains:
            now = _now()
            if kind == "valid":
                cert, key = self.ca.issue(self.hostnames)
            elif kind == "expired":
                cert, key = self.ca.issue(self.hostnames, now - 30 * _DAY, now - _DAY)
            elif kind == "not_yet_valid":
                cert, key = self.ca.issue(self.hostnames, now + _DAY, now + 30 * _DAY)
            elif kind == "wrong_host":
                cert, key = self.ca.issue(["wrong-host.invalid"])
            elif kind == "self_signed":
                own = CertificateAuthority.generate(self.hostnames[0])
                cert, key = own.cert, own.key
            else:  # untrusted_ca: a perfectly good chain from a CA nobody trusts
                cert, key = CertificateAuthority.generate("untrusted testbed CA").issue(self.hostnames)
            self._chains[kind] = ([cert], key)
        return self._chains[kind]

    def serving(self, kind: str, versions: Sequence[str] = ()) -> "ServingTLS":
        """This run's TLS material with ``kind`` as the chain a server presents by default, in ``versions``."""
        return ServingTLS(self, kind, tuple(versions))

    def options(self, kind: str = "valid", versions: Sequence[str] = ()):
        """A Twisted ``CertificateOptions`` serving the ``kind`` chain, in ``versions`` only if given (cached).

        Versions older than TLS 1.2 need OpenSSL's security level 0 (their
        handshakes sign with MD5+SHA-1), so such a server also takes any cipher
        OpenSSL has.
        """
        versions = tuple(versions)
        if (kind, versions) not in self._options:
            from OpenSSL import crypto
            from twisted.internet.ssl import CertificateOptions

            (cert, *extra), key = self.chain(kind)
            with warnings.catch_warnings():
                # pyOpenSSL 26 deprecates its X509/PKey wrappers, which Twisted's
                # CertificateOptions still takes; nothing else is silenced here.
                warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"Passing pyOpenSSL")
                options = CertificateOptions(
                    privateKey=crypto.PKey.from_cryptography_key(key),
                    certificate=crypto.X509.from_cryptography(cert),
                    extraCertChain=[crypto.X509.from_cryptography(c) for c in extra] or None,
                    **_version_range(versions),
                )
                context = options.getContext()  # built (and cached) here, where the warning is filtered
            if versions and versions[0] in ("TLSv1", "TLSv1.1"):
                context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
            _negotiate_alpn_politely(context)
            self._options[kind, versions] = options
        return self._options[kind, versions]


def _version_range(versions: Sequence[str]) -> dict:
    """CertificateOptions' arguments for the contiguous range ``versions`` (names as in registry.TLS_VERSIONS)."""
    if not versions:
        return {}
    from twisted.internet.ssl import TLSVersion

    named = {"TLSv1": TLSVersion.TLSv1_0, "TLSv1.1": TLSVersion.TLSv1_1, "TLSv1.2": TLSVersion.TLSv1_2,
             "TLSv1.3": TLSVersion.TLSv1_3}
    order = list(named)
    low, high = min(versions, key=order.index), max(versions, key=order.index)
    # Twisted's floor is TLS 1.2: going below it is "insecurely lowering", above it "raising".
    floor = "insecurelyLowerMinimumTo" if order.index(low) < order.index("TLSv1.2") else "raiseMinimumTo"
    return {floor: named[low], "lowerMaximumSecurityTo": named[high]}


class ServingTLS:
    """One server's view of the run's TLS material: ``options()`` serves its configured chain and versions."""

    def __init__(self, tls: ServerTLS, kind: str, versions: tuple[str, ...] = ()):
        self.tls = tls
        self.kind = kind
        self.versions = versions

    def options(self, kind: str | None = None):
        return self.tls.options(kind or self.kind, self.versions)

    @property
    def ca_path(self) -> str:
        return self.tls.ca_path
