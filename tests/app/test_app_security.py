"""The web app's request checks, against a real ``xchat app`` process (docs/app-readme.md
"Security") and on the Guard directly."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import pytest
from _app_helpers import AppProcess

from xchat.app import security
from xchat.app.security import Guard
from xchat.app.server import new_secret

STATIC = Path(__file__).resolve().parents[2] / "src" / "xchat" / "app" / "static"


@pytest.fixture(scope="module")
def app(apps: list[AppProcess]) -> AppProcess:
    return apps[0]


def _ok_headers(app: AppProcess) -> dict[str, str]:
    return {"X-XChat-Secret": app.secret}


def test_secret_is_32_random_urlsafe_bytes(app: AppProcess) -> None:
    raw = base64.urlsafe_b64decode(app.secret + "=")
    assert len(raw) == 32
    assert new_secret() != new_secret()
    assert app.url == f"http://127.0.0.1:{app.port}/#secret={app.secret}"


def test_listens_on_loopback_only(app: AppProcess) -> None:
    """/proc/net/tcp lists the listening socket's local address: 127.0.0.1 only."""
    addrs = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            ip, port = local.split(":")
            if int(port, 16) == app.port and state == "0A":  # LISTEN
                addrs.add(ip)
    assert addrs == {"0100007F"}  # 127.0.0.1, little-endian hex


def test_api_without_secret_is_401(app: AppProcess) -> None:
    for path in ("/api/state", "/api/conversations", "/api/events", "/api/address.svg"):
        r = httpx.get(app.base + path)
        assert r.status_code == 401, path
    r = httpx.get(app.base + "/api/state", headers={"X-XChat-Secret": "A" * 43})
    assert r.status_code == 401
    r = httpx.get(app.base + "/api/state", headers={"X-XChat-Secret": app.secret[:-1]})
    assert r.status_code == 401
    r = httpx.post(app.base + "/api/messages/send", json={"to": "@x", "text": "hi"})
    assert r.status_code == 401
    assert httpx.get(app.base + "/api/state", headers=_ok_headers(app)).status_code == 200


def test_foreign_origin_is_403(app: AppProcess) -> None:
    for origin in (
        "http://evil.example",
        f"http://127.0.0.1:{app.port + 1}",
        f"https://127.0.0.1:{app.port}",
        "null",
    ):
        h = {**_ok_headers(app), "Origin": origin}
        assert httpx.get(app.base + "/api/state", headers=h).status_code == 403, origin
        r = httpx.post(app.base + "/api/contacts/resolve", headers=h, json={"to": "@bob"})
        assert r.status_code == 403, origin
    for origin in (f"http://127.0.0.1:{app.port}", f"http://localhost:{app.port}"):
        h = {**_ok_headers(app), "Origin": origin}
        assert httpx.get(app.base + "/api/state", headers=h).status_code == 200
    h = {**_ok_headers(app), "Sec-Fetch-Site": "cross-site"}
    assert httpx.get(app.base + "/api/state", headers=h).status_code == 403


def test_bad_host_is_403(app: AppProcess) -> None:
    for host in ("evil.example", f"evil.example:{app.port}", f"127.0.0.1:{app.port + 1}", ""):
        h = {**_ok_headers(app), "Host": host}
        assert httpx.get(app.base + "/api/state", headers=h).status_code == 403, host
        assert httpx.get(app.base + "/", headers={"Host": host}).status_code == 403, host
    h = {**_ok_headers(app), "Host": f"localhost:{app.port}"}
    assert httpx.get(app.base + "/api/state", headers=h).status_code == 200


def test_writes_need_post_with_json(app: AppProcess) -> None:
    h = _ok_headers(app)
    url = app.base + "/api/contacts/resolve"
    r = httpx.post(url, headers={**h, "Content-Type": "text/plain"}, content=b'{"to":"@x"}')
    assert r.status_code == 415
    r = httpx.post(url, headers=h, data={"to": "@x"})  # an HTML form's encoding
    assert r.status_code == 415
    for method in ("PUT", "DELETE", "PATCH"):
        assert httpx.request(method, url, headers=h, json={}).status_code == 405
    r = httpx.post(app.base + "/", headers=h, json={})
    assert r.status_code == 405


def test_never_any_cors_headers_and_always_security_headers(app: AppProcess) -> None:
    h = _ok_headers(app)
    responses = [
        httpx.get(app.base + "/"),
        httpx.get(app.base + "/static/app.js"),
        httpx.get(app.base + "/api/state", headers=h),
        httpx.get(app.base + "/api/state"),
        httpx.get(app.base + "/api/state", headers={**h, "Origin": "http://evil.example"}),
        httpx.request(
            "OPTIONS",
            app.base + "/api/state",
            headers={
                "Origin": "http://evil.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-xchat-secret",
            },
        ),
        httpx.request("OPTIONS", app.base + "/api/state", headers=h),
        httpx.get(app.base + "/nope"),
    ]
    for r in responses:
        assert not any(k.lower().startswith("access-control-") for k in r.headers), r.url
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-content-type-options"] == "nosniff"


