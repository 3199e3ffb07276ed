"""Verifies Portcullis tokens with PyJWT, as an API or origin written in Python would.

Usage: pyjwt_verify.py JWKS_URL < checks.jsonl

Each input line is a JSON object {"token", "issuer", "audience", "typ",
"algorithms"?}; each output line is {"ok": true, "header": {...}, "claims":
{...}} when PyJWT verifies the token against the JWKS (fetched with
PyJWKClient) with the given algorithms (default ["EdDSA"]), the given issuer and audience, the claims exp/iat/iss/aud/sub required,
and the header's typ equal to "typ" (PyJWT does not check typ itself), or
{"ok": false, "error": "<exception class>: <message>"}.
"""

import json
import sys

import jwt


def check(client, item):
    try:
        header = jwt.get_unverified_header(item["token"])
        key = client.get_signing_key_from_jwt(item["token"])
        claims = jwt.decode(
            item["token"],
            key,
            algorithms=item.get("algorithms", ["EdDSA"]),
            issuer=item["issuer"],
            audience=item["audience"],
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
        if header.get("typ") != item["typ"]:
            raise jwt.InvalidTokenError(f"typ is {header.get('typ')!r}, expected {item['typ']!r}")
        return {"ok": True, "header": header, "claims": claims}
    except Exception as err:  # every failure is reported, never raised
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


def main():
    client = jwt.PyJWKClient(sys.argv[1], cache_keys=False, cache_jwk_set=False)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(check(client, json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
