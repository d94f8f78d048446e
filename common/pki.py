"""The deployment's certificates: a CA, node certificates, and the revocation list (CRL).

``veilcam init`` creates an Ed25519 CA. Each node (camera, store, viewer) gets a certificate
issued by it, with an expiry, that binds:
- the node's role and name (subject OU and CN, e.g. OU=camera, CN=door),
- its Ed25519 key (the certificate's subject key; a camera signs frames with it),
- its X25519 transport key, which is its CurveZMQ key (in an extension, below).
Verifiers accept a node only if its certificate chains to the CA, is within its validity
period, is not on the CA-signed CRL, and has the expected role. The same CA key signs grants
(common.grants): it is the deployment's admin key and lives on the admin's machine only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.x509.oid import NameOID
from veilcam.common.errors import IdentityError, VerificationError
from veilcam.common.secretfiles import write_atomic, write_secret

# An OID of our own without registration: the 2.25 arc takes a UUID as an integer (X.667).
# UUID 7b1e4a52-6c1d-4b8e-9f0a-3c2d5e6f7a81 names "veilcam X25519 transport key".
TRANSPORT_KEY_OID = x509.ObjectIdentifier("2.25.163868146404069357858396702917437094529")
ROLES = ("camera", "store", "viewer")
CA_DAYS = 3650
NODE_DAYS = 365


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def save_private_key(path: Path, key: Ed25519PrivateKey | X25519PrivateKey) -> None:
    write_secret(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def load_private_key(path: Path, kind: type):
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise IdentityError(f"key file {path} not found") from None
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"key file {path} is not a readable PEM private key: {exc}") from None
    if not isinstance(key, kind):
        raise IdentityError(f"key file {path} holds the wrong kind of key")
    return key


def save_cert(path: Path, cert: x509.Certificate) -> None:
    write_atomic(path, cert.public_bytes(serialization.Encoding.PEM))


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except FileNotFoundError:
        raise IdentityError(f"certificate {path} not found") from None
    except ValueError as exc:
        raise IdentityError(
            f"certificate {path} is not a readable PEM certificate: {exc}"
        ) from None


def ca_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, in hex: what ``openssl x509 -in ca.crt -outform DER |
    sha256sum`` prints, and what ``veilcam verify`` names as the trust anchor."""
    return cert.fingerprint(hashes.SHA256()).hex()


def create_ca(name: str = "veilcam deployment CA") -> tuple[Ed25519PrivateKey, x509.Certificate]:
    key = Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, None)
    )
    return key, cert


def issue_node_cert(
    ca_key: Ed25519PrivateKey,
    ca_cert: x509.Certificate,
    role: str,
    name: str,
    signing_public: Ed25519PublicKey,
    transport_public: X25519PublicKey,
    days: float = NODE_DAYS,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    start = not_before or (_now() - dt.timedelta(minutes=5))  # tolerate small clock skew
    end = (not_before or _now()) + dt.timedelta(days=days)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(signing_public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(TRANSPORT_KEY_OID, _raw(transport_public)), critical=False
        )
        .sign(ca_key, None)
    )


def build_crl(
    ca_key: Ed25519PrivateKey,
    ca_cert: x509.Certificate,
    revoked_serials: list[int],
    superseded: dict[int, dt.datetime] | None = None,
) -> x509.CertificateRevocationList:
    """The CRL: ``revoked_serials`` are revoked outright (every use refused); ``superseded``
    maps a serial to the time its certificate was replaced by a re-issue (reason
    ``superseded`` with that time as the entry's invalidity date): it stays valid for what it
    signed before then, and for nothing after."""
    now = _now()
    superseded = dict(superseded or {})
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=CA_DAYS))
    )
    for serial in sorted(set(revoked_serials) - set(superseded)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    for serial, at in sorted(superseded.items()):
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(at)
            .add_extension(x509.CRLReason(x509.ReasonFlags.superseded), critical=False)
            .add_extension(
                x509.InvalidityDate(at.astimezone(dt.UTC).replace(tzinfo=None)), critical=False
            )
        )
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca_key, None)


def _superseded_at(entry: x509.RevokedCertificate) -> dt.datetime | None:
    """The invalidity date of a CRL entry whose reason is ``superseded``, else None."""
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        date = entry.extensions.get_extension_for_class(x509.InvalidityDate).value
    except x509.ExtensionNotFound:
        return None
    if reason != x509.ReasonFlags.superseded:
        return None
    return date.invalidity_date_utc