def test_guard_compares_secret_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = security.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    g = Guard(lambda *a: None, "s3cret", 9000)  # type: ignore[arg-type, return-value]
    ok = {"host": "127.0.0.1:9000", "x-xchat-secret": "s3cret"}
    assert g.check("GET", "/api/state", ok) == (0, "")
    assert g.check("GET", "/api/state", {**ok, "x-xchat-secret": "nope"})[0] == 401
    assert calls == [(b"s3cret", b"s3cret"), (b"nope", b"s3cret")]


def test_guard_rules_unit() -> None:
    g = Guard(lambda *a: None, "k", 8471)  # type: ignore[arg-type, return-value]
    base = {"host": "localhost:8471", "x-xchat-secret": "k"}
    assert g.check("GET", "/", {"host": "localhost:8471"}) == (0, "")
    assert g.check("GET", "/", {"host": "127.0.0.1:8471"}) == (0, "")
    assert g.check("GET", "/", {})[0] == 403
    assert g.check("GET", "/", {"host": "LOCALHOST:8471"})[0] == 403
    assert g.check("GET", "/api/x", {**base, "host": "\x00duplicate"})[0] == 403
    assert g.check("POST", "/api/x", {**base, "content-type": "application/json"}) == (0, "")
    ct = {**base, "content-type": "application/json; charset=utf-8"}
    assert g.check("POST", "/api/x", ct) == (0, "")
    assert g.check("POST", "/api/x", {**base, "content-type": "multipart/form-data"})[0] == 415
    assert g.check("GET", "/api/x", base, ("10.0.0.5", 1234))[0] == 403
    assert g.check("GET", "/api/x", {**base, "sec-fetch-site": "same-site"})[0] == 403
    assert g.check("GET", "/", {"host": "localhost:8471", "sec-fetch-site": "none"}) == (0, "")


def test_static_assets_have_no_inline_script_or_html_injection() -> None:
    html = (STATIC / "index.html").read_text()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None  # no inline script body
    assert re.search(r"\son[a-z]+\s*=", html) is None  # no inline event handlers
    assert "style=" not in html
    assert set(re.findall(r"https?://([A-Za-z0-9.-]+)", html)) <= {"127.0.0.1"}
    modules = sorted(STATIC.glob("*.js"))
    assert STATIC / "app.js" in modules
    for path in modules:  # every module, including the ones feature teams add
        js = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in js, (path.name, sink)
        assert "new Function" not in js, path.name
        assert set(re.findall(r"https?://([A-Za-z0-9.-]+)", js)) <= {"127.0.0.1"}, path.name
        assert len(js.splitlines()) <= 800, f"{path.name} is over 800 lines: split it"
    css = (STATIC / "app.css").read_text()
    assert "url(" not in css and "@import" not in css


def near_misses(port: int) -> list[str]:
    """Origins that differ from ``http://127.0.0.1:PORT`` / ``http://localhost:PORT`` by a
    little: a prefix or suffix match, a case-insensitive or a parsed comparison would let one
    through (issue #21: a prefix match used to pass every test)."""
    out = []
    for host in ("127.0.0.1", "localhost"):
        good = f"http://{host}:{port}"
        out += [
            good + "0",  # a longer port
            good[:-1],  # a shorter port
            good + "/",  # trailing slash
            good + ".evil.example",  # a longer host name
            good + "@evil.example",  # userinfo the other way round
            f"http://evil@{host}:{port}",  # userinfo
            f"http://{host}:{port}:{port}",
            f"https://{host}:{port}",  # other schemes
            f"ws://{host}:{port}",
            f"file://{host}:{port}",
            f"HTTP://{host.upper()}:{port}",
            f"http://{host}",  # no port
            f" {good}",
            f"{good} ",
            good + "\x00",
            good + ", http://evil.example",
        ]
    out += [f"http://127.0.0.2:{port}", f"http://[::1]:{port}", f"http://0.0.0.0:{port}", ""]
    return out


def test_guard_refuses_every_near_miss_origin_and_host() -> None:
    g = Guard(lambda *a: None, "k", 8471)  # type: ignore[arg-type, return-value]
    base = {"host": "127.0.0.1:8471", "x-xchat-secret": "k"}
    assert g.check("GET", "/api/x", {**base, "origin": "http://127.0.0.1:8471"}) == (0, "")
    assert g.check("GET", "/api/x", {**base, "origin": "http://localhost:8471"}) == (0, "")
    for origin in near_misses(8471):
        assert g.check("GET", "/api/x", {**base, "origin": origin})[0] == 403, repr(origin)
        assert g.check("GET", "/", {"host": "127.0.0.1:8471", "origin": origin})[0] == 403
    for host in (
        "127.0.0.1:84710",
        "127.0.0.1:847",
        "127.0.0.1:8471.evil.example",
        "evil@127.0.0.1:8471",
        "127.0.0.1:8471/",
        "LOCALHOST:8471",
        "127.0.0.1",
        " 127.0.0.1:8471",
        "127.0.0.1:8471 ",
        "127.0.0.2:8471",
        "[::1]:8471",
    ):
        assert g.check("GET", "/", {"host": host})[0] == 403, repr(host)
    for site in ("same-site", "cross-site", "same-origin ", "Same-Origin", "same-origin, none", ""):
        assert g.check("GET", "/api/x", {**base, "sec-fetch-site": site})[0] == 403, repr(site)
    for ctype in (
        "application/jsonx",
        "application/json-patch+json",
        "text/json",
        "application/x-www-form-urlencoded; application/json",
        "application/ json",
    ):
        assert g.check("POST", "/api/x", {**base, "content-type": ctype})[0] == 415, ctype
    for secret in ("", "K", "k ", " k", "kk", "k\x00"):
        assert g.check("GET", "/api/x", {**base, "x-xchat-secret": secret})[0] == 401, secret
    assert g.check("GET", "/apix", {"host": "127.0.0.1:8471"}) == (0, "")  # a page, not the API
    assert g.check("GET", "/API/x", {"host": "127.0.0.1:8471"}) == (0, "")  # 404 later, no data


