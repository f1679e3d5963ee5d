"""md5-crypt, token signing and AES framing against the research notes' vectors and openssl."""

from __future__ import annotations

import base64
import json

import pytest

from agent.devices.whatsminer import crypto

# research/whatsminer.md, checked there with openssl and with passlib + pycryptodome.
PASSWORD, SALT, NEWSALT, TIME = "admin", "BQ5hoXV9", "jbzkfQls", "5626"
KEY = "RxmaDUO33TS7O26yeMHZ81"
SIGN = "w.BNbkCV6n1aNWgiBWLzT/"
AESKEY_HEX = "199e0a202039bb7b558db7a54697dca29cb278055b7e659a127fb844d5a2fbf6"
WIRE_DATA = (
    "K5NDiWBAqb++VrZy8g0NEQIjuugciGp5pA1ArzU2pL5XTmN6SQk3XqD3k1rRhHjKlfF7Lm0yZven4kgF8PwrGLDnb"
    "XgZ5IEyS3PufKegTuA="
)

# `openssl passwd -1 -salt SALT PASSWORD | cut -d$ -f4`, generated when these tests were written:
# every length class md5-crypt treats differently (0, 1, 7, 8, 15, 16, 17, >32 bytes), a short
# salt, a salt longer than 8 (truncated), and non-ASCII.
OPENSSL = [
    ("", "BQ5hoXV9", "CYfwenQM4xmKGmSJJ/al11"),
    ("a", "ab", "NM4FR4Dl/CzoTSJTd3YJ3."),
    ("admin", "ab", "XAY7Cxo/ue.AAKn2rbkP3."),
    ("admin", "12345678xyz", "kbapHduhihjieYIUP66Xt/"),
    ("1234567", "BQ5hoXV9", "TyZoP6pzaQme.0dh/Cztv/"),
    ("12345678", "BQ5hoXV9", "AK6Tx29CpDG7sBZMFzQJT/"),
    ("passwordpasswor", "ab", "9f91YKjkEU2wo8r0Mk8Rd/"),
    ("passwordpassword", "BQ5hoXV9", "gr6uu9XBSU0/OX3gPW8s/."),
    ("passwordpassword1", "12345678xyz", ".LYnNTPLCGgioCudGVlH./"),
    ("a_very_long_password_over_32_bytes_long!", "BQ5hoXV9", "e5LKPRH1nO8pAMbSq95cp."),
    ("pässwörd", "ab", "bRZzLnQPD1ql12pSoshc71"),
]


def test_key_is_md5crypt_of_password_and_salt() -> None:
    assert crypto.derive_key(PASSWORD, SALT) == KEY


def test_sign_uses_key_and_last_four_characters_of_time() -> None:
    assert crypto.sign_token(KEY, TIME, NEWSALT) == SIGN
    # Firmware that sends the whole epoch gives the same sign: only the last 4 count.
    assert crypto.sign_token(KEY, "170000" + TIME, NEWSALT) == SIGN


def test_aeskey_is_sha256_of_the_key_text() -> None:
    assert crypto.aes_key(KEY).hex() == AESKEY_HEX


@pytest.mark.parametrize(("password", "salt", "expected"), OPENSSL)
def test_md5crypt_matches_openssl(password: str, salt: str, expected: str) -> None:
    assert crypto.md5crypt(password, salt) == expected


def test_md5crypt_salt_stops_at_dollar_and_accepts_bytes() -> None:
    assert crypto.md5crypt(b"admin", b"BQ5hoXV9$rest") == KEY


def test_exact_wire_ciphertext_of_the_research_vector() -> None:
    command = {"cmd": "set_led", "param": "auto", "token": SIGN}
    wire = crypto.encrypt_command(command, bytes.fromhex(AESKEY_HEX))
    assert wire == json.dumps({"enc": 1, "data": WIRE_DATA}).encode()


def test_decrypting_the_wire_vector_gives_the_plaintext() -> None:
    plain = crypto.decrypt(WIRE_DATA, bytes.fromhex(AESKEY_HEX))
    assert plain == b'{"cmd": "set_led", "param": "auto", "token": "w.BNbkCV6n1aNWgiBWLzT/"}'


@pytest.mark.parametrize("size", [1, 15, 16, 17, 31, 32, 33, 1000])
def test_round_trip_pads_with_nul_to_whole_blocks(size: int) -> None:
    aeskey = crypto.aes_key(KEY)
    plaintext = ("x" * size).encode()
    data = crypto.encrypt(plaintext, aeskey)
    assert "\n" not in data
    raw = base64.b64decode(data)
    assert len(raw) % 16 == 0 and len(raw) >= size
    assert crypto.decrypt(data, aeskey) == plaintext


def test_another_key_does_not_decrypt_to_the_plaintext() -> None:
    data = crypto.encrypt(b'{"cmd":"reboot"}', crypto.aes_key(KEY))
    assert crypto.decrypt(data, crypto.aes_key("another")) != b'{"cmd":"reboot"}'


@pytest.mark.parametrize("data", ["not base64!!", "QUJD", ""])
def test_decrypt_rejects_what_is_not_ciphertext(data: str) -> None:
    with pytest.raises(ValueError):
        crypto.decrypt(data, crypto.aes_key(KEY))
