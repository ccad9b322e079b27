"""A web page in the operator's browser against a default node (loopback, no token): the page must
not create, trigger or pause jobs, nor read answers — neither from another origin (another
localhost port) nor by DNS rebinding (its own name pointed at 127.0.0.1). Real headless Chromium,
a real 3-node cluster, an attacker's page served from a free loopback port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from browserkit import headless_chromium
from cluster import Cluster

pytestmark = pytest.mark.integration

REBOUND = "attacker.test"  # Chromium resolves it to 127.0.0.1, as a rebinding DNS server would

VICTIM = {"id": "victim", "schedule": {"every": 3600}, "task": {"type": "shell", "command": ["true"]}}
EVIL = {"id": "pwn", "schedule": {"every": 1}, "task": {"type": "shell", "command": ["id"]}}

# Every way a cross-origin page can send a write without a preflight, one that needs a preflight,
# and a read; each outcome is recorded for the test to look at.
ATTACK_JS = """
async ([node, evil]) => {
  const job = JSON.stringify(evil);
  const tries = {
    text: [node + "/v1/jobs", {method: "POST", mode: "no-cors", body: job,
                                headers: {"Content-Type": "text/plain"}}],
    untyped: [node + "/v1/jobs", {method: "POST", mode: "no-cors", body: new Blob([job])}],
    json: [node + "/v1/jobs", {method: "POST", mode: "cors", body: job,
                                headers: {"Content-Type": "application/json"}}],
    trigger: [node + "/v1/jobs/victim/trigger", {method: "POST", mode: "no-cors"}],
    pause: [node + "/v1/jobs/victim/pause", {method: "POST", mode: "no-cors"}],
    read: [node + "/v1/jobs", {}],
  };
  const out = {};
  for (const [name, [url, opts]] of Object.entries(tries)) {
    try {
      const r = await fetch(url, opts);
      out[name] = {type: r.type, status: r.status, text: r.type === "opaque" ? "" : await r.text()};
    } catch (e) {
      out[name] = {error: String(e)};
    }
  }
  return out;
}
"""

FORM_PAGE = """<!doctype html><html><body>
<form id="f" method="POST" action="NODE/v1/jobs" enctype="text/plain">
<input name='{"id":"pwn-form","schedule":{"every":1},"task":{"type":"shell","command":["id"]},"description":"'
 value='"}'></form>
<script>document.getElementById("f").submit();</script></body></html>"""


class AttackerSite:
    """A page server on its own loopback port: another origin than any node's."""

    def __init__(self, node_url: str) -> None:
        form = FORM_PAGE.replace("NODE", node_url).encode()
        pages = {"/": b"<!doctype html><title>attacker</title>", "/form": form}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = pages.get(self.path, b"")
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cluster(make_cluster: type[Cluster]) -> Iterator[Cluster]:
    c = make_cluster(node_keys={"allow_shell": "true"})  # the most exposed default: no api_token
    c.start()
    c.wait_healthy()
    code, body = c.api(c.ids[0], "POST", "/v1/jobs", VICTIM)
    assert code == 201, body
    yield c


def _untouched(cluster: Cluster) -> None:
    """No job the page sent exists, the victim neither paused nor triggered, on any node."""
    for node in cluster.ids:
        code, jobs = cluster.api(node, "GET", "/v1/jobs?consistent=true")
        assert code == 200
        assert [j["id"] for j in jobs["items"]] == ["victim"], jobs
        assert jobs["items"][0]["paused"] is False
        code, runs = cluster.api(node, "GET", "/v1/jobs/victim/runs")
        assert code == 200 and runs["items"] == [], runs


def test_a_cross_origin_page_can_neither_write_nor_read(cluster: Cluster) -> None:
    node = cluster.url(cluster.ids[1])
    site = AttackerSite(node)
    try:
        with headless_chromium() as browser:
            page = browser.new_page()
            page.goto(site.url + "/")
            out = page.evaluate(ATTACK_JS, [node, EVIL])
            page.goto(site.url + "/form")
            page.wait_for_load_state("load")
            page.wait_for_timeout(500)
            form_answer = page.content()
    finally:
        site.close()
    # No CORS header is ever granted: a cors request fails in the browser, no-cors ones are opaque.
    assert "error" in out["json"] and "error" in out["read"], out
    assert all(out[name]["type"] == "opaque" for name in ("text", "untyped", "trigger", "pause")), out
    assert "forbidden_origin" in form_answer or "unsupported_media_type" in form_answer, form_answer
    _untouched(cluster)


def test_a_rebound_name_gets_nothing(cluster: Cluster) -> None:
    port = cluster.ports[cluster.ids[0]][1]
    rules = f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"
    with headless_chromium([rules]) as browser:
        page = browser.new_page()
        answer = page.goto(f"http://{REBOUND}:{port}/")
        assert answer is not None and answer.status == 403
        assert "forbidden_host" in page.content()
        # Same-origin now, from the browser's point of view: no Origin check can help, Host does.
        out = page.evaluate(ATTACK_JS, [f"http://{REBOUND}:{port}", EVIL])
    assert out["read"]["status"] == 403 and "forbidden_host" in out["read"]["text"], out
    assert out["json"]["status"] == 403 and out["text"]["status"] == 403, out
    _untouched(cluster)


def test_the_dashboard_as_localhost_still_writes(cluster: Cluster) -> None:
    """The node's own page, served as `localhost` or as `127.0.0.1`, keeps working."""
    port = cluster.ports[cluster.ids[2]][1]
    with headless_chromium() as browser:
        page = browser.new_page()
        for n, host in enumerate(("localhost", "127.0.0.1")):
            assert page.goto(f"http://{host}:{port}/").status == 200  # type: ignore[union-attr]
            job = {**VICTIM, "id": f"own-{n}"}
            status = page.evaluate(
                """async (job) => (await fetch("/v1/jobs", {method: "POST", body: JSON.stringify(job),
                     headers: {"Content-Type": "application/json"}})).status""",
                job,
            )
            assert status == 201