def test_foreign_near_miss_origins_are_403_on_the_real_process(app: AppProcess) -> None:
    for origin in near_misses(app.port):
        if any(c in origin for c in "\x00\n") or origin != origin.strip():
            continue  # httpx refuses to send these; the unit test covers them
        h = {**_ok_headers(app), "Origin": origin}
        assert httpx.get(app.base + "/api/state", headers=h).status_code == 403, origin


def test_guard_sessions_need_both_halves() -> None:
    valid = {("c" * 43, "k" * 43)}
    g = Guard(lambda *a: None, "s", 8471, sessions=lambda c, k: (c, k) in valid)  # type: ignore[arg-type, return-value]
    base = {"host": "127.0.0.1:8471"}
    ok = {**base, "cookie": f"xchat_8471={'c' * 43}", "x-xchat-key": "k" * 43}
    assert g.check("GET", "/api/x", ok) == (0, "")
    assert g.credential(ok) == "session"
    assert g.credential({**base, "x-xchat-secret": "s"}) == "secret"
    for bad in (
        {**base, "cookie": f"xchat_8471={'c' * 43}"},  # cookie alone
        {**base, "x-xchat-key": "k" * 43},  # key alone
        {**ok, "cookie": f"xchat_8472={'c' * 43}"},  # another port's cookie
        {**ok, "cookie": f"xchat_84710={'c' * 43}"},
        {**ok, "cookie": f"xchat_847={'c' * 43}"},
        {**ok, "cookie": f"xchat_8471={'c' * 42}"},
        {**ok, "cookie": f"xchat_8471={'c' * 43}x"},
        {**ok, "cookie": f"xchat_8471={'c' * 43}; xchat_8471={'c' * 43}"},  # planted twin
        {**ok, "x-xchat-key": "k" * 43 + " "},
        {**ok, "x-xchat-key": "K" * 43},
    ):
        assert g.check("GET", "/api/x", bad)[0] == 401, bad
    # A stale launch secret (the app restarted) next to a valid session still passes.
    assert g.check("GET", "/api/x", {**ok, "x-xchat-secret": "old"}) == (0, "")
    no_sessions = Guard(lambda *a: None, "s", 8471)  # type: ignore[arg-type, return-value]
    assert no_sessions.check("GET", "/api/x", ok)[0] == 401


def test_browser_session_on_the_real_process(app: AppProcess) -> None:
    """Created only with the launch secret; then cookie + key work, each alone does not,
    and a same-site page on another port (which does get the cookie) is still refused."""
    r = httpx.post(app.base + "/api/session", headers=_ok_headers(app), json={})
    assert r.status_code == 200
    key = r.json()["key"]
    set_cookie = r.headers["set-cookie"]
    name = f"xchat_{app.port}"
    assert set_cookie.startswith(f"{name}=")
    attrs = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attrs and "domain" not in attrs
    assert "SameSite=Strict" in set_cookie and "Path=/api" in set_cookie
    cookie = set_cookie.split(";")[0].split("=", 1)[1]
    both = {"Cookie": f"{name}={cookie}", "X-XChat-Key": key}
    assert httpx.get(app.base + "/api/state", headers=both).status_code == 200
    assert httpx.get(app.base + "/api/state", headers={"Cookie": both["Cookie"]}).status_code == 401
    assert httpx.get(app.base + "/api/state", headers={"X-XChat-Key": key}).status_code == 401
    other_port = {**both, "Origin": f"http://127.0.0.1:{app.port + 1}"}
    assert httpx.get(app.base + "/api/state", headers=other_port).status_code == 403
    same_site = {**both, "Sec-Fetch-Site": "same-site"}
    assert httpx.get(app.base + "/api/state", headers=same_site).status_code == 403
    # A session cannot mint sessions (only the terminal's URL can).
    r = httpx.post(app.base + "/api/session", headers=both, json={})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    # Signing out ends it for good.
    r = httpx.post(app.base + "/api/session/forget", headers=both, json={})
    assert r.status_code == 200 and "Max-Age=0" in r.headers["set-cookie"]
    assert httpx.get(app.base + "/api/state", headers=both).status_code == 401
