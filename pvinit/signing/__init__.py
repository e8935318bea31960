"""Ed25519 keys, the signed revision envelope and the trust policy devices enforce."""

from __future__ import annotations

from pvinit.signing.envelope import Envelope, Signature
from pvinit.signing.keys import (
    SigningKey,
    VerifyKey,
    load_signing_key,
    load_verify_key,
    save_keypair,
)
from pvinit.signing.trust import (
    TrustedKey,
    TrustPolicy,
    check_envelope,
    load_trust,
    rotate_trust,
    sign_envelope,
    sign_trust,
    verify_signatures,
)

__all__ = [
    "Envelope",
    "Signature",
    "SigningKey",
    "TrustPolicy",
    "TrustedKey",
    "VerifyKey",
    "check_envelope",
    "load_signing_key",
    "load_trust",
    "load_verify_key",
    "rotate_trust",
    "save_keypair",
    "sign_envelope",
    "sign_trust",
    "verify_signatures",
]
