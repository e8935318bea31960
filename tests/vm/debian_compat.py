"""Run inside the VM image's rootfs (chroot) with Debian 12's python3 and packages.

Prints one line per failure and exits 1, or prints ``ok`` and the versions.
Debian ships older versions than the dev venv (python3 3.11.2, zstandard
0.20, msgpack 1.0.3, cryptography 38, lxc 5.0); a device runs those, so
every pvinit module must import and the parts a boot does not exercise
(signing keys, PEM files) must work with them.  Not a pytest module: the
VM tests copy it into the image and run it there.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import tempfile
from pathlib import Path


def check_imports() -> list[str]:
    import pvinit

    failures = []
    for module in pkgutil.walk_packages(pvinit.__path__, "pvinit."):
        if module.name.endswith("__main__"):
            continue  # running it is the point of __main__; importing it would run it
        try:
            importlib.import_module(module.name)
        except Exception as error:  # noqa: BLE001 - report every module, not the first
            failures.append(f"import {module.name}: {error!r}")
    return failures


def check_signing() -> list[str]:
    from pvinit.signing.keys import load_signing_key, load_verify_key, save_keypair

    with tempfile.TemporaryDirectory() as tmp:
        key_path, pub_path = save_keypair(Path(tmp) / "dev")
        signer = load_signing_key(key_path)
        verifier = load_verify_key(pub_path)
        sig = signer.sign(b"revision 1")
        failures = []
        if not verifier.verify(b"revision 1", sig):
            failures.append("signing: a good signature does not verify")
        if verifier.verify(b"revision 2", sig):
            failures.append("signing: a signature verifies for other data")
        if verifier.keyid != signer.keyid:
            failures.append("signing: keyid differs between the .key and .pub files")
        return failures


def main() -> int:
    failures = check_imports() + check_signing()
    for line in failures:
        print(line)
    if failures:
        return 1
    import cryptography
    import msgpack
    import zstandard

    print(
        f"ok: python {sys.version.split()[0]}, zstandard {zstandard.__version__}, "
        f"msgpack {'.'.join(map(str, msgpack.version))}, cryptography {cryptography.__version__}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
