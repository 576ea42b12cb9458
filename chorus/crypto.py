"""Encryption at rest for platform credentials and login sessions (Fernet: AES-128-CBC with an
HMAC, from the `cryptography` package).

One key, `publishing.credentials_key`, generated and kept by `chorus up` when none is configured.
Without it nothing can be sealed or opened: an account cannot be added, rather than stored in the
clear.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from chorus.errors import SettingsError


class CredentialsKeyMissing(SettingsError):
    def __init__(self) -> None:
        super().__init__(
            "publishing.credentials_key is not set, so platform credentials cannot be stored "
            "encrypted: run `chorus up` (it generates one) or set CHORUS_PUBLISHING__CREDENTIALS_KEY "
            "to a key from `python3 -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`"
        )


class UnreadableSecret(RuntimeError):
    """A sealed value the configured key cannot open: the key changed since it was stored."""


def new_key() -> str:
    return Fernet.generate_key().decode()


class SecretBox:
    def __init__(self, key: SecretStr) -> None:
        raw = key.get_secret_value().strip()
        if not raw:
            raise CredentialsKeyMissing()
        try:
            self._fernet = Fernet(raw.encode())
        except ValueError:
            raise SettingsError(
                "publishing.credentials_key is not a Fernet key (urlsafe base64 of 32 bytes); "
                "generate one with Fernet.generate_key()"
            ) from None

    def seal(self, plain: str) -> bytes:
        return self._fernet.encrypt(plain.encode())

    def open(self, sealed: bytes | str) -> str:
        try:
            return self._fernet.decrypt(sealed if isinstance(sealed, bytes) else sealed.encode()).decode()
        except InvalidToken:
            raise UnreadableSecret(
                "stored credentials cannot be decrypted with the configured publishing.credentials_key "
                "(was the key changed?); add the account's credentials again"
            ) from None
