"""pushcore.tokens: HMAC-SHA256 device tokens with expiry."""
from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushcore import mint_token, verify_token
from pushcore.errors import PushcoreError, Reason
from pushcore.tokens import (
    DEFAULT_TTL,
    NO_EXPIRY,
    TOKEN_LENGTH,
    TOKEN_V1_LENGTH,
    AuthError,
    TokenClaims,
    TokenSigner,
)

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
NOW = 1_700_000_000.0


def _reason(excinfo) -> Reason:
    return excinfo.value.reason


def test_good_token_verifies_with_its_claims():
    token = mint_token(SECRET, "phone-1", 60, now=NOW)
    assert isinstance(token, bytes) and len(token) == TOKEN_LENGTH
    claims = verify_token(SECRET, "phone-1", token, now=NOW + 30)
    assert claims == TokenClaims("phone-1", NOW + 60, NOW)


def test_expires_at_is_kept_to_the_millisecond():
    token = mint_token(SECRET, "d", expires_at=NOW + 1.2345)
    # rounded up to the next millisecond, never earlier than asked
    assert verify_token(SECRET, "d", token, now=NOW).expires_at == pytest.approx(NOW + 1.235)


def test_token_without_expiry_is_asked_for_by_name():
    token = mint_token(SECRET, "d", ttl=NO_EXPIRY, now=NOW)
    claims = verify_token(SECRET, "d", token, now=4_000_000_000.0)
    assert claims.expires_at is None and claims.issued_at == NOW
    assert repr(NO_EXPIRY) == "pushcore.tokens.NO_EXPIRY"


def test_mint_without_ttl_lasts_the_default_30_days():
    # finding 7: mint_token() without a ttl used to make a token that never expired
    assert DEFAULT_TTL == 30 * 24 * 3600
    token = mint_token(SECRET, "d", now=NOW)
    assert verify_token(SECRET, "d", token, now=NOW).expires_at == NOW + DEFAULT_TTL
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "d", token, now=NOW + DEFAULT_TTL)
    assert _reason(exc) is Reason.TOKEN_EXPIRED
    assert verify_token(SECRET, "d", TokenSigner(SECRET).mint("d", now=NOW), now=NOW).expires_at == NOW + DEFAULT_TTL


def test_ttl_none_is_ambiguous_and_refused():
    with pytest.raises(TypeError, match="NO_EXPIRY"):
        mint_token(SECRET, "d", None)
    with pytest.raises(TypeError, match="NO_EXPIRY"):
        TokenSigner(SECRET).mint("d", ttl=None)
    with pytest.raises(TypeError, match="not both"):
        mint_token(SECRET, "d", NO_EXPIRY, expires_at=NOW + 5)


def test_issued_at_is_the_mint_time_to_the_millisecond():
    claims = verify_token(SECRET, "d", mint_token(SECRET, "d", 60, now=NOW + 0.0129), now=NOW)
    assert claims.issued_at == pytest.approx(NOW + 0.012)  # rounded down: never later than minted


def test_unicode_device_id():
    token = mint_token(SECRET, "téléphone-☎", 10, now=NOW)
    assert verify_token(SECRET, "téléphone-☎", token, now=NOW).device_id == "téléphone-☎"
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "telephone-☎", token, now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


def test_wrong_device_fails():
    token = mint_token(SECRET, "phone-1", 60, now=NOW)
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "phone-2", token, now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED
    # a device id that is a prefix/extension of the real one must fail too
    for other in ("phone-", "phone-10", ""):
        with pytest.raises(AuthError):
            verify_token(SECRET, other, token, now=NOW)


