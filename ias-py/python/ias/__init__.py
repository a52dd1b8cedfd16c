"""Governance for LLM API gateways, embedded in the gateway's own process.

``ias.open(url)`` returns a :class:`Governor` that decides every request from
memory (``authorize``, ``check``), charges what it really used (``settle``),
and runs the admin operations of ``ias-admin`` (organizations, users, keys,
models, limits, usage, audit). Denials are values; errors are exceptions
derived from :class:`IasError`. Every call that may reach the store releases
the GIL; each has an ``_async`` twin for asyncio servers.
"""

from __future__ import annotations

import atexit

from ias._ias import (
    ApiKey,
    AuditEntry,
    AuditHead,
    AuditVerification,
    BudgetExceeded,
    ChainBreak,
    ConflictError,
    CreatedKey,
    DailyUsage,
    DatabaseUrlError,
    Decision,
    Governor,
    GovernorClosedError,
    GovernorStats,
    IasError,
    InvalidInputError,
    InvalidKey,
    ModelChange,
    ModelNotAllowed,
    ModelUsage,
    NotFoundError,
    Organization,
    PasswordHashingError,
    PermissionDeniedError,
    Principal,
    RateLimits,
    RequestDenied,
    Reservation,
    Settlement,
    StoreError,
    UnavailableError,
    UnsupportedError,
    UsageReport,
    User,
    UserUsage,
    WeakPasswordError,
    __version__,
    _close_all,
    is_well_formed_key,
    open,
    open_async,
)

# Usage is written behind: every governor still open at exit writes the rest.
atexit.register(_close_all)

__all__ = [
    "ApiKey",
    "AuditEntry",
    "AuditHead",
    "AuditVerification",
    "BudgetExceeded",
    "ChainBreak",
    "ConflictError",
    "CreatedKey",
    "DailyUsage",
    "DatabaseUrlError",
    "Decision",
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
    "is_well_formed_key",
    "open",
    "open_async",
]
