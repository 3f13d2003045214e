"""OAuth2 for accounts that log in with tokens: the token store, the per-account token manager,
the login flows. authlib (the OAuth2 library) is imported in `mailrules.oauth.client` only.

The names below are loaded on first use (PEP 562): a configuration without an OAuth2 account
never imports authlib and requests (a sixth of a second at every start)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailrules.oauth.client import AuthorizationRequest, ClientSettings, DeviceAuthorization, TokenClient
    from mailrules.oauth.errors import (
        InvalidGrant,
        LoginRequired,
        OAuthError,
        TokenEndpointUnavailable,
        TokenStoreError,
    )
    from mailrules.oauth.flows import login_authorization_code, login_client_credentials, login_device_code
    from mailrules.oauth.manager import TokenManager
    from mailrules.oauth.store import Tokens, TokenStore

_WHERE = {
    "AuthorizationRequest": "client",
    "ClientSettings": "client",
    "DeviceAuthorization": "client",
    "TokenClient": "client",
    "InvalidGrant": "errors",
    "LoginRequired": "errors",
    "OAuthError": "errors",
    "TokenEndpointUnavailable": "errors",
    "TokenStoreError": "errors",
    "login_authorization_code": "flows",
    "login_client_credentials": "flows",
    "login_device_code": "flows",
    "TokenManager": "manager",
    "TokenStore": "store",
    "Tokens": "store",
}

__all__ = [
    "AuthorizationRequest",
    "ClientSettings",
    "DeviceAuthorization",
    "InvalidGrant",
    "LoginRequired",
    "OAuthError",
    "TokenClient",
    "TokenEndpointUnavailable",
    "TokenManager",
    "TokenStore",
    "TokenStoreError",
    "Tokens",
    "login_authorization_code",
    "login_client_credentials",
    "login_device_code",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