def test_wrong_secret_fails():
    token = mint_token(SECRET, "phone-1", 60, now=NOW)
    with pytest.raises(AuthError) as exc:
        verify_token(OTHER_SECRET, "phone-1", token, now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


@pytest.mark.parametrize("index", range(TOKEN_LENGTH))
def test_every_tampered_byte_fails(index):
    token = bytearray(mint_token(SECRET, "phone-1", 60, now=NOW))
    token[index] ^= 0x01
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "phone-1", bytes(token), now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


def test_extending_the_expiry_fails():
    token = bytearray(mint_token(SECRET, "phone-1", 60, now=NOW))
    token[16] = 0x7F  # a much later expiry, same MAC
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "phone-1", bytes(token), now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


def test_moving_the_issue_time_later_fails():
    # a revoked token must not be made to look newer than the revocation
    token = bytearray(mint_token(SECRET, "phone-1", 60, now=NOW))
    token[6] += 1
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "phone-1", bytes(token), now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


@pytest.mark.parametrize("cut", [0, 1, 9, 17, TOKEN_V1_LENGTH, TOKEN_LENGTH - 1])
def test_truncated_token_fails(cut):
    token = mint_token(SECRET, "phone-1", 60, now=NOW)
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "phone-1", token[:cut], now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


def test_token_with_extra_bytes_fails():
    token = mint_token(SECRET, "phone-1", 60, now=NOW)
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "phone-1", token + b"\x00", now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


def test_unknown_version_fails():
    token = bytearray(mint_token(SECRET, "phone-1", 60, now=NOW))
    for version in (0, 1, 3, 255):  # 1 is known, but a version-1 token is 41 bytes
        token[0] = version
        with pytest.raises(AuthError, match="version"):
            verify_token(SECRET, "phone-1", bytes(token), now=NOW)


def test_expired_token_is_token_expired():
    token = mint_token(SECRET, "phone-1", 60, now=NOW)
    assert verify_token(SECRET, "phone-1", token, now=NOW + 59.998)
    for later in (NOW + 60, NOW + 3600):
        with pytest.raises(AuthError) as exc:
            verify_token(SECRET, "phone-1", token, now=later)
        assert _reason(exc) is Reason.TOKEN_EXPIRED
        assert exc.value.code is Reason.TOKEN_EXPIRED


def test_expired_and_forged_is_auth_failed_not_expired():
    # the MAC is checked first, so a forger never learns anything from expiry
    token = mint_token(SECRET, "phone-1", 60, now=NOW)
    with pytest.raises(AuthError) as exc:
        verify_token(OTHER_SECRET, "phone-1", token, now=NOW + 3600)
    assert _reason(exc) is Reason.AUTH_FAILED


def test_default_clock_is_used():
    assert verify_token(SECRET, "d", mint_token(SECRET, "d", 60)).device_id == "d"
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "d", mint_token(SECRET, "d", expires_at=1.0))
    assert _reason(exc) is Reason.TOKEN_EXPIRED


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00" * TOKEN_LENGTH, b"\x01" * TOKEN_LENGTH, b"\x02" * TOKEN_LENGTH,
     b"\x01" * TOKEN_V1_LENGTH, b"hello"],
)
def test_garbage_fails(garbage):
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "phone-1", garbage, now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


def test_bytes_like_tokens_are_accepted():
    token = mint_token(SECRET, "d", 60, now=NOW)
    assert verify_token(SECRET, "d", bytearray(token), now=NOW).device_id == "d"
    assert verify_token(SECRET, "d", memoryview(token), now=NOW).device_id == "d"


def test_signer_matches_module_functions():
    signer = TokenSigner(SECRET)
    token = signer.mint("d", 60, now=NOW)
    assert token == mint_token(SECRET, "d", 60, now=NOW)
    assert signer.verify("d", token, now=NOW) == verify_token(SECRET, "d", token, now=NOW)


def test_auth_error_is_a_pushcore_error_and_pickles():
    err = AuthError(Reason.TOKEN_EXPIRED, "old")
    assert isinstance(err, PushcoreError)
    assert str(err) == "TOKEN_EXPIRED: old"
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is AuthError and copy.reason is Reason.TOKEN_EXPIRED and copy.message == "old"


# ---- bad arguments: clear TypeError / ValueError -------------------------------------------


@pytest.mark.parametrize("secret", [b"", b"short", b"x" * 15])
def test_short_secret_is_refused(secret):
    with pytest.raises(ValueError, match="at least 16"):
        mint_token(secret, "d", 60)
    with pytest.raises(ValueError, match="at least 16"):
        TokenSigner(secret)


def test_secret_must_be_bytes():
    with pytest.raises(TypeError, match="bytes"):
        TokenSigner("a text secret of enough length")  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
def test_bad_ttl(ttl):
    with pytest.raises(ValueError, match="ttl|finite"):
        mint_token(SECRET, "d", ttl)


def test_ttl_type_and_exclusive_arguments():
    with pytest.raises(TypeError, match="ttl"):
        mint_token(SECRET, "d", "60")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not both"):
        mint_token(SECRET, "d", 60, expires_at=NOW)


@pytest.mark.parametrize("expires_at", [0, -5, float("nan"), 2.0**70])
def test_bad_expires_at(expires_at):
    with pytest.raises(ValueError, match="expires_at"):
        mint_token(SECRET, "d", expires_at=expires_at)


def test_device_id_and_token_types():
    with pytest.raises(TypeError, match="device_id"):
        mint_token(SECRET, 42, 60)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unicode"):
        mint_token(SECRET, "\ud800", 60)
    with pytest.raises(TypeError, match="token"):
        verify_token(SECRET, "d", "not bytes")  # type: ignore[arg-type]


