"""OAuth2 for accounts that log in with tokens: the token store, the per-account token manager,
the login flows. authlib (the OAuth2 library) is imported in `mailrules.oauth.client` only."""

from __future__ import annotations

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
