"""--web.config.file: TLS and basic auth with exporter-toolkit's YAML keys.

The same file a node_exporter or systemd_exporter takes works here, as far as
Python's ssl module can honour it; a key it cannot honour is refused by name
rather than ignored (a silently weaker TLS setup is worse than an error).

    tls_server_config:
      cert_file: /etc/mxrc-monitor/tls.crt
      key_file: /etc/mxrc-monitor/tls.key
      client_auth_type: RequireAndVerifyClientCert   # mTLS
      client_ca_file: /etc/mxrc-monitor/ca.crt
      min_version: TLS12
    http_server_config:
      headers: {X-Frame-Options: deny}
    basic_auth_users:
      prometheus: $2y$10$...                          # bcrypt (htpasswd -nBC 10 "" | tr -d ':\\n')

The file is read at start: restart mxrc-monitor after changing it or the
certificates it names.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import hashlib
import ssl
import threading
from pathlib import Path

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
               "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
# Known to exporter-toolkit, not expressible with Python's ssl module.
TLS_UNSUPPORTED = {"cipher_suites", "curve_preferences", "prefer_server_cipher_suites", "client_allowed_sans",
                   "cert", "key"}
TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
HTTP_KEYS = {"headers", "http2"}
CACHE_SIZE = 64


class WebConfigError(Exception):
    """What is wrong in the file, naming the key and the fix."""


@dataclasses.dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = dataclasses.field(default_factory=dict)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def load(path: Path) -> WebConfig:
    try:
        import yaml
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise WebConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise WebConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse(data if data is not None else {}, Path(path).parent, str(path))


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{where}: must be a mapping of keys to values")
    return value


def _unknown(found: dict, allowed: set, where: str) -> None:
    extra = sorted(set(found) - allowed)
    if extra:
        raise WebConfigError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(allowed))})")


def parse(data, base: Path, name: str) -> WebConfig:
    data = _mapping(data, name)
    _unknown(data, TOP_KEYS, name)
    config = WebConfig()
    tls = _mapping(data.get("tls_server_config"), f"{name}: tls_server_config")
    if tls:
        config.ssl_context = tls_context(tls, base, f"{name}: tls_server_config")
    http = _mapping(data.get("http_server_config"), f"{name}: http_server_config")
    _unknown(http, HTTP_KEYS, f"{name}: http_server_config")
    config.headers = {str(k): str(v) for k, v in _mapping(http.get("headers"), f"{name}: headers").items()}
    for user, hashed in _mapping(data.get("basic_auth_users"), f"{name}: basic_auth_users").items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise WebConfigError(f"{name}: basic_auth_users: {user!r} needs a bcrypt hash ($2y$...), "
                                 "e.g. from htpasswd -nBC 10 \"\" | tr -d ':\\n'; never the password itself")
        config.users[str(user)] = hashed.encode()
    if config.users:
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            raise WebConfigError(f"{name}: basic_auth_users needs python3-bcrypt; "
                                 "apt install python3-bcrypt") \
                from None
    return config


def tls_context(tls: dict, base: Path, where: str) -> ssl.SSLContext:
    unsupported = sorted(set(tls) & TLS_UNSUPPORTED)
    if unsupported:
        raise WebConfigError(f"{where}: {unsupported[0]} is not supported by mxrc-monitor (Python's ssl "
                             "chooses ciphers and curves from the system's OpenSSL policy); remove it")
    _unknown(tls, TLS_KEYS, where)
    for key in ("cert_file", "key_file"):
        if not tls.get(key):
            raise WebConfigError(f"{where}: {key} is required for TLS")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _version(tls.get("min_version", "TLS12"), "min_version", where)
    if tls.get("max_version"):
        ctx.maximum_version = _version(tls["max_version"], "max_version", where)
    cert, key = (base / tls["cert_file"], base / tls["key_file"])
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(f"{where}: cannot load cert_file {cert} / key_file {key}: {exc}") from None
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth == "RequireAnyClientCert":
        raise WebConfigError(f"{where}: client_auth_type RequireAnyClientCert (a certificate nobody checks) "
                             "is not supported; use RequireAndVerifyClientCert with client_ca_file")
    if auth not in CLIENT_AUTH:
        raise WebConfigError(f"{where}: client_auth_type {auth!r} is not one of {', '.join(CLIENT_AUTH)}")
    ctx.verify_mode = CLIENT_AUTH[auth]
    if ctx.verify_mode != ssl.CERT_NONE:
        if not tls.get("client_ca_file"):
            raise WebConfigError(f"{where}: client_auth_type {auth} needs client_ca_file")
        try:
            ctx.load_verify_locations(base / tls["client_ca_file"])
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"{where}: cannot load client_ca_file {tls['client_ca_file']}: "
                                 f"{exc}") from None
    return ctx


def _version(value, key: str, where: str) -> ssl.TLSVersion:
    if value not in TLS_VERSIONS:
        raise WebConfigError(f"{where}: {key} {value!r} is not one of {', '.join(TLS_VERSIONS)}")
    return TLS_VERSIONS[value]


class BasicAuth:
    """Checks Authorization: Basic against bcrypt hashes.

    bcrypt costs ~50-100 ms by design, so a verdict is remembered per user
    and password digest (as exporter-toolkit does), and the server runs
    check() off its event loop.
    """

    def __init__(self, users: dict[str, bytes]):
        self.users = users
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def credentials(headers: dict) -> tuple[str, bytes] | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return None
        return (user.decode("utf-8", "replace"), password) if sep else None

    def _key(self, headers: dict):
        found = self.credentials(headers)
        if found is None:
            return None
        user, password = found
        return user, hashlib.sha256(password).digest()

    def cached(self, headers: dict) -> bool | None:
        """The verdict without bcrypt when it is known (no or bad header: False)."""
        key = self._key(headers)
        if key is None or key[0] not in self.users:
            return False
        with self._lock:
            return self._cache.get(key)

    def check(self, headers: dict) -> bool:
        import bcrypt
        user, password = self.credentials(headers) or ("", b"")
        hashed = self.users.get(user)
        ok = hashed is not None and bcrypt.checkpw(password, hashed)
        key = self._key(headers)
        if key is not None:
            with self._lock:
                self._cache[key] = ok
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return ok
