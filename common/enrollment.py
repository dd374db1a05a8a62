"""Enrollment without a secret on the wire: an X25519 key exchange bound to the join token.

The slave sends its name, URL, a fresh X25519 public key, a timestamp, a
nonce and a proof: HMAC-SHA256 of all of them under the join token (the join
token itself never crosses the network). The master checks the proof, answers
with its own fresh public key, and both derive, with HKDF-SHA256 over the
shared X25519 secret salted with the join token, the slave's HMAC signing key
(never sent) and a key that seals the rsync password (ChaCha20-Poly1305).

A passive observer sees only public keys; an active one that lacks the join
token can neither pass the proof nor derive the keys, so a master answering
without the join token is caught when the sealed password does not open.
The transcript (name, URL, both public keys) is bound into both the key
derivation and the seal. The proof can be attacked offline like any MAC, so
the join token must be a long random value.
"""

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "x25519-hkdf-sha256-chacha20poly1305-v1"
_RAW = {"encoding": serialization.Encoding.Raw, "format": serialization.PublicFormat.Raw}


class EnrollmentError(Exception):
    """A proof, key or seal that does not check out; the message says which."""


def _b64(data):
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text, what, length=None):
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise EnrollmentError(f"the {what} is not base64url") from None
    if length is not None and len(data) != length:
        raise EnrollmentError(f"the {what} must be {length} bytes")
    return data


def _transcript(name, url, slave_public, master_public=""):
    return "\n".join([VERSION, name, url, slave_public, master_public]).encode("utf-8")


def proof(join_token, name, url, public_key, timestamp, nonce):
    """What shows the master that the slave holds the join token, without sending it."""
    message = _transcript(name, url, public_key) + f"\n{int(timestamp)}\n{nonce}".encode("ascii")
    return hmac.new(join_token.encode("utf-8"), message, hashlib.sha256).hexdigest()


def check_proof(join_token, name, url, public_key, timestamp, nonce, presented, now, max_age):
    """Raises EnrollmentError for a wrong or stale proof."""
    if abs(now - int(timestamp)) > max_age:
        raise EnrollmentError(f"the enrollment is stale (clocks more than {max_age} seconds apart)")
    expected = proof(join_token, name, url, public_key, timestamp, nonce)
    if not hmac.compare_digest(expected, presented):
        raise EnrollmentError("the join token proof does not match")


def _keys(shared, join_token, transcript):
    material = HKDF(algorithm=hashes.SHA256(), length=64, salt=join_token.encode("utf-8"),
                    info=hashlib.sha256(transcript).digest()).derive(shared)
    return _b64(material[:32]), material[32:]


def _load_public(text):
    try:
        return X25519PublicKey.from_public_bytes(_unb64(text, "public key", 32))
    except ValueError:
        raise EnrollmentError("the public key is not an X25519 key") from None


class SlaveExchange:
    """The slave's half: a fresh key pair for one enrollment."""

    def __init__(self, join_token, name, url):
        self.join_token, self.name, self.url = join_token, name, url
        self._private = X25519PrivateKey.generate()
        self.public_key = _b64(self._private.public_key().public_bytes(**_RAW))

    def request(self, timestamp):
        nonce = os.urandom(16).hex()
        return {"name": self.name, "url": self.url, "public_key": self.public_key, "timestamp": int(timestamp),
                "nonce": nonce, "proof": proof(self.join_token, self.name, self.url, self.public_key,
                                               timestamp, nonce)}

    def finish(self, master_public_key, sealed_rsync_password, rsync_user):
        """(signing key, rsync password); raises EnrollmentError when the master did not know the join token."""
        shared = self._private.exchange(_load_public(master_public_key))
        transcript = _transcript(self.name, self.url, self.public_key, master_public_key)
        signing_key, seal_key = _keys(shared, self.join_token, transcript)
        sealed = _unb64(sealed_rsync_password, "sealed rsync password")
        try:
            password = ChaCha20Poly1305(seal_key).decrypt(sealed[:12], sealed[12:],
                                                          transcript + rsync_user.encode("utf-8"))
        except (InvalidTag, ValueError):
            raise EnrollmentError("the master's answer does not open with this join token "
                                  "(a different JOIN_TOKEN, or someone in between)") from None
        return signing_key, password.decode("utf-8")


def master_exchange(join_token, name, url, slave_public_key, rsync_user, rsync_password):
    """The master's half: (master public key, signing key, sealed rsync password). Raises EnrollmentError."""
    slave_public = _load_public(slave_public_key)
    private = X25519PrivateKey.generate()
    master_public = _b64(private.public_key().public_bytes(**_RAW))
    try:
        shared = private.exchange(slave_public)
    except ValueError:
        raise EnrollmentError("the public key is a weak X25519 point") from None
    transcript = _transcript(name, url, slave_public_key, master_public)
    signing_key, seal_key = _keys(shared, join_token, transcript)
    nonce = os.urandom(12)
    sealed = nonce + ChaCha20Poly1305(seal_key).encrypt(nonce, rsync_password.encode("utf-8"),
                                                        transcript + rsync_user.encode("utf-8"))
    return master_public, signing_key, _b64(sealed)
