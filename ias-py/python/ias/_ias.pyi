# Hand-written stubs of the extension module `ias._ias` (ias-py/src).
# Keep them in step with the Rust code: scripts/test runs mypy's stubtest on them.

import datetime
import os
from collections.abc import Awaitable, Iterator
from types import GenericAlias, TracebackType
from typing import Any, ClassVar, Generic, Literal, SupportsIndex, TypeVar, final, overload

__version__: str
__all__ = [
    "ApiKey",
    "AuditEntry",
    "AuditHead",
    "AuditVerification",
    "BlockedUser",
    "BudgetExceeded",
    "ChainBreak",
    "ConflictError",
    "CreatedKey",
    "DailyUsage",
    "DatabaseUrlError",
    "Decision",
    "FieldChange",
    "Forecast",
    "GitopsPlan",
    "GitopsSettings",
    "GitopsState",
    "Governor",
    "GovernorClosedError",
    "GovernorStats",
    "IasError",
    "InvalidInputError",
    "InvalidKey",
    "ModelChange",
    "ModelNotAllowed",
    "ModelUsage",
    "NotFoundError",
    "Organization",
    "Page",
    "PasswordHashingError",
    "PermissionDeniedError",
    "Principal",
    "RateLimits",
    "RequestDenied",
    "Reservation",
    "Settlement",
    "StoreError",
    "UnavailableError",
    "UnsupportedError",
    "UsageReport",
    "User",
    "UserUsage",
    "WeakPasswordError",
    "__version__",
    "_close_all",
    "is_well_formed_key",
    "open",
    "open_async",
]

_Durability = Literal["write_behind", "strict"]
_Role = Literal["system_admin", "org_admin", "member"]
_DriftPolicy = Literal["report", "heal"]
_SyncStatus = Literal["synced", "out_of_sync", "error", "suspended"]
_T = TypeVar("_T")

def open(
    url: str,
    *,
    acting_as: str | None = None,
    durability: _Durability = "write_behind",
    break_glass: bool = False,
) -> Governor:
    """Opens a governor over the database at `url` (`sqlite:///PATH`, `sqlite::memory:`, `postgres://…`)."""

def open_async(
    url: str,
    *,
    acting_as: str | None = None,
    durability: _Durability = "write_behind",
    break_glass: bool = False,
) -> Awaitable[Governor]:
    """`open` as an awaitable."""

def is_well_formed_key(key: str) -> bool:
    """Whether `key` has the shape of an ias API key (checked without any lookup)."""

def _close_all() -> None: ...

# --- Exceptions -------------------------------------------------------------

class IasError(Exception):
    """The base class of every exception raised by ias."""

    kind: str
    retryable: bool

class InvalidInputError(IasError):
    """An input value was rejected before anything was written."""

    field: str
    value: str
    reason: str

class WeakPasswordError(InvalidInputError):
    """A new password breaks complexity rules; `rules` names each one."""

    rules: list[str]

class DatabaseUrlError(InvalidInputError):
    """A database URL could not be understood or opened."""

    url: str
    reason: str

class NotFoundError(IasError):
    """The named organization, user, key or reservation does not exist."""

    entity: str
    key: str

class ConflictError(IasError):
    """The change conflicts with what is already stored."""

    entity: str
    key: str
    reason: str
    repo_url: str
    """For a field an organization's GitOps file owns: the repository (absent otherwise)."""
    commit: str
    """For a GitOps-owned field: the commit last applied, `""` before the first apply."""

class PermissionDeniedError(IasError):
    """The acting user's role lacks the permission the operation needs."""

    actor: str
    permission: str
    target: str

class PasswordHashingError(IasError):
    """Hashing a password failed for a reason other than the password."""

    reason: str

class UnsupportedError(IasError):
    """The operation is not supported by this build or store."""

class UnavailableError(IasError):
    """The store could not be reached; retrying later may succeed."""

    backend: str

class StoreError(IasError):
    """The store failed in a way that retrying will not fix."""

    backend: str

class GovernorClosedError(IasError):
    """The governor was closed; open a new one."""

