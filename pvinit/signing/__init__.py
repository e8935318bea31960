"""Ed25519 keys, the signed revision envelope, and the trust policy.

Import from the submodules (:mod:`.envelope`, :mod:`.keys`, :mod:`.trust`):
this package re-exports nothing, so code that only reads envelopes (the
supervisor at boot) does not load ``cryptography`` (~9 MB per process).
"""
