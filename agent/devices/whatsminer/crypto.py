"""The write API's cryptography: md5-crypt token signing and AES-256-ECB framing.

md5-crypt is written out over hashlib because Python 3.13 removed `crypt` and passlib is
unmaintained; it is the FreeBSD algorithm (`openssl passwd -1`), checked against openssl's
output in the tests. Only the hash part after the third `$` is ever used.

pycryptodome's AES (with cffi and pycparser, ~2 MB resident) is imported by the first write,
not by the agent's start: a fleet that is only polled never loads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from Crypto.Cipher._mode_ecb import EcbMode

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MAGIC = b"$1$"
# The byte triplets md5-crypt encodes, in its own order, then the lone byte 11.
_TRIPLETS = ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))
BLOCK = 16


def md5crypt(password: str | bytes, salt: str | bytes) -> str:
    """The hash part of `$1$<salt>$<hash>` (what `openssl passwd -1 -salt SALT PW` ends with)."""
    secret = password.encode() if isinstance(password, str) else password
    raw_salt = salt.encode() if isinstance(salt, str) else salt
    raw_salt = raw_salt.split(b"$", 1)[0][:8]
    alternate = _md5(secret + raw_salt + secret).digest()
    context = _md5(secret + _MAGIC + raw_salt)
    for remaining in range(len(secret), 0, -16):
        context.update(alternate[: min(16, remaining)])
    length = len(secret)
    while length:
        context.update(b"\0" if length & 1 else secret[:1])
        length >>= 1
    digest = context.digest()
    for round_ in range(1000):
        step = _md5(secret if round_ & 1 else digest)
        if round_ % 3:
            step.update(raw_salt)
        if round_ % 7:
            step.update(secret)
        step.update(digest if round_ & 1 else secret)
        digest = step.digest()
    return _encode(digest)


def _md5(data: bytes) -> Any:
    return hashlib.md5(data)  # noqa: S324 - md5-crypt is the miner's algorithm, not a choice


def _encode(digest: bytes) -> str:
    out = []
    for a, b, c in _TRIPLETS:
        out.append(_to64((digest[a] << 16) | (digest[b] << 8) | digest[c], 4))
    out.append(_to64(digest[11], 2))
    return "".join(out)


def _to64(value: int, count: int) -> str:
    chars = []
    for _ in range(count):
        chars.append(_ITOA64[value & 0x3F])
        value >>= 6
    return "".join(chars)


def derive_key(password: str, salt: str) -> str:
    """`key` of the token handshake: md5crypt(password, salt)."""
    return md5crypt(password, salt)


def sign_token(key: str, time: str, newsalt: str) -> str:
    """`sign` of the token handshake: md5crypt(key + last 4 characters of time, newsalt)."""
    return md5crypt(key + time[-4:], newsalt)


def aes_key(key: str) -> bytes:
    """sha256 of the key text: the 32-byte AES-256 key."""
    return hashlib.sha256(key.encode("ascii")).digest()


def encrypt(plaintext: bytes, aeskey: bytes) -> str:
    """NUL-pad to 16 bytes (not PKCS#7), AES-256-ECB, base64 without line breaks."""
    padded = plaintext + b"\0" * (-len(plaintext) % BLOCK)
    return base64.b64encode(_ecb(aeskey).encrypt(padded)).decode("ascii")


def decrypt(data: str | bytes, aeskey: bytes) -> bytes:
    """The inverse of `encrypt`, trailing NULs removed. ValueError if it is not ciphertext."""
    try:
        raw = base64.b64decode(data)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from None
    if not raw or len(raw) % BLOCK:
        raise ValueError(f"ciphertext of {len(raw)} bytes is not a multiple of {BLOCK}")
    return bytes(_ecb(aeskey).decrypt(raw)).rstrip(b"\0")


def _ecb(aeskey: bytes) -> EcbMode:
    from Crypto.Cipher import AES  # the first write imports it: see the module doc

    return AES.new(aeskey, AES.MODE_ECB)


def encrypt_command(command: Mapping[str, Any], aeskey: bytes) -> bytes:
    """The bytes sent for a write: `{"enc": 1, "data": BASE64}` around the JSON command."""
    data = encrypt(json.dumps(command).encode(), aeskey)
    return json.dumps({"enc": 1, "data": data}).encode()
