"""Request and response bodies of the identity API."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Annotated, Literal
from uuid import UUID

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from veche.kernel.identity.models import Role

# Bodies are bounded before the password policy looks at them; the policy's own maximum
# (`VECHE_AUTH__PASSWORD_MAX_LENGTH`) gives the clear reason.
PASSWORD_HARD_LIMIT = 1024
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$")


def normalize_email(value: str) -> str:
    """The one spelling of an address that identifies an account."""
    try:
        result = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    return result.normalized.lower()


def clean_display_name(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        raise ValueError("must not be empty")
    if any(unicodedata.category(char).startswith("C") for char in value):
        raise ValueError("must not contain control characters")
    return value


def check_locale(value: str) -> str:
    if not _LOCALE.match(value):
        raise ValueError("must be a language tag such as 'en', 'ru' or 'pt-BR'")
    return value


Email = Annotated[
    str,
    Field(min_length=3, max_length=320, json_schema_extra={"format": "email"}),
    AfterValidator(normalize_email),
]
DisplayName = Annotated[
    str, Field(min_length=1, max_length=100), AfterValidator(clean_display_name)
]
Password = Annotated[str, Field(min_length=1, max_length=PASSWORD_HARD_LIMIT)]
Locale = Annotated[str, Field(max_length=35), AfterValidator(check_locale)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4096)


class RegisterRequest(Strict):
    email: Email
    password: Password
    display_name: DisplayName


class LoginRequest(Strict):
    email: Email
    password: Password
    device_name: Annotated[str | None, Field(max_length=100)] = None


class RefreshRequest(Strict):
    refresh_token: Annotated[str, Field(min_length=1, max_length=256)]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a scheme name
    expires_in: int = Field(description="Seconds the access token stays valid")
    refresh_expires_in: int = Field(description="Seconds the refresh token stays valid")
    session_id: UUID


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    email: str
    display_name: str
    role: str
    locale: str
    is_active: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None


class MeUpdate(Strict):
    display_name: DisplayName | None = None
    locale: Locale | None = None
    current_password: Password | None = None
    new_password: Password | None = None

    @model_validator(mode="after")
    def _password_change_is_complete(self) -> MeUpdate:
        if self.new_password is not None and self.current_password is None:
            raise ValueError("current_password is required to set new_password")
        return self


class SessionRead(BaseModel):
    id: UUID
    device: str | None
    ip: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime
    expires_at: dt.datetime
    current: bool


class SessionList(BaseModel):
    items: list[SessionRead]


class RevokedSessions(BaseModel):
    revoked: int


class UserAdminUpdate(Strict):
    role: Role | None = None
    is_active: bool | None = None