class RequestDenied(IasError):
    """A denied decision raised by `Decision.raise_for_denial()`."""

    decision: Decision
    reason: str
    status_code: int
    retry_after: int | None
    message: str

class InvalidKey(RequestDenied):
    """The API key is malformed, unknown, expired or revoked (HTTP 401)."""

class ModelNotAllowed(RequestDenied):
    """The organization may not call the model (HTTP 403)."""

class BudgetExceeded(RequestDenied):
    """A monthly budget, user limit or rate limit cannot cover the request (HTTP 429)."""

# --- Pages -------------------------------------------------------------------

@final
class Page(Generic[_T]):
    """One page of a list, and where the next one starts.

    Reads like a list of its items (`len`, iteration, indexing, `==` with a
    list). Pass `next_after` as `after=` to the same call for the next page.
    """

    @property
    def items(self) -> list[_T]:
        """The items of this page, in the list's order (a new list on each read)."""
    @property
    def next_after(self) -> str | None:
        """Where the next page starts (give it as `after=`); `None` on the last page."""
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, key: SupportsIndex, /) -> _T: ...
    @overload
    def __getitem__(self, key: slice, /) -> list[_T]: ...
    def __iter__(self) -> Iterator[_T]: ...
    @classmethod
    def __class_getitem__(cls, key: Any) -> GenericAlias: ...
    def __eq__(self, value: object, /) -> bool:
        """Equal to a page with the same items and cursor, or to a list of the same items."""
    __hash__: ClassVar[None]  # type: ignore[assignment]

# --- The hot path -------------------------------------------------------------

