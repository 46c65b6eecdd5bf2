"""The TLS certificate the metrics endpoint serves: ``tls.crt``/``tls.key`` from a directory (the
Secret OpenShift's service-ca operator writes and rotates), reloaded when the files change; or,
for a secure endpoint run without one, a self-signed certificate made at start.

A change is noticed at the next connection (two ``stat`` calls, no thread): Kubernetes swaps a
mounted Secret's files in one rename, and a pair that does not load (caught mid-write) leaves the
previous certificate in service until the next connection tries again.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

CERT_FILE, KEY_FILE = "tls.crt", "tls.key"
SELF_SIGNED_DAYS = 365
_NO_GENERATOR = ("without --metrics-cert-dir a self-signed certificate is made, which needs the 'cryptography' "
                 "package or the openssl binary (neither is installed): pass --metrics-cert-dir")


class ServingCertError(ValueError):
    """A certificate that cannot be served; the message is one line naming the file or the fix."""


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # controller-runtime's floor for its metrics server
    context.set_alpn_protocols(["http/1.1"])  # HTTP/2 is off, as in controller-runtime (CVE-2023-44487)
    context.load_cert_chain(str(cert), str(key))
    return context


def _signature(*paths: Path) -> tuple[tuple[int, int, int], ...] | None:
    try:
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in (p.stat() for p in paths))
    except OSError:
        return None


class ServingCert:
    """An SSLContext for ``cert``/``key``, rebuilt when either file changes."""

    def __init__(self, cert: Path, key: Path, *, keep_dir: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.cert, self.key = cert, key
        self._keep_dir = keep_dir  # a self-signed pair's directory lives as long as this object
        self._lock = threading.Lock()
        self._signature = _signature(cert, key)
        try:
            self._context = _context(cert, key)
        except (OSError, ssl.SSLError) as err:
            raise ServingCertError(f"cannot load {cert} and {key}: {_reason(err)}") from None
        self.loads = 1

    @classmethod
    def from_dir(cls, directory: str | Path) -> ServingCert:
        path = Path(directory)
        if not path.is_dir():
            raise ServingCertError(f"{path} is not a directory (expected one holding {CERT_FILE} and {KEY_FILE})")
        for name in (CERT_FILE, KEY_FILE):
            if not (path / name).is_file():
                raise ServingCertError(f"{path / name} does not exist")
        return cls(path / CERT_FILE, path / KEY_FILE)

    @classmethod
    def self_signed(cls, hosts: list[str] | None = None) -> ServingCert:
        """A certificate for this host made now: with the ``cryptography`` package, else the ``openssl``
        binary; neither: ServingCertError telling to pass --metrics-cert-dir."""
        names = hosts or default_hosts()
        keep = tempfile.TemporaryDirectory(prefix="kmm-dtk-metrics-cert-")
        directory = Path(keep.name)
        try:
            try:
                write_self_signed_cryptography(directory, names)
            except ImportError:
                write_self_signed_openssl(directory, names)
        except BaseException:
            keep.cleanup()
            raise
        log.info("serving metrics with a self-signed certificate", extra={"hosts": names})
        return cls(directory / CERT_FILE, directory / KEY_FILE, keep_dir=keep)

    def context(self) -> ssl.SSLContext:
        """The current context, reloaded first when the files changed since the last load."""
        signature = _signature(self.cert, self.key)
        with self._lock:
            if signature is None or signature == self._signature:
                return self._context
            try:
                self._context = _context(self.cert, self.key)
            except (OSError, ssl.SSLError) as err:
                log.warning("serving certificate changed but does not load; keeping the previous one",
                            extra={"cert": str(self.cert), "error": _reason(err)})
                return self._context
            self._signature = signature
            self.loads += 1
            log.info("serving certificate reloaded", extra={"cert": str(self.cert)})
            return self._context


def check_self_signing() -> None:
    """ServingCertError unless ``self_signed`` has a way to make a certificate here."""
    try:
        import cryptography  # noqa: F401 - only whether it is installed
    except ImportError:
        if shutil.which("openssl") is None:
            raise ServingCertError(_NO_GENERATOR) from None


def _reason(err: BaseException) -> str:
    return " ".join(str(getattr(err, "strerror", None) or err).split())


def default_hosts() -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    hostname = socket.gethostname()
    return [hostname, *names] if hostname and hostname not in names else names


def _is_ip(name: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
    except OSError:
        return False
    return True


def write_self_signed_cryptography(directory: Path, hosts: list[str]) -> None:
    """tls.crt/tls.key in ``directory``: a P-256 key, valid for SELF_SIGNED_DAYS, for ``hosts``."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    _write(directory / KEY_FILE, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    _write(directory / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))


def write_self_signed_openssl(directory: Path, hosts: list[str], binary: str = "openssl") -> None:
    """The same with the openssl command; ServingCertError when there is none or it fails."""
    found = shutil.which(binary)
    if found is None:
        raise ServingCertError(_NO_GENERATOR)
    alt = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    result = subprocess.run(
        [found, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(directory / KEY_FILE), "-out", str(directory / CERT_FILE), "-days", str(SELF_SIGNED_DAYS),
         "-subj", f"/CN={hosts[0]}", "-addext", f"subjectAltName={alt}"],
        capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        detail = " ".join(result.stderr.split())[:300]
        raise ServingCertError(f"openssl could not make a self-signed certificate ({detail}): pass --metrics-cert-dir")
    os.chmod(directory / KEY_FILE, 0o600)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
