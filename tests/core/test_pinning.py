from __future__ import annotations

import hashlib

import pytest

from jupyter_gpumarket.core.pinning import fingerprint, fingerprint_matches, normalize_fingerprint
from jupyter_gpumarket.exceptions import ConfigError


def test_fingerprint_forms_are_normalized() -> None:
    der = b"certificate bytes"
    hexd = hashlib.sha256(der).hexdigest()
    assert fingerprint(der) == "sha256:" + hexd
    openssl = ":".join(hexd[i : i + 2] for i in range(0, 64, 2)).upper()
    for form in (hexd, "sha256:" + hexd.upper(), f"SHA256 Fingerprint={openssl}", openssl):
        assert normalize_fingerprint(form) == "sha256:" + hexd
        assert fingerprint_matches(der, form)
    assert not fingerprint_matches(b"other", hexd)


@pytest.mark.parametrize("bad", ["", "sha256:", "sha256:abc", "md5:" + "0" * 32, "z" * 64])
def test_bad_fingerprints_say_what_is_expected(bad: str) -> None:
    with pytest.raises(ConfigError, match="64 hex digits"):
        normalize_fingerprint(bad)
