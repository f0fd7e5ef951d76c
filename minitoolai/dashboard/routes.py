"""HTTP routes of the dashboard: every page module's ROUTES, mounted as plain Starlette routes
(each page parses its own form; none belongs in the API's OpenAPI schema)."""

from __future__ import annotations

from fastapi import APIRouter

from minitoolai.dashboard.views import (
    account,
    admin_accounts,
    admin_codes,
    admin_platform,
    apidocs,
    auth,
    credits,
    home,
    keys,
    playground,
    static,
    usage,
)

router = APIRouter(redirect_slashes=False)

for _module in (home, auth, keys, usage, credits, playground, apidocs, admin_platform, admin_accounts,
                admin_codes, static, account):
    for _path, _endpoint, _methods in _module.ROUTES:
        router.add_route(_path, _endpoint, methods=_methods, include_in_schema=False)
