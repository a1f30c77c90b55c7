"""--web.config.file: exporter-toolkit's keys, TLS (min version, mTLS) and bcrypt basic auth
on a real socket."""

import base64
import socket
import ssl
from pathlib import Path

import bcrypt
import pytest
from test_monitor_serve import OneGauge, read_response

from mxrc_monitor import serve, webconfig
from mxrc_monitor.serve import Exposition, Server

TLS = Path(__file__).parent / "fixtures" / "tls"
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")  # htpasswd's prefix


def write(tmp_path, text):
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def tls_yaml(extra=""):
    return (f"tls_server_config:\n  cert_file: {TLS}/server.crt\n  key_file: {TLS}/server.key\n{extra}")


@pytest.fixture
def serving(request):
    servers = []

    def _start(config):
        snapshot = object()
        server = Server(Exposition([OneGauge()], lambda: snapshot), [serve.listen("127.0.0.1", 0)],
                        ssl_context=config.ssl_context, headers=config.headers,
                        auth=webconfig.BasicAuth(config.users) if config.users else None)
        server.start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()
        server.sockets[0].close()


def client_context(cert=False, maximum=None):
    ctx = ssl.create_default_context(cafile=TLS / "ca.crt")
    if cert:
        ctx.load_cert_chain(TLS / "client.crt", TLS / "client.key")
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def https_get(server, ctx, headers=""):
    with socket.create_connection(serve.probe_address(server.sockets[0]), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
            return read_response(sock)


def basic(user, password):
    return "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() + "\r\n"


def test_tls_with_basic_auth_serves_only_the_right_password(tmp_path, serving):
    config = webconfig.load(write(tmp_path, tls_yaml() + f"basic_auth_users:\n  prometheus: '{HASH}'\n"
                                  "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"))
    server = serving(config)
    status, headers, body = https_get(server, client_context(), basic("prometheus", "s3cret"))
    assert status.endswith("200 OK") and b"systemd_unit_state" in body
    assert headers["x-frame-options"] == "deny"
    for wrong in (basic("prometheus", "nope"), basic("root", "s3cret"), "", "Authorization: Basic !!!\r\n"):
        status, headers, _ = https_get(server, client_context(), wrong)
        assert status.endswith("401 Unauthorized") and headers["www-authenticate"].startswith("Basic")


def test_a_known_password_is_not_hashed_again():
    auth = webconfig.BasicAuth({"p": HASH.encode()})
    headers = {"authorization": basic("p", "s3cret").split(": ", 1)[1].strip()}
    assert auth.cached(headers) is None and auth.check(headers) and auth.cached(headers) is True


def test_min_version_refuses_older_clients(tmp_path, serving):
    server = serving(webconfig.load(write(tmp_path, tls_yaml("  min_version: TLS13\n"))))
    with pytest.raises(ssl.SSLError):
        https_get(server, client_context(maximum=ssl.TLSVersion.TLSv1_2))
    assert https_get(server, client_context())[0].endswith("200 OK")


def test_mutual_tls_needs_a_client_certificate_from_the_ca(tmp_path, serving):
    server = serving(webconfig.load(write(tmp_path, tls_yaml(
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {TLS}/ca.crt\n"))))
    assert https_get(server, client_context(cert=True))[0].endswith("200 OK")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(server, client_context(cert=False))


def test_the_watchdog_probe_works_through_tls(tmp_path, serving):
    server = serving(webconfig.load(write(tmp_path, tls_yaml())))
    assert serve.probe(server)


@pytest.mark.parametrize("text, message", [
    ("tls_server_config:\n  cert_file: /nope.crt\n  key_file: /nope.key\n",
     "cannot load cert_file /nope.crt"),
    (tls_yaml("  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"), "cipher_suites is not supported"),
    (tls_yaml("  min_version: TLS14\n"), "min_version 'TLS14' is not one of"),
    (tls_yaml("  client_auth_type: RequireAndVerifyClientCert\n"), "needs client_ca_file"),
    (tls_yaml("  client_auth_type: RequireAnyClientCert\n"), "RequireAnyClientCert"),
    ("basic_auth_users:\n  prometheus: plaintext\n", "'prometheus' needs a bcrypt hash"),
    ("tls_config:\n  cert_file: x\n", "unknown key 'tls_config'"),
    ("tls_server_config: [1]\n", "must be a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_a_bad_file_is_refused_naming_the_key(tmp_path, text, message):
    with pytest.raises(webconfig.WebConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        webconfig.load(write(tmp_path, text))


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(webconfig.WebConfigError, match="web.yml: cannot read it"):
        webconfig.load(tmp_path / "web.yml")


def test_main_exits_1_with_the_reason_and_no_traceback(tmp_path, monkeypatch, caplog):
    from mxrc_monitor import main
    monkeypatch.delenv("ARGS", raising=False)
    monkeypatch.setattr(main.serve_mod, "listen", lambda a, p: socket.socket())
    assert main.main(["--web.config.file", str(write(tmp_path, "tls_config: {}\n"))]) == 1
    assert "unknown key 'tls_config'" in caplog.text