def test_surrogate_device_id_on_verify_is_auth_failed():
    token = mint_token(SECRET, "d", 60, now=NOW)
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "\udcff", token, now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


# ---- property: arbitrary bytes never verify and only ever raise AuthError -------------------


@settings(max_examples=500, deadline=None)
@given(token=st.binary(max_size=2 * TOKEN_LENGTH), device_id=st.text(max_size=20))
def test_random_bytes_never_verify(token, device_id):
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, device_id, token, now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


@settings(max_examples=300, deadline=None)
@given(
    header=st.one_of(
        st.binary(min_size=9, max_size=9).map(lambda b: b"\x01" + b[1:]),
        st.binary(min_size=17, max_size=17).map(lambda b: b"\x02" + b[1:]),
    ),
    mac=st.binary(min_size=32, max_size=32),
)
def test_well_formed_tokens_with_random_mac_never_verify(header, mac):
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "phone-1", header + mac, now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


@settings(max_examples=200, deadline=None)
@given(device_id=st.text(max_size=40), ttl=st.floats(min_value=0.01, max_value=1e8))
def test_mint_verify_round_trip(device_id, ttl):
    token = mint_token(SECRET, device_id, ttl, now=NOW)
    claims = verify_token(SECRET, device_id, token, now=NOW)
    assert claims.device_id == device_id
    assert NOW + ttl <= claims.expires_at < NOW + ttl + 0.002


# ---- version 1 tokens (41 bytes, no issue time) still verify -------------------------------


def _v1_token(secret: bytes, device_id: str, expires_ms: int) -> bytes:
    """A version-1 token as pushcore before version 2 minted it."""
    header = bytes([1]) + expires_ms.to_bytes(8, "little")
    mac = hmac.new(secret, b"pushcore-token\x00" + header + device_id.encode(), hashlib.sha256)
    return header + mac.digest()


def test_version_1_tokens_still_verify_without_an_issue_time():
    token = _v1_token(SECRET, "old-phone", int((NOW + 60) * 1000))
    assert len(token) == TOKEN_V1_LENGTH
    assert verify_token(SECRET, "old-phone", token, now=NOW) == TokenClaims("old-phone", NOW + 60, None)
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "old-phone", token, now=NOW + 60)
    assert _reason(exc) is Reason.TOKEN_EXPIRED
    with pytest.raises(AuthError) as exc:
        verify_token(SECRET, "other", token, now=NOW)
    assert _reason(exc) is Reason.AUTH_FAILED


# ---- the format in docs/PROTOCOL.md, implemented from the doc alone ------------------------


def _mint_from_the_doc(secret: bytes, device_id: str, issued_ms: int, expires_ms: int) -> bytes:
    """docs/PROTOCOL.md §8, with nothing from pushcore: what a backend in another language does."""
    header = bytes([0x02]) + struct.pack("<QQ", issued_ms, expires_ms)
    mac = hmac.new(secret, b"pushcore-token\x00" + header + device_id.encode("utf-8"), hashlib.sha256)
    return header + mac.digest()


def test_independent_implementation_matches_mint_byte_for_byte():
    ours = _mint_from_the_doc(SECRET, "téléphone-1", int(NOW * 1000), int((NOW + 60) * 1000))
    assert ours == mint_token(SECRET, "téléphone-1", 60, now=NOW)
    assert len(ours) == TOKEN_LENGTH == 49
    never = _mint_from_the_doc(SECRET, "d", int(NOW * 1000), 0)
    assert never == mint_token(SECRET, "d", ttl=NO_EXPIRY, now=NOW)
    # the doc's base64url transport form round-trips to the same bytes
    text = base64.urlsafe_b64encode(ours).rstrip(b"=").decode("ascii")
    assert base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) == ours


def test_the_worked_example_in_protocol_md_is_what_mint_makes():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text()
    section = doc[doc.index("## 8. Token format"):]
    example = section[section.index("Example:"):section.index("**Encoding.**")]
    hex_lines = re.findall(r"^    ((?:[0-9a-f]{2} )*[0-9a-f]{2})\s", example, flags=re.M)
    documented = bytes.fromhex("".join(hex_lines).replace(" ", ""))
    assert documented == mint_token(bytes(range(32)), "phone-1", expires_at=1_700_000_060.0, now=1_700_000_000.0)
    assert documented == _mint_from_the_doc(bytes(range(32)), "phone-1", 1_700_000_000_000, 1_700_000_060_000)
