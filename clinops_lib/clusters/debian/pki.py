"""The cluster's certificates, made in-process with ``cryptography`` (no openssl calls).

One CA; one serving certificate for the API server and one for the kubelet; one client
certificate per component whose subject is the identity the built-in authorizers understand
(``system:kube-scheduler``, ``system:node:<node>`` in ``system:nodes`` for the Node authorizer,
``system:masters`` for the admin and for the API server talking to kubelets); the
service-account signing key pair. Keys are ECDSA P-256: Kubernetes 1.20 accepts them
everywhere (TLS, ``--service-account-key-file``) and they are made in milliseconds where RSA
2048 took seconds in the recipe. Private keys are written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CLIENT_IDENTITIES", "Pki", "make_pki"]

#: file stem -> (organisation or None, common name); node identity is filled in per node.
CLIENT_IDENTITIES: dict[str, tuple[str | None, str]] = {
    "admin": ("system:masters", "clinops-admin"),
    "apiserver-kubelet-client": ("system:masters", "kube-apiserver-kubelet-client"),
    "kube-controller-manager": (None, "system:kube-controller-manager"),
    "kube-scheduler": (None, "system:kube-scheduler"),
    "kube-proxy": (None, "system:kube-proxy"),
}


@dataclass(frozen=True)
class Pki:
    """Paths of everything :func:`make_pki` wrote."""

    folder: Path

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    @property
    def ca(self) -> Path:
        return self.cert("ca")

    @property
    def sa_key(self) -> Path:
        return self.folder / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.folder / "sa.pub"


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def make_pki(
    folder: Path,
    *,
    node_name: str,
    node_ip: str,
    service_ip: str,
    days: int = 365,
    extra_clients: dict[str, tuple[str | None, str]] | None = None,
) -> Pki:
    """Write a fresh CA and every certificate of a single-node cluster into ``folder``.

    ``extra_clients``: more client identities (file stem -> (group, user)), e.g. the Argo
    Rollouts controller as its ServiceAccount's user, so RBAC restricts it exactly as in a pod.
    """
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("clinops-debian-cluster-ca")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder)
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.key("ca"), ca_key)

    def issue(
        stem: str, subject: x509.Name, *, server: bool, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if dns or ips:
            alt: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        pki.cert(stem).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pki.key(stem), key)

    issue(
        "apiserver",
        _name("kube-apiserver"),
        server=True,
        dns=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ips=("127.0.0.1", node_ip, service_ip),
    )
    issue(
        "kubelet-serving",
        _name(node_name),
        server=True,
        dns=(node_name, "localhost"),
        ips=(node_ip, "127.0.0.1"),
    )
    issue("kubelet", _name(f"system:node:{node_name}", "system:nodes"), server=False)
    for stem, (org, cn) in {**CLIENT_IDENTITIES, **(extra_clients or {})}.items():
        issue(stem, _name(cn, org), server=False)
    sa = ec.generate_private_key(ec.SECP256R1())
    _write_key(pki.sa_key, sa)
    pki.sa_pub.write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
