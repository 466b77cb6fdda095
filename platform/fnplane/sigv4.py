"""Verification of AWS Signature Version 4, so boto3 can authenticate with a key.

The platform's shared secret plays the part of the secret access key; the
access key id is not checked. The canonical request is rebuilt the way
botocore builds it for JSON and REST-JSON services (the already-encoded path
encoded once more, query pairs sorted as sent, signed headers trimmed).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote

from fnplane.errors import FnplaneError

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_CLOCK_SKEW_S = 15 * 60


class SignatureError(FnplaneError):
    """A SigV4 signature is missing, malformed, stale or does not match."""


def verify_sigv4(
    method: str, raw_path: str, headers: dict[str, str], body: bytes, secret: str
) -> None:
    """Raise ``SignatureError`` unless the request was signed with ``secret``."""
    lower = {name.lower(): value for name, value in headers.items()}
    fields = parse_authorization(lower.get("authorization", ""))
    amz_date = lower.get("x-amz-date", "")
    check_freshness(amz_date)

    scope = fields["Credential"].split("/", 1)[1]
    signed = fields["SignedHeaders"].split(";")
    canonical = canonical_request(method, raw_path, lower, signed, body)
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    expected = hmac.new(
        signing_key(secret, scope), string_to_sign.encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"]):
        raise SignatureError("signature does not match: wrong key")


def parse_authorization(value: str) -> dict[str, str]:
    """The Credential, SignedHeaders and Signature of a SigV4 header."""
    if not value.startswith(ALGORITHM + " "):
        raise SignatureError(f"Authorization is not {ALGORITHM}")
    fields = {}
    for part in value[len(ALGORITHM) + 1 :].split(","):
        key, _, item = part.strip().partition("=")
        fields[key] = item
    missing = {"Credential", "SignedHeaders", "Signature"} - set(fields)
    if missing or fields["Credential"].count("/") != 4:
        raise SignatureError(f"Authorization is malformed (missing {sorted(missing)})")
    return fields


def check_freshness(amz_date: str) -> None:
    """Refuse signatures more than 15 minutes away from now, as AWS does."""
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError(f"X-Amz-Date {amz_date!r} is not a timestamp") from None
    skew_s = abs((datetime.now(UTC) - signed_at).total_seconds())
    if skew_s > MAX_CLOCK_SKEW_S:
        raise SignatureError(f"signature is {skew_s:.0f} s away from now")


def canonical_request(
    method: str, raw_path: str, headers: dict[str, str], signed: list[str], body: bytes
) -> str:
    """The canonical request string, as botocore builds it."""
    path, _, query = raw_path.partition("?")
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&") if pair)
    canonical_query = "&".join(f"{key}={value}" for key, value in pairs)
    canonical_headers = "".join(
        f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed
    )
    payload_hash = (
        headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    )
    return "\n".join(
        [
            method,
            quote(path, safe="/~"),
            canonical_query,
            canonical_headers,
            ";".join(signed),
            payload_hash,
        ]
    )


def signing_key(secret: str, scope: str) -> bytes:
    """The key derived from the secret for the scope's date, region and service."""
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