@final
class Governor:
    """Decides requests, records their usage, and runs admin operations."""

    @property
    def actor(self) -> str:
        """Who admin calls act as: `operator:<name>` or `user:<email>`."""
    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
    @property
    def break_glass(self) -> bool:
        """Whether admin calls use break-glass (see `with_break_glass`)."""

    def authorize(self, key: str, model: str, estimated_tokens: int) -> Decision:
        """Decides a request and, when it is allowed, reserves `estimated_tokens`."""
    def authorize_async(
        self, key: str, model: str, estimated_tokens: int
    ) -> Awaitable[Decision]: ...
    def check(self, key: str, model: str, estimated_tokens: int) -> Decision:
        """Decides a request like `authorize` without reserving anything (a dry run)."""
    def check_async(self, key: str, model: str, estimated_tokens: int) -> Awaitable[Decision]: ...
    def settle(self, reservation: Reservation, tokens: int) -> Settlement:
        """Charges the real usage of an allowed request and frees its reservation."""
    def settle_async(self, reservation: Reservation, tokens: int) -> Awaitable[Settlement]: ...
    def release(self, reservation: Reservation) -> None:
        """Frees a reservation without charging, for a request that never reached the model."""
    def release_async(self, reservation: Reservation) -> Awaitable[None]: ...
    def flush(self) -> None:
        """Writes every settled charge and usage event to the store now."""
    def flush_async(self) -> Awaitable[None]: ...
    def refresh(self) -> int:
        """Reads the store's change feed now; returns how many changes were applied."""
    def refresh_async(self) -> Awaitable[int]: ...
    def stats(self) -> GovernorStats:
        """Counters about this governor, for metrics."""
    def acting_as(self, email: str) -> Governor:
        """A view of this governor whose admin calls act as the user with `email`."""
    def acting_as_async(self, email: str) -> Awaitable[Governor]: ...
    def with_break_glass(self) -> Governor:
        """A view of this governor whose admin calls may change fields owned by GitOps."""
    def close(self) -> None:
        """Stops maintenance and writes all usage; the governor refuses calls afterwards."""
    def close_async(self) -> Awaitable[None]: ...
    def __enter__(self) -> Governor: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
    def __aenter__(self) -> Awaitable[Governor]: ...
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None]: ...

    # Organizations
    def create_org(
        self, slug: str, monthly_token_budget: int, timezone: str = "UTC"
    ) -> Organization:
        """Creates an organization with a monthly token budget."""
    def create_org_async(
        self, slug: str, monthly_token_budget: int, timezone: str = "UTC"
    ) -> Awaitable[Organization]: ...
    def set_org_budget(
        self, slug: str, *, monthly_token_budget: int | None = None, timezone: str | None = None
    ) -> Organization:
        """Changes an organization's monthly token budget, its time zone, or both."""
    def set_org_budget_async(
        self, slug: str, *, monthly_token_budget: int | None = None, timezone: str | None = None
    ) -> Awaitable[Organization]: ...
    def org(self, slug: str) -> Organization:
        """The organization with this slug."""
    def org_async(self, slug: str) -> Awaitable[Organization]: ...
    def list_orgs(self, *, limit: int = 100, after: str | None = None) -> Page[Organization]:
        """A page of the organizations the actor may read, by id."""
    def list_orgs_async(
        self, *, limit: int = 100, after: str | None = None
    ) -> Awaitable[Page[Organization]]: ...

    # Users
    def create_user(
        self,
        org: str,
        email: str,
        role: _Role = "member",
        monthly_token_limit: int | None = None,
    ) -> User:
        """Creates a user in an organization."""
    def create_user_async(
        self,
        org: str,
        email: str,
        role: _Role = "member",
        monthly_token_limit: int | None = None,
    ) -> Awaitable[User]: ...
    def user(self, email: str) -> User:
        """The user with this email."""
    def user_async(self, email: str) -> Awaitable[User]: ...
    def list_users(
        self, org: str, *, limit: int = 100, after: str | None = None
    ) -> Page[User]:
        """A page of the users of an organization, by id."""
    def list_users_async(
        self, org: str, *, limit: int = 100, after: str | None = None
    ) -> Awaitable[Page[User]]: ...
    def set_user_limit(self, email: str, monthly_token_limit: int | None) -> User:
        """Sets a user's own monthly token limit; `None` leaves only the org budget."""
    def set_user_limit_async(
        self, email: str, monthly_token_limit: int | None
    ) -> Awaitable[User]: ...
    def reset_password(self, user: int | str, new_password: str) -> User:
        """Sets a user's password (by id or email); system admins only."""
    def reset_password_async(self, user: int | str, new_password: str) -> Awaitable[User]: ...
    def verify_password(self, user: int | str, password: str) -> bool:
        """Whether `password` is the user's password (by id or email), as a login checks it."""
    def verify_password_async(self, user: int | str, password: str) -> Awaitable[bool]: ...

    # Keys
    def create_key(
        self, email: str, expires_in: str | datetime.timedelta | None = None
    ) -> CreatedKey:
        """Creates an API key for a user; `expires_in` is such as `"30d"` or a `timedelta`."""
    def create_key_async(
        self, email: str, expires_in: str | datetime.timedelta | None = None
    ) -> Awaitable[CreatedKey]: ...
    def list_keys(
        self, email: str, *, limit: int = 100, after: str | None = None
    ) -> Page[ApiKey]:
        """A page of a user's keys, newest first, never their secrets."""
    def list_keys_async(
        self, email: str, *, limit: int = 100, after: str | None = None
    ) -> Awaitable[Page[ApiKey]]: ...
    def revoke_key(self, key_id: int) -> ApiKey:
        """Revokes a key by id; it is refused from then on."""
    def revoke_key_async(self, key_id: int) -> Awaitable[ApiKey]: ...

    # Models
    def allow_model(self, org: str, model: str) -> ModelChange:
        """Allows a model name or pattern (`name`, `prefix/*` or `*`) for an organization."""
    def allow_model_async(self, org: str, model: str) -> Awaitable[ModelChange]: ...
    def deny_model(self, org: str, model: str) -> ModelChange:
        """Removes a model name or pattern from an organization's allowed list."""
    def deny_model_async(self, org: str, model: str) -> Awaitable[ModelChange]: ...
    def list_models(
        self, org: str, *, limit: int = 100, after: str | None = None
    ) -> Page[str]:
        """A page of an organization's allowed model names and patterns, sorted."""
    def list_models_async(
        self, org: str, *, limit: int = 100, after: str | None = None
    ) -> Awaitable[Page[str]]: ...

    # Rate limits
    def set_rate_limits(
        self,
        org: str,
        *,
        email: str | None = None,
        key_id: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> bool:
        """Sets (replaces) the per-minute limits of an org, a user or a key."""
    def set_rate_limits_async(
        self,
        org: str,
        *,
        email: str | None = None,
        key_id: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> Awaitable[bool]: ...
    def rate_limits(
        self, org: str, *, email: str | None = None, key_id: int | None = None
    ) -> RateLimits:
        """The per-minute limits set on an org, a user or a key."""
    def rate_limits_async(
        self, org: str, *, email: str | None = None, key_id: int | None = None
    ) -> Awaitable[RateLimits]: ...

    # Usage
    def usage_forecast(self, org: str, email: str | None = None) -> Forecast:
        """When the budget (or the user's own limit) runs out at the pace of the last 7 days."""
    def usage_forecast_async(self, org: str, email: str | None = None) -> Awaitable[Forecast]: ...
    def usage(
        self,
        org: str,
        email: str | None = None,
        *,
        limit: int = 100,
        after: str | None = None,
    ) -> UsageReport:
        """Usage of an organization, or of one of its users, with a page of its users."""
    def usage_async(
        self,
        org: str,
        email: str | None = None,
        *,
        limit: int = 100,
        after: str | None = None,
    ) -> Awaitable[UsageReport]: ...
    def daily_usage(
        self,
        org: str,
        email: str | None = None,
        *,
        start: datetime.date | str | None = None,
        end: datetime.date | str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page[DailyUsage]:
        """A page of usage per local day and model, from `start` to `end`."""
    def daily_usage_async(
        self,
        org: str,
        email: str | None = None,
        *,
        start: datetime.date | str | None = None,
        end: datetime.date | str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Awaitable[Page[DailyUsage]]: ...

    # Audit
    def audit_log(
        self,
        org: str | None = None,
        *,
        since: datetime.datetime | None = None,
        action: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page[AuditEntry]:
        """A page of audit entries, newest first, of one organization or of all."""
    def audit_log_async(
        self,
        org: str | None = None,
        *,
        since: datetime.datetime | None = None,
        action: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Awaitable[Page[AuditEntry]]: ...
    def verify_audit(self, anchor: AuditHead | None = None) -> AuditVerification:
        """Walks the whole audit chain and names the first entry changed or removed."""
    def verify_audit_async(
        self, anchor: AuditHead | None = None
    ) -> Awaitable[AuditVerification]: ...

    # GitOps
    def gitops_enable(
        self,
        org: str,
        repo: str,
        ref: str = "main",
        path: str = "ias.yaml",
        credentials: str | None = None,
        prune: bool = False,
        drift: _DriftPolicy = "report",
        max_removal: int = 25,
        allow_empty: bool = False,
    ) -> GitopsState:
        """Declares an organization in a file in a Git repository, or changes its settings."""
    def gitops_enable_async(
        self,
        org: str,
        repo: str,
        ref: str = "main",
        path: str = "ias.yaml",
        credentials: str | None = None,
        prune: bool = False,
        drift: _DriftPolicy = "report",
        max_removal: int = 25,
        allow_empty: bool = False,
    ) -> Awaitable[GitopsState]: ...
    def gitops_disable(self, org: str) -> bool:
        """Stops GitOps for an organization; returns `False` when it was not enabled."""
    def gitops_disable_async(self, org: str) -> Awaitable[bool]: ...
    def gitops_suspend(self, org: str) -> bool:
        """Keeps fetching and reporting on an organization, but applies nothing."""
    def gitops_suspend_async(self, org: str) -> Awaitable[bool]: ...
    def gitops_resume(self, org: str) -> bool:
        """Applies again after `gitops_suspend`; returns `False` when it was not suspended."""
    def gitops_resume_async(self, org: str) -> Awaitable[bool]: ...
    @overload
    def gitops_status(
        self, org: str, *, limit: int = 100, after: str | None = None
    ) -> GitopsState:
        """One organization's GitOps state, or a page of every one the actor may read."""
    @overload
    def gitops_status(
        self, org: None = None, *, limit: int = 100, after: str | None = None
    ) -> Page[GitopsState]: ...
    @overload
    def gitops_status_async(
        self, org: str, *, limit: int = 100, after: str | None = None
    ) -> Awaitable[GitopsState]: ...
    @overload
    def gitops_status_async(
        self, org: None = None, *, limit: int = 100, after: str | None = None
    ) -> Awaitable[Page[GitopsState]]: ...
    def gitops_plan(self, org: str, file: str | os.PathLike[str] | None = None) -> GitopsPlan:
        """What the file at the ref (or the local `file`) would change; writes nothing."""
    def gitops_plan_async(
        self, org: str, file: str | os.PathLike[str] | None = None
    ) -> Awaitable[GitopsPlan]: ...
    def gitops_drift(self, org: str) -> list[FieldChange]:
        """Out-of-band changes to Git-owned fields since the last apply."""
    def gitops_drift_async(self, org: str) -> Awaitable[list[FieldChange]]: ...
    def gitops_sync(self, org: str) -> GitopsState:
        """Reconciles an organization now, whatever its back-off, and returns its state."""
    def gitops_sync_async(self, org: str) -> Awaitable[GitopsState]: ...

@final
class Decision:
    """The answer to "may this request go ahead?"; a value, never an exception."""

    @property
    def allowed(self) -> bool: ...
    @property
    def reason(
        self,
    ) -> (
        Literal[
            "invalid_key",
            "expired_key",
            "revoked_key",
            "model_not_allowed",
            "org_budget_exhausted",
            "user_limit_exhausted",
            "rate_limited",
        ]
        | None
    ): ...
    @property
    def category(self) -> Literal["unauthenticated", "forbidden", "limit_exceeded"] | None: ...
    @property
    def status_code(self) -> int: ...
    @property
    def message(self) -> str | None: ...
    @property
    def model(self) -> str: ...
    @property
    def requested(self) -> int: ...
    @property
    def principal(self) -> Principal | None: ...
    @property
    def scope(self) -> Literal["org", "user", "key"] | None: ...
    @property
    def kind(
        self,
    ) -> Literal["monthly_tokens", "requests_per_minute", "tokens_per_minute"] | None: ...
    @property
    def limit(self) -> int | None: ...
    @property
    def used(self) -> int | None: ...
    @property
    def reserved(self) -> int | None: ...
    @property
    def remaining(self) -> int | None: ...
    @property
    def period(self) -> str | None: ...
    @property
    def reset_at(self) -> datetime.datetime | None: ...
    @property
    def retry_after(self) -> int | None: ...
    @property
    def reservation(self) -> Reservation | None: ...
    def __bool__(self) -> bool: ...
    def raise_for_denial(self) -> None:
        """Raises `InvalidKey` (401), `ModelNotAllowed` (403) or `BudgetExceeded` (429) if denied."""
    def settle(self, tokens: int) -> Settlement:
        """Charges the real usage of this allowed request."""
    def settle_async(self, tokens: int) -> Awaitable[Settlement]: ...
    def release(self) -> None:
        """Frees this request's reservation without charging."""
    def release_async(self) -> Awaitable[None]: ...
    def __enter__(self) -> Decision: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
    def __aenter__(self) -> Awaitable[Decision]: ...
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None]: ...

@final
class Reservation:
    """Tokens held for an allowed request until it is settled or released."""

    @property
    def id(self) -> int: ...
    @property
    def org_id(self) -> int: ...
    @property
    def user_id(self) -> int: ...
    @property
    def key_id(self) -> int: ...
    @property
    def model(self) -> str: ...
    @property
    def period(self) -> str: ...
    @property
    def tokens(self) -> int: ...
    @property
    def expires_at(self) -> datetime.datetime: ...
    @property
    def open(self) -> bool: ...

@final
class Settlement:
    """What a settle charged."""

    @property
    def reserved(self) -> int: ...
    @property
    def charged(self) -> int: ...

@final
class Principal:
    """Who a key belongs to."""

    @property
    def org_id(self) -> int: ...
    @property
    def org_slug(self) -> str: ...
    @property
    def user_id(self) -> int: ...
    @property
    def email(self) -> str: ...
    @property
    def key_id(self) -> int: ...

@final
class GovernorStats:
    """Counters about a governor, for metrics."""

    @property
    def keys(self) -> int: ...
    @property
    def users(self) -> int: ...
    @property
    def orgs(self) -> int: ...
    @property
    def open_reservations(self) -> int: ...
    @property
    def queued_events(self) -> int: ...
    @property
    def expired_reservations(self) -> int: ...
    @property
    def syncs(self) -> int: ...
    @property
    def failed_syncs(self) -> int: ...

# --- Admin records ------------------------------------------------------------

@final
class Organization:
    """An organization: the unit that owns a monthly token budget."""

    @property
    def id(self) -> int: ...
    @property
    def slug(self) -> str: ...
    @property
    def monthly_token_budget(self) -> int: ...
    @property
    def timezone(self) -> str: ...
    @property
    def managed_by(self) -> Literal["api", "gitops"]: ...
    @property
    def created_at(self) -> datetime.datetime: ...

@final
class User:
    """A person or service account that belongs to one organization."""

    @property
    def id(self) -> int: ...
    @property
    def org_id(self) -> int: ...
    @property
    def email(self) -> str: ...
    @property
    def role(self) -> _Role: ...
    @property
    def monthly_token_limit(self) -> int | None: ...
    @property
    def managed_by(self) -> Literal["api", "gitops"]: ...
    @property
    def created_at(self) -> datetime.datetime: ...

@final
class ApiKey:
    """The stored, non-secret half of an API key."""

    @property
    def id(self) -> int: ...
    @property
    def user_id(self) -> int: ...
    @property
    def org_id(self) -> int: ...
    @property
    def prefix(self) -> str: ...
    @property
    def created_at(self) -> datetime.datetime: ...
    @property
    def expires_at(self) -> datetime.datetime | None: ...
    @property
    def revoked_at(self) -> datetime.datetime | None: ...
    @property
    def status(self) -> Literal["active", "expired", "revoked"]: ...

@final
class CreatedKey:
    """A key just created: the only time its secret is available."""

    @property
    def key(self) -> ApiKey: ...
    @property
    def secret(self) -> str: ...

@final
class ModelChange:
    """A change in an organization's allowed models."""

    @property
    def model(self) -> str: ...
    @property
    def changed(self) -> bool: ...

@final
class RateLimits:
    """The per-minute limits of one organization, user or key; `None`: no limit."""

    @property
    def rpm(self) -> int | None: ...
    @property
    def tpm(self) -> int | None: ...

@final
class UsageReport:
    """Usage of an organization (or one of its users) in the current period."""

    @property
    def period(self) -> str: ...
    @property
    def monthly_token_budget(self) -> int: ...
    @property
    def used(self) -> int: ...
    @property
    def reserved(self) -> int: ...
    @property
    def remaining(self) -> int: ...
    @property
    def users(self) -> list[UserUsage]: ...
    @property
    def models(self) -> list[ModelUsage]: ...
    @property
    def next_after(self) -> str | None:
        """Where the next page of users starts (give it as `after=`); `None` on the last."""

@final
class UserUsage:
    """One user's usage in a period."""

    @property
    def user_id(self) -> int: ...
    @property
    def email(self) -> str: ...
    @property
    def monthly_token_limit(self) -> int | None: ...
    @property
    def used(self) -> int: ...
    @property
    def reserved(self) -> int: ...
    @property
    def requests(self) -> int: ...

@final
class ModelUsage:
    """One model's usage in a period."""

    @property
    def model(self) -> str: ...
    @property
    def tokens(self) -> int: ...
    @property
    def requests(self) -> int: ...

@final
class Forecast:
    """A burn-rate forecast: the pace of the last 7 days, and when the limit runs out at it."""

    @property
    def period(self) -> str: ...
    @property
    def limit(self) -> int | None: ...
    @property
    def used(self) -> int: ...
    @property
    def reserved(self) -> int: ...
    @property
    def remaining(self) -> int | None: ...
    @property
    def pace_since(self) -> datetime.datetime: ...
    @property
    def tokens_per_day(self) -> int: ...
    @property
    def projected_tokens(self) -> int: ...
    @property
    def exhausted_at(self) -> datetime.datetime | None: ...
    @property
    def resets_at(self) -> datetime.datetime: ...

@final
class DailyUsage:
    """Usage of one model on one local day of the organization."""

    @property
    def day(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def tokens(self) -> int: ...
    @property
    def requests(self) -> int: ...

@final
class AuditEntry:
    """One entry of the append-only, hash-chained audit log."""

    @property
    def id(self) -> int: ...
    @property
    def at(self) -> datetime.datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def source(self) -> Literal["cli", "api", "gitops", "library"]: ...
    @property
    def action(self) -> str: ...
    @property
    def org_id(self) -> int | None: ...
    @property
    def target(self) -> str: ...
    @property
    def target_id(self) -> int | None: ...
    @property
    def changes(self) -> dict[str, Any]: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...

@final
class AuditHead:
    """An entry's id and hash: the newest entry verified, or an anchor noted earlier."""

    def __new__(cls, id: int, hash: str) -> AuditHead: ...
    @property
    def id(self) -> int: ...
    @property
    def hash(self) -> str: ...

@final
class ChainBreak:
    """The first entry found changed or removed."""

    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> Literal["changed", "removed"]: ...
    @property
    def reason(self) -> str: ...

@final
class AuditVerification:
    """The outcome of verifying the audit chain: a value, whether intact or not."""

    @property
    def checked(self) -> int: ...
    @property
    def head(self) -> AuditHead | None: ...
    @property
    def broken(self) -> ChainBreak | None: ...
    @property
    def intact(self) -> bool: ...

# --- GitOps -------------------------------------------------------------------

@final
class GitopsSettings:
    """Where an organization's file lives and how it is applied."""

    @property
    def org(self) -> str: ...
    @property
    def repo(self) -> str: ...
    @property
    def ref(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def credentials(self) -> str | None: ...
    @property
    def prune(self) -> bool: ...
    @property
    def drift(self) -> _DriftPolicy: ...
    @property
    def max_removal(self) -> int: ...
    @property
    def allow_empty(self) -> bool: ...
    @property
    def suspended(self) -> bool: ...

@final
class GitopsState:
    """An organization's GitOps settings and where it stands against its repository."""

    @property
    def org(self) -> str: ...
    @property
    def settings(self) -> GitopsSettings: ...
    @property
    def status(self) -> _SyncStatus: ...
    @property
    def synced(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def last_fetched_commit(self) -> str | None: ...
    @property
    def last_attempted_commit(self) -> str | None: ...
    @property
    def last_applied_commit(self) -> str | None: ...
    @property
    def last_attempt_at(self) -> datetime.datetime | None: ...
    @property
    def last_success_at(self) -> datetime.datetime | None: ...
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def next_retry_at(self) -> datetime.datetime | None: ...
    @property
    def drift_count(self) -> int: ...
    @property
    def drift(self) -> list[FieldChange]: ...
    @property
    def added_users(self) -> list[str]: ...
    @property
    def inventory(self) -> dict[str, Any] | None: ...
    @property
    def enabled_at(self) -> datetime.datetime: ...

@final
class FieldChange:
    """One field-level difference between a file and the store."""

    @property
    def op(self) -> Literal["add", "change", "remove"]: ...
    @property
    def target(self) -> str: ...
    @property
    def field(self) -> str: ...
    @property
    def before(self) -> Any: ...
    @property
    def after(self) -> Any: ...

@final
class GitopsPlan:
    """What applying a file would change."""

    @property
    def org(self) -> str: ...
    @property
    def commit(self) -> str | None: ...
    @property
    def changes(self) -> list[FieldChange]: ...
    @property
    def has_changes(self) -> bool: ...
    @property
    def kept(self) -> list[str]: ...
    @property
    def blocked(self) -> list[BlockedUser]: ...
    @property
    def refused(self) -> str | None: ...

@final
class BlockedUser:
    """A user (or the organization) a lowered limit would block at once."""

    @property
    def target(self) -> str: ...
    @property
    def used(self) -> int: ...
    @property
    def limit(self) -> int: ...