def save_crl(path: Path, crl: x509.CertificateRevocationList) -> None:
    write_atomic(path, crl.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class NodeIdentity:
    """What a verified node certificate says."""

    role: str
    name: str
    serial: int
    signing_key: Ed25519PublicKey
    transport_key: bytes  # raw X25519, the node's CurveZMQ public key
    not_after: dt.datetime
    not_before: dt.datetime | None = None

    @property
    def label(self) -> str:
        return f"{self.role}:{self.name}"


class CertificateAuthority:
    """The CA certificate and its CRL, as verifiers hold them (no private key)."""

    def __init__(
        self, ca_cert: x509.Certificate, crl: x509.CertificateRevocationList | None = None
    ) -> None:
        self.cert = ca_cert
        ca_key = ca_cert.public_key()
        if not isinstance(ca_key, Ed25519PublicKey):
            raise IdentityError("the CA certificate does not hold an Ed25519 key")
        self._ca_key: Ed25519PublicKey = ca_key
        self.revoked: frozenset[int] = frozenset()  # every serial on the CRL
        self.superseded: dict[int, dt.datetime] = {}  # of those, replaced by a re-issue: when
        if crl is not None:
            self.set_crl(crl)

    @classmethod
    def load(cls, ca_path: Path, crl_path: Path | None = None) -> CertificateAuthority:
        ca = cls(load_cert(ca_path))
        if crl_path is not None and Path(crl_path).exists():
            ca.load_crl(crl_path)
        return ca

    def load_crl(self, crl_path: Path) -> None:
        try:
            crl = x509.load_pem_x509_crl(Path(crl_path).read_bytes())
        except ValueError as exc:
            raise IdentityError(f"revocation list {crl_path} is unreadable: {exc}") from None
        self.set_crl(crl)

    def set_crl(self, crl: x509.CertificateRevocationList) -> None:
        if not crl.is_signature_valid(self._ca_key):
            raise IdentityError("the revocation list is not signed by the deployment CA")
        self.revoked = frozenset(r.serial_number for r in crl)
        self.superseded = {
            r.serial_number: at for r in crl if (at := _superseded_at(r)) is not None
        }

    def verify_signed(self, signature: bytes, data: bytes) -> bool:
        try:
            self._ca_key.verify(signature, data)
            return True
        except InvalidSignature:
            return False

    def verify_node(
        self, cert: x509.Certificate, role: str | None = None, at: dt.datetime | None = None
    ) -> NodeIdentity:
        """Chain, validity period, revocation and role; VerificationError says which failed."""
        at = at or _now()
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            raise VerificationError(
                "untrusted_certificate", "certificate is not issued by the deployment CA"
            ) from None
        ident = self.describe(cert)
        if at < cert.not_valid_before_utc:
            raise VerificationError(
                "certificate_not_yet_valid",
                f"certificate of {ident.label} is not valid before "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            )
        if at > cert.not_valid_after_utc:
            raise VerificationError(
                "certificate_expired",
                f"certificate of {ident.label} expired on "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            )
        replaced = self.superseded.get(cert.serial_number)
        if replaced is not None:
            # re-issued: valid up to the re-issue, for what it signed before then
            if at > replaced:
                raise VerificationError(
                    "certificate_revoked",
                    f"certificate of {ident.label} was replaced on "
                    f"{replaced:%Y-%m-%d %H:%M:%S} UTC (re-issued) and is "
                    "not valid after that",
                )
            ident = dataclasses.replace(ident, not_after=min(ident.not_after, replaced))
        elif cert.serial_number in self.revoked:
            raise VerificationError(
                "certificate_revoked", f"certificate of {ident.label} is revoked"
            )
        if role is not None and ident.role != role:
            raise VerificationError(
                "wrong_role", f"certificate of {ident.label} is not a {role} certificate"
            )
        return ident

    @staticmethod
    def describe(cert: x509.Certificate) -> NodeIdentity:
        def attr(oid) -> str:
            values = cert.subject.get_attributes_for_oid(oid)
            return str(values[0].value) if values else ""

        key = cert.public_key()
        try:
            extension = cert.extensions.get_extension_for_oid(TRANSPORT_KEY_OID).value
            transport = (
                extension.value if isinstance(extension, x509.UnrecognizedExtension) else b""
            )
        except x509.ExtensionNotFound:
            raise VerificationError("bad_certificate", "certificate has no transport key") from None
        if not isinstance(key, Ed25519PublicKey) or len(transport) != 32:
            raise VerificationError("bad_certificate", "certificate keys are of the wrong type")
        return NodeIdentity(
            attr(NameOID.ORGANIZATIONAL_UNIT_NAME),
            attr(NameOID.COMMON_NAME),
            cert.serial_number,
            key,
            bytes(transport),
            cert.not_valid_after_utc,
            cert.not_valid_before_utc,
        )
