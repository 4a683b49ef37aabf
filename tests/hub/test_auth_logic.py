"""Sign-in logic without sockets: access rules, auth_state encryption and keys, ID token checks,
claim mapping, LDAP group names."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from hub.config import Config, ConfigError
from hub.services import access, auth_state
from hub.services.ldap_auth import group_names
from hub.services.oidc import LoginStart, pkce_challenge, username_from, verify_id_token


def test_access_rules() -> None:
    open_hub = Config()
    assert access.decide(open_hub, "anyone", None) == access.Decision(True, None)
    cfg = Config(allowed_users=["Ann"], blocked_users=["eve"], allowed_groups=["gpu"],
                 admin_users=["root2"], admin_groups=["ops"])
    assert access.decide(cfg, "ann", None).allowed  # names are compared normalized
    assert access.decide(cfg, "bob", ["gpu"]).allowed
    assert not access.decide(cfg, "bob", ["cpu"]).allowed
    assert not access.decide(cfg, "bob", None).allowed
    assert access.decide(cfg, "carl", ["ops"]) == access.Decision(True, True)
    assert access.decide(cfg, "root2", None) == access.Decision(True, True)
    blocked = access.decide(cfg, "eve", ["ops", "gpu"])  # blocked beats admin and allowed
    assert not blocked.allowed and "not allowed" in blocked.reason
    assert access.decide(Config(blocked_users=["eve"]), "eve", None).allowed is False


def test_auth_state_round_trip_rotation_and_no_key(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    crypt = auth_state.from_config(Config(auth_state_key=old))
    blob = crypt.encrypt({"access_token": "secret-token"})
    assert blob is not None and b"secret-token" not in blob
    key_file = tmp_path / "keys"
    key_file.write_text(f"{new}\n{old}\n")
    key_file.chmod(0o600)
    rotated = auth_state.from_config(Config(auth_state_key_file=str(key_file)))
    assert rotated.decrypt(blob) == {"access_token": "secret-token"}
    assert auth_state.from_config(Config(auth_state_key=new)).decrypt(blob) is None
    off = auth_state.from_config(Config())
    assert not off.enabled and off.encrypt({"a": 1}) is None and off.decrypt(blob) is None


def test_auth_state_key_file_must_be_private_and_keys_valid(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(Fernet.generate_key().decode())
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        auth_state.from_config(Config(auth_state_key_file=str(key_file)))
    with pytest.raises(ConfigError, match="not a Fernet key"):
        auth_state.from_config(Config(auth_state_key="short"))


def _token(key: RSAKey, **claims: object) -> str:
    now = int(time.time())
    base = {"iss": "https://op", "aud": "hub", "sub": "a", "iat": now, "exp": now + 300,
            "nonce": "n1"}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, {**base, **claims}, key)


def test_verify_id_token_checks_everything() -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    keys = KeySet([key])
    kw = {"issuer": "https://op", "client_id": "hub", "nonce": "n1", "algorithms": ["RS256"]}
    assert verify_id_token(_token(key), keys, **kw)["sub"] == "a"  # type: ignore[arg-type]
    bad = [_token(key, nonce="n2"), _token(key, aud="other"), _token(key, iss="https://evil"),
           _token(key, exp=int(time.time()) - 120), _token(key, aud=["hub", "x"], azp="x"),
           _token(RSAKey.generate_key(2048, parameters={"kid": "k1"}))]
    for token in bad:
        with pytest.raises(JoseError):
            verify_id_token(token, keys, **kw)  # type: ignore[arg-type]
    from joserfc.jwk import OctKey

    hmac_signed = jwt.encode({"alg": "HS256"}, {"sub": "a"}, OctKey.import_key("x" * 32))
    with pytest.raises(JoseError):
        verify_id_token(hmac_signed, keys, **kw)  # type: ignore[arg-type]


def test_claims_and_small_helpers() -> None:
    assert username_from({"preferred_username": " Alice "}, "preferred_username",
                         "lower") == "alice"
    assert username_from({"email": "Bob@Example.org"}, "email", "local-part") == "bob"
    assert username_from({"email": 3}, "email", "lower") is None
    start = LoginStart("s", "n", "v", "/hub/home")
    assert LoginStart.loads(start.dumps()) == start
    assert LoginStart.loads(b"[1, 2]") is None and LoginStart.loads("junk") is None
    # RFC 7636 appendix B
    assert pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert group_names(["cn=students,ou=groups,dc=x", "not a dn", "cn=a\\,b,dc=x",
                        "cn=caf\\c3\\a9 100%,dc=x"]) == ["students", "a,b", "café 100%"]
