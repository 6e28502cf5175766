"""The server beyond loopback: the token on every endpoint (missing, wrong, as a header, in the query,
never from a cookie), no model work for a refused request, the token kept out of the access log,
HTTPS with a self-signed certificate, and the limits on concurrent streams (429)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from rnnlab.errors import ConfigError
from rnnlab.serve import MAX_BODY_BYTES, RedactToken, build_app, check_token, redact, server_config
from test_serve_api import Api, tiny_run

TOKEN = "s3cret-token_for.the~class"
GEN, SCORE = "/api/generate", "/api/score"

# every endpoint, the page and the docs included: (method, path, body, the status a good token gets)
ENDPOINTS = [
    ("GET", "/", None, 200),
    ("GET", "/docs", None, 200),
    ("GET", "/openapi.json", None, 200),
    ("GET", "/api/models", None, 200),
    ("GET", "/api/models/0", None, 200),
    ("GET", "/api/limits", None, 200),
    ("POST", GEN, {"model": "lstm", "length": 5, "seed": 1}, 200),
    ("POST", SCORE, {"model": "lstm", "text": "the cat"}, 200),
    ("POST", "/api/activations", {"model": "lstm", "text": "the cat"}, 200),
    ("POST", "/api/classify", {"model": "names", "text": "novikov"}, 200),
    ("GET", "/api/nothing", None, 404),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from conftest import TEXT, tiny_names_classifier

    d = tmp_path_factory.mktemp("serve-token")
    (d / "corpus.txt").write_text(TEXT, encoding="utf-8")
    return {"lstm": tiny_run(d / "corpus.txt", d / "lstm", "lstm", 1), "names": tiny_names_classifier(d)}


@pytest.fixture(scope="module")
def api(runs):
    a = Api(build_app([str(runs["lstm"]), str(runs["names"])], token=TOKEN))
    yield a
    a.close()


def call(api: Api, method: str, path: str, body, **kw) -> httpx.Response:
    return api.post(path, json=body, **kw) if method == "POST" else api.get(path, **kw)


@pytest.mark.parametrize("method,path,body,status", ENDPOINTS)
def test_every_endpoint_needs_the_token(api, method, path, body, status):
    missing = call(api, method, path, body)
    assert missing.status_code == 401 and "needs its token" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == "Bearer"
    for wrong in ({"headers": {"Authorization": "Bearer " + TOKEN[:-1] + "X"}},
                  {"headers": {"Authorization": "Bearer " + TOKEN + "X"}},
                  {"params": {"token": TOKEN.upper()}},
                  {"headers": {"Authorization": "Basic " + TOKEN}, "params": {"tokens": TOKEN}}):
        resp = call(api, method, path, body, **wrong)
        assert resp.status_code == 401, wrong
    # a cookie alone never counts: a browser sends cookies with requests other sites make it send
    assert call(api, method, path, body, headers={"Cookie": f"token={TOKEN}; rnnlab-token={TOKEN}"}).status_code == 401
    assert call(api, method, path, body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == status
    assert call(api, method, path, body, headers={"authorization": f"bearer {TOKEN}"}).status_code == status
    assert call(api, method, path, body, params={"token": TOKEN}).status_code == status


def test_the_docs_page_carries_its_token_to_everything_it_loads(api):
    assert api.get("/docs-assets/swagger-ui.css").status_code == 401
    docs = api.get("/docs", params={"token": TOKEN})
    assert docs.status_code == 200
    for ref in ("/openapi.json", "/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert f"{ref}?token={TOKEN}" in docs.text
        assert api.get(ref, params={"token": TOKEN}).status_code == 200
    plain = api.get("/docs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert plain.status_code == 200 and TOKEN not in plain.text  # not written into a page that did not carry it


def test_a_refused_request_does_no_model_work_and_reads_no_body(api, monkeypatch):
    import rnnlab.serve as serve_module

    calls = []
    monkeypatch.setattr(serve_module, "score_tokens", lambda *a: calls.append(a))
    monkeypatch.setattr(serve_module, "_Generation", lambda *a: calls.append(a))
    assert api.post(SCORE, json={"text": "the cat"}, params={"token": "x" * 20}).status_code == 401
    assert api.post(GEN, json={"length": 5}).status_code == 401
    # refused before the body: an oversize one is a 401, not a 413
    big = b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}"
    assert api.post(SCORE, content=big, headers={"content-type": "application/json"}).status_code == 401
    assert calls == []


def test_the_token_is_compared_in_constant_time(api, monkeypatch):
    import hmac

    import rnnlab.serve as serve_module

    seen, compare = [], hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(serve_module.hmac, "compare_digest", spy)
    assert api.get("/api/limits", params={"token": "nope-nope-nope-nope"}).status_code == 401
    assert api.get("/api/limits", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert seen == [(b"nope-nope-nope-nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


@pytest.mark.parametrize("bad", ["", "short", "x" * 15, "has space in it!!", "ünïcode-ünïcode-ü", "a/b" * 6,
                                 "x" * 257])
def test_a_bad_token_is_refused_at_startup(runs, bad):
    with pytest.raises(ConfigError, match="16 to 256 characters"):
        check_token(bad)
    with pytest.raises(ConfigError, match="token"):
        build_app([str(runs["lstm"])], token=bad)


def test_other_hosts_get_a_fresh_token_printed_in_the_url(runs):
    with pytest.warns(UserWarning, match="without TLS"):
        a = server_config([str(runs["lstm"])], host="0.0.0.0", port=8123)
    with pytest.warns(UserWarning):
        b = server_config([str(runs["lstm"])], host="0.0.0.0", port=8123)
    assert a.token and b.token and a.token != b.token and len(a.token) >= 32
    assert a.url.startswith("http://") and a.url.endswith(f":8123/?token={a.token}")
    check_token(a.token)
    local = server_config([str(runs["lstm"])], port=8123)  # loopback: no token unless one is given
    assert local.token is None and local.url == "http://127.0.0.1:8123/"
    given = server_config([str(runs["lstm"])], port=8123, token=TOKEN)
    assert given.url == f"http://127.0.0.1:8123/?token={TOKEN}"
    with pytest.raises(ConfigError, match="both certfile and keyfile"):
        server_config([str(runs["lstm"])], certfile="cert.pem")
    with pytest.raises(ConfigError, match="not a file"):
        server_config([str(runs["lstm"])], certfile="/nonexistent.pem", keyfile="/nonexistent.key")


def test_the_host_check_stays_on_loopback_and_goes_with_the_token_elsewhere(runs):
    local = Api(server_config([str(runs["lstm"])], token=TOKEN).config.app)
    with pytest.warns(UserWarning):
        wide = Api(server_config([str(runs["lstm"])], host="0.0.0.0", token=TOKEN).config.app)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert local.get("/api/limits", headers=auth).status_code == 400  # Host: testserver
        assert local.get("/api/limits", headers={**auth, "host": "localhost:8000"}).status_code == 200
        assert wide.get("/api/limits", headers=auth).status_code == 200
        assert wide.get("/api/limits").status_code == 401
    finally:
        local.close()
        wide.close()


def test_redaction_hides_the_token_in_any_query():
    assert redact('127.0.0.1:5 - "GET /?token=abc HTTP/1.1" 200') == '127.0.0.1:5 - "GET /?token=[redacted] HTTP/1.1" 200'
    assert redact("/api/models?x=1&token=abc&y=2") == "/api/models?x=1&token=[redacted]&y=2"
    assert redact("/api/models?mytoken=abc") == "/api/models?mytoken=abc"
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", f"/?token={TOKEN}", "1.1", 200), None)
    assert RedactToken().filter(record) and TOKEN not in record.getMessage()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_https_with_the_token_and_an_access_log_without_it(runs, tmp_path, capsys):
    import socket
    import ssl

    import uvicorn

    if subprocess.run(["which", "openssl"], capture_output=True).returncode:
        pytest.skip("openssl is missing")
    cert, key = _self_signed(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = server_config([str(runs["lstm"])], port=port, token=TOKEN, certfile=str(cert), keyfile=str(key),
                           log_level="info")
    assert served.url == f"https://127.0.0.1:{port}/?token={TOKEN}"
    server = uvicorn.Server(served.config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), base_url=f"https://127.0.0.1:{port}") as http:
            assert http.get("/api/models", params={"token": TOKEN}).status_code == 200
            page = http.get("/", params={"token": TOKEN})
            assert page.status_code == 200 and "rnnlab-token" in page.text
            assert http.get("/api/models").status_code == 401
            gen = http.post(GEN, json={"length": 5, "seed": 1}, headers={"Authorization": f"Bearer {TOKEN}"})
            assert gen.status_code == 200 and gen.text.endswith('"generated":5}\n')
        with pytest.raises(httpx.TransportError):  # plain HTTP is not answered
            httpx.get(f"http://127.0.0.1:{port}/api/models", params={"token": TOKEN})
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    out = capsys.readouterr()
    log = out.out + out.err
    assert '"GET /api/models?token=[redacted] HTTP/1.1" 200' in log and "/?token=[redacted]" in log
    assert TOKEN not in log


def test_streams_beyond_the_limits_are_refused_with_429(runs, slow_streams):
    app = build_app([str(runs["lstm"])], max_streams=2, max_active_streams=3)
    limits = app.state.streams
    clients = {ip: httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 1000)),
                                     base_url="http://testserver") for ip in ("10.0.0.1", "10.0.0.2")}
    api = Api(app)

    async def scenario():
        async def gen(ip: str, length: int) -> httpx.Response:
            return await clients[ip].post(GEN, json={"length": length, "seed": 1, "top": 0})

        long = [asyncio.create_task(gen("10.0.0.1", 2000)) for _ in range(2)]
        await asyncio.sleep(0.2)
        assert limits.open == {"10.0.0.1": 2}
        third = await gen("10.0.0.1", 5)  # this client's third: refused, at once
        other = asyncio.create_task(gen("10.0.0.2", 2000))  # another client: the third stream of the server
        await asyncio.sleep(0.2)
        fourth = await gen("10.0.0.2", 5)  # the server's fourth: refused
        done = await asyncio.gather(*long, other)
        return third, fourth, done

    try:
        third, fourth, done = api.portal.call(scenario)
        assert third.status_code == 429 and "already streams 2" in third.json()["error"]
        assert fourth.status_code == 429 and "streams 3 generations" in fourth.json()["error"]
        assert all(r.status_code == 200 and r.text.endswith('"generated":2000}\n') for r in done)
        assert limits.open == {}  # every place given back
        again = api.portal.call(lambda: clients["10.0.0.1"].post(GEN, json={"length": 3}))
        assert again.status_code == 200
    finally:
        for c in clients.values():
            api.portal.call(c.aclose)
        api.close()
    with pytest.raises(ConfigError, match="stream limits"):
        build_app([str(runs["lstm"])], max_streams=0)


@pytest.mark.parametrize("args,words", [(["--token", "short"], "16 to 256 characters"),
                                        (["--certfile", "cert.pem"], "both certfile and keyfile"),
                                        (["--max-streams", "0"], "stream limits must be >= 1")])
def test_the_serve_command_refuses_bad_options_in_one_line(runs, capsys, args, words):
    from rnnlab.cli import main

    assert main(["serve", str(runs["lstm"]), *args]) == 2  # a bad value, as every ConfigError
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnlab: error: ") and words in err[0]


def test_the_serve_command_prints_the_address_with_a_fresh_token_beyond_loopback(runs, capsys, monkeypatch):
    import uvicorn

    from rnnlab.cli import main

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.append(self.config))
    assert main(["serve", str(runs["lstm"]), "--host", "0.0.0.0", "--port", "8765", "--max-streams", "50"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "without TLS" in err[0] and err[0].startswith("rnnlab: warning: ")
    url = err[1].split(" on ", 1)[1].split(" ")[0]
    assert url.startswith("http://") and ":8765/?token=" in url
    token = url.split("?token=")[1]
    check_token(token)
    assert len(served) == 1 and served[0].host == "0.0.0.0" and served[0].port == 8765
    api = Api(served[0].app)
    try:
        assert api.get("/api/models").status_code == 401
        assert api.get("/api/models", params={"token": token}).status_code == 200
        assert served[0].app.state.streams.per_client == 50
    finally:
        api.close()
