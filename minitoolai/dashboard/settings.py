"""Configuration of the web dashboard (`[dashboard]` in the TOML file,
`MINITOOLAI_DASHBOARD__<KEY>` in the environment)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from minitoolai.money import MoneyFormatError, parse_usd


def _usd(value: str) -> str:
    try:
        parse_usd(value)
    except MoneyFormatError as exc:
        raise ValueError(str(exc)) from None
    return value


class StripeSettings(BaseModel):
    """Stripe Checkout top-ups: shown only when both keys are set."""

    model_config = ConfigDict(extra="forbid")

    secret_key: str | None = None  # sk_live_... / sk_test_...
    webhook_secret: str | None = None  # whsec_..., verifies the webhook's signature
    api_base: str = "https://api.stripe.com"  # tests point this at a fake on loopback
    currency: str = "usd"
    amounts: list[str] = Field(default_factory=lambda: ["5", "10", "25", "50"])  # USD buttons
    min_amount: str = "1"  # USD, for a custom amount
    max_amount: str = "1000"
    signature_tolerance_seconds: int = Field(300, ge=1)  # replayed signatures older than this fail
    timeout_seconds: float = Field(20.0, gt=0)
    # the webhook's body is read up to this many bytes before its signature is checked
    max_event_bytes: int = Field(1024 * 1024, ge=1024)

    @field_validator("min_amount", "max_amount")
    @classmethod
    def _limits(cls, value: str) -> str:
        return _usd(value)

    @field_validator("amounts")
    @classmethod
    def _amounts(cls, values: list[str]) -> list[str]:
        for value in values:
            _usd(value)
        return values

    @property
    def enabled(self) -> bool:
        return bool(self.secret_key and self.webhook_secret)


class DashboardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # False: no pages at `/` (the API keeps working)
    signup: bool = True  # customers may create their own accounts
    signup_credit: str = "0"  # USD given to a new account, as a top-up
    session_days: float = Field(14, gt=0)  # a login lasts this long
    # None: Secure cookies exactly when public_url is https; set True behind a TLS proxy
    cookie_secure: bool | None = None
    # a dashboard form (log in, sign up, keys, admin) is read up to this many bytes before
    # it is parsed or its CSRF token checked; larger ones get 413
    max_form_bytes: int = Field(64 * 1024, ge=1024)
    min_password_length: int = Field(8, ge=1)
    # wrong passwords free per (client address, account), then a wait doubling from 30 s to
    # 15 min; 5x that per client address over all accounts in 15 min
    login_failures_per_15min: int = Field(10, ge=1)
    redeem_failures_per_15min: int = Field(10, ge=1)  # per account: no guessing codes
    password_reset_minutes: int = Field(60, ge=5, le=7 * 24 * 60)  # a reset link works this long
    # "forgot password" requests per email address, and 5x that per client address, an hour
    reset_requests_per_hour: int = Field(3, ge=1)
    usage_page_size: int = Field(100, ge=10, le=1000)
    chart_days: int = Field(30, ge=1, le=366)
    playground_models: list[str] = Field(default_factory=list)  # empty: every available one
    stripe: StripeSettings = Field(default_factory=StripeSettings)

    @field_validator("signup_credit")
    @classmethod
    def _credit(cls, value: str) -> str:
        return _usd(value)
