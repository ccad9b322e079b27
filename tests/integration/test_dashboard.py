"""The web dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against a
real 3-node cluster on 127.0.0.1.

It skips only when the browser or playwright is missing; `scripts/install-browser` installs both
(CI runs it first). Playwright's own browser download is never used: the machine is offline.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from browserkit import headless_chromium
from cluster import Cluster

pytestmark = pytest.mark.integration

TOKEN = "GD2Y5LyFqid4qW5aWI8fupgYkmWVTMM3rx838RqYn7s"
SCREENSHOT = Path("/tmp/raftsched-dashboard.png")  # for the team's notes
VIEWPORT = {"width": 1360, "height": 900}
READ_ONLY = {
    "version",
    "incarnation",
    "next_fire_at",
    "last_fire_at",
    "created_at",
    "updated_at",
    "updated_by",
    "stats",
}


@pytest.fixture
def browser() -> Iterator[Any]:
    with headless_chromium() as chromium:
        yield chromium


class Watch:
    """What the page did: every request's URL and Authorization, and every script error."""

    def __init__(self, page: Any) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append((r.url, r.headers.get("authorization"))))
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        # The browser logs every non-2xx answer ("Failed to load resource"); the tests cause
        # 400s and 401s on purpose. Anything else logged as an error is a bug of the page.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.errors.append(msg.text)

    def check(self) -> None:
        assert not self.errors, self.errors
        hosts = {urlsplit(url).hostname for url, _ in self.requests}
        assert hosts == {"127.0.0.1"}, hosts  # nothing fetched from anywhere else


# Playwright cannot hide a tab: stand in for the browser's visibility API.
_SET_HIDDEN = (
    "Object.defineProperty(document, 'hidden', {value: %s, configurable: true});"
    " document.dispatchEvent(new Event('visibilitychange'))"
)


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _start(cluster: Cluster, token: str | None = None) -> str:
    """Start the cluster, wait for a scheduling leader and every member; return a follower."""
    cluster.start()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            statuses = {
                n: cluster.api(n, "GET", "/v1/status", headers=headers, timeout=2) for n in cluster.ids
            }
            code, nodes = cluster.api(cluster.ids[0], "GET", "/v1/nodes", headers=headers, timeout=2)
        except OSError:
            time.sleep(0.2)
            continue
        leaders = [
            n
            for n, (c, st) in statuses.items()
            if c == 200 and st["role"] == "leader" and st["scheduler_term"] == st["term"]
        ]
        if leaders and code == 200 and sum(1 for n in nodes["items"] if n["alive"]) == cluster.size:
            return next(n for n in cluster.ids if n != leaders[0])
        time.sleep(0.2)
    raise TimeoutError("cluster did not come up\n" + cluster.logs())


async def test_page_and_static_files_are_served_self_contained() -> None:
    """No browser needed: the routes, their headers, and that the page loads nothing from elsewhere."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from raftsched.api import dashboard
    from raftsched.api.app import error_middleware

    app = web.Application(middlewares=[error_middleware])
    dashboard.add_routes(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/")
        assert resp.status == 200 and resp.content_type == "text/html" and resp.charset == "utf-8"
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "no-cache" in resp.headers["Cache-Control"]
        html = await resp.text()
        refs = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert refs and all(r.startswith(("/static/", "#")) for r in refs), refs
        types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
        for ref in {r for r in refs if r.startswith("/static/")}:
            got = await client.get(ref)
            assert got.status == 200, ref
            assert got.content_type == types[Path(ref).suffix], (ref, got.content_type)
            body = await got.text()
            assert not re.search(r"(?:url\(|@import|fetch\()\s*['\"]?(?:https?:)?//", body), ref
            again = await client.get(ref, headers={"If-None-Match": got.headers["ETag"]})
            assert again.status == 304, ref
        for bad in ("/static/nope.js", "/static/..%2f__init__.py", "/static/.hidden", "/static/x"):
            missing = await client.get(bad)
            assert missing.status == 404, bad
            assert (await missing.json())["error"]["code"] == "not_found"


def test_dashboard_members_jobs_runs_and_actions(make_cluster: Any, browser: Any, tmp_path: Path) -> None:
    expect = _expect()
    cluster: Cluster = make_cluster()
    follower = _start(cluster)

    page = browser.new_context(viewport=VIEWPORT).new_page()
    watch = Watch(page)
    response = page.goto(cluster.url(follower) + "/")
    assert response is not None and response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]

    # Members: three of them, one leader, each alive, the page's own node marked.
    members = page.locator("#members-table tbody tr")
    expect(members).to_have_count(3)
    expect(page.locator('#members-table [data-role="leader"]')).to_have_count(1)
    shown_leader = page.locator('#members-table tr:has([data-role="leader"])').get_attribute("data-key")
    assert shown_leader in cluster.ids  # normally `leader`, unless an election happened meanwhile
    expect(page.locator("#cluster-line")).to_contain_text(f"leader {shown_leader}")
    expect(page.locator(f'#members-table tr[data-key="{follower}"]')).to_contain_text("this page")
    expect(page.locator("#members-table .badge.h-up")).to_have_count(3)
    expect(page.locator("#members-table tbody")).to_contain_text("/ 8")  # load: running / capacity
    page.screenshot(path=tmp_path / "overview-empty.png", full_page=True)

    # Create a job through the form; a validation error shows next to its field first.
    page.get_by_role("link", name="New job").click()
    expect(page).to_have_url(re.compile(r"#/new$"))
    page.get_by_label("ID", exact=True).fill("tick")
    page.get_by_label("Every", exact=True).check()
    interval = page.get_by_label("Interval (seconds)")
    interval.fill("0.01")
    page.get_by_label("Command (argv)").fill("true")
    page.get_by_role("button", name="Create job").click()
    expect(page.locator('.field[data-field="schedule.every"] .field-error')).to_contain_text("0.1")
    expect(interval).to_have_attribute("aria-invalid", "true")
    interval.fill("1")
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/tick$"))
    code, job = cluster.api(follower, "GET", "/v1/jobs/tick")  # the node the page wrote through
    assert code == 200, job
    assert job["schedule"]["every"] == 1 and job["task"]["command"] == ["true"], job

    # It is in the jobs table; its page shows runs that succeed, charts, and a run's output.
    page.get_by_role("link", name="Overview", exact=True).click()
    row = page.locator('#jobs-table tr[data-key="tick"]')
    expect(row).to_contain_text("every 1 s")
    expect(row).to_contain_text("active")
    row.get_by_role("link", name="tick").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("tick")
    succeeded = page.locator("#runs-table tbody .badge.s-succeeded")
    expect(succeeded.first).to_be_visible(timeout=10_000)
    expect(succeeded.nth(4)).to_be_visible(timeout=15_000)  # a few more, for the charts
    expect(page.locator("#chart-duration svg rect.bar").first).to_be_attached()
    expect(page.locator("#chart-lateness svg rect.bar").first).to_be_attached()
    done_row = page.locator("#runs-table tbody tr", has=page.locator(".badge.s-succeeded")).first
    done_row.locator("td").nth(2).click()  # a click anywhere on the row opens the run
    panel = page.locator("#run-panel")
    expect(panel).to_contain_text("succeeded")
    expect(panel).to_contain_text("Exit code")

    # Pause it with the button.
    page.get_by_role("button", name="Pause", exact=True).click()
    expect(page.locator("h1 .badge")).to_have_text("paused")
    expect(page.get_by_role("button", name="Resume", exact=True)).to_be_visible()
    code, job = cluster.api(follower, "GET", "/v1/jobs/tick")
    assert code == 200 and job["paused"] is True, job
    expect(page.locator("#toasts .toast")).to_have_count(0, timeout=8000)  # "Paused tick" fades
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=tmp_path / "job.png", full_page=True)
    shutil.copyfile(tmp_path / "job.png", SCREENSHOT)

    # Edit: the form comes filled in, and the save is conditional on the version it read: a change
    # made meanwhile elsewhere is not overwritten (412), and "Reload" brings the new version.
    page.get_by_role("link", name="Edit").click()
    expect(interval).to_have_value("1")
    interval.fill("2")
    spec = {k: v for k, v in job.items() if k not in READ_ONLY}
    code, changed = cluster.api(
        follower, "PUT", "/v1/jobs/tick", {**spec, "description": "changed elsewhere"}
    )
    assert code == 200, changed
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".form-error")).to_contain_text("changed by someone else")
    page.get_by_role("button", name="Reload the job").click()
    expect(page.get_by_label("Description")).to_have_value("changed elsewhere")
    expect(interval).to_have_value("1")
    interval.fill("2")
    page.get_by_role("button", name="Save changes").click()
    expect(page).to_have_url(re.compile(r"#/jobs/tick$"))
    expect(page.locator("#main")).to_contain_text("every 2 s")
    code, edited = cluster.api(follower, "GET", "/v1/jobs/tick")
    assert edited["schedule"]["every"] == 2 and edited["version"] > changed["version"], edited
    assert edited["paused"] is True and edited["description"] == "changed elsewhere", edited

    # The raw JSON editor: an unknown field is refused and named, then a good job is created.
    page.get_by_role("link", name="Overview", exact=True).click()
    page.get_by_role("link", name="New job").click()
    page.get_by_role("tab", name="JSON").click()
    editor = page.get_by_label("Job as JSON")
    editor.fill('{"id": "hook", "schedule": {"cron": "0 3 * * *"}, "task": {"type": "http"}, "colour": 1}')
    page.get_by_role("button", name="Create job").click()
    expect(page.locator('.field[data-field="__json"] .field-error')).to_contain_text("colour")
    editor.fill(
        '{"id": "hook", "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Berlin"},'
        ' "task": {"type": "http", "method": "POST", "url": "http://127.0.0.1:9/hook"}, "paused": true}'
    )
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/hook$"))
    expect(page.locator("#main")).to_contain_text("Europe/Berlin")

    page.get_by_role("link", name="Overview", exact=True).click()
    expect(page.locator("#jobs-table tbody tr")).to_have_count(2)
    expect(page.locator("#toasts .toast")).to_have_count(0, timeout=8000)
    page.screenshot(path=tmp_path / "overview.png", full_page=True)

    # Delete asks first; cancelling keeps the job, confirming removes it.
    page.locator('#jobs-table tr[data-key="hook"]').get_by_role("link", name="hook").click()
    page.get_by_role("button", name="Delete…").click()
    dialog = page.get_by_role("dialog", name="Delete hook?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert cluster.api(follower, "GET", "/v1/jobs/hook")[0] == 200
    page.get_by_role("button", name="Delete…").click()
    dialog.get_by_role("button", name="Delete job").click()
    expect(page).to_have_url(re.compile(r"#/$"))
    expect(page.locator('#jobs-table tr[data-key="hook"]')).to_have_count(0)
    assert cluster.api(follower, "GET", "/v1/jobs/hook")[0] == 404

    watch.check()


def test_dashboard_asks_for_the_api_token(make_cluster: Any, browser: Any, tmp_path: Path) -> None:
    expect = _expect()
    cluster: Cluster = make_cluster(cluster_keys={"api_token": TOKEN})
    follower = _start(cluster, token=TOKEN)

    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    watch = Watch(page)
    response = page.goto(cluster.url(follower) + "/")
    assert response is not None and response.status == 200  # the page itself is public

    dialog = page.get_by_role("dialog", name="API token required")
    expect(dialog).to_be_visible()
    members = page.locator("#members-table tbody tr")
    expect(members).to_have_count(0)

    # A wrong token is refused and asked for again.
    token_input = dialog.get_by_label("API token")
    token_input.fill("not-the-token")
    dialog.get_by_role("button", name="Use token").click()
    expect(dialog.locator("#token-error")).to_contain_text("refused")

    # Dismissing leaves a banner that brings the prompt back.
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator("#banner")).to_contain_text("API token")
    page.get_by_role("button", name="Enter token").click()
    expect(dialog).to_be_visible()

    token_input.fill(TOKEN)
    dialog.get_by_role("button", name="Use token").click()
    expect(dialog).to_be_hidden()
    expect(members).to_have_count(3)
    expect(page.locator('#members-table [data-role="leader"]')).to_have_count(1)
    expect(page.locator("#banner")).to_be_hidden()
    page.screenshot(path=tmp_path / "token.png", full_page=True)

    # Kept in this tab's sessionStorage, sent as a header: never in a URL, never a cookie.
    assert page.evaluate("sessionStorage.getItem('raftsched.api_token')") == TOKEN
    assert context.cookies() == []
    assert not [url for url, _ in watch.requests if TOKEN in url]
    api_calls = [(url, auth) for url, auth in watch.requests if urlsplit(url).path.startswith("/v1/")]
    assert any(auth == f"Bearer {TOKEN}" for _, auth in api_calls)

    # A reload keeps it; "Forget token" asks again.
    page.reload()
    expect(members).to_have_count(3)
    expect(dialog).to_be_hidden()

    # A hidden tab does not poll; it refreshes as soon as it is visible again.
    live = page.locator("#live")
    page.evaluate(_SET_HIDDEN % "true")
    expect(live).to_contain_text("tab hidden")
    page.wait_for_timeout(1000)  # a refresh begun before may still finish
    before = len(watch.requests)
    page.wait_for_timeout(4500)
    assert [url for url, _ in watch.requests[before:] if "/v1/" in url] == []
    expect(live).to_contain_text("tab hidden")
    page.evaluate(_SET_HIDDEN % "false")
    expect(live).to_contain_text("Live")
    assert [url for url, _ in watch.requests[before:] if "/v1/" in url]
    page.get_by_role("button", name="Forget token").click()
    expect(dialog).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('raftsched.api_token')") is None

    watch.check()


def test_dashboard_python_form_one_shots_and_a_dead_node(
    make_cluster: Any, browser: Any, tmp_path: Path
) -> None:
    """The form writes Python tasks; a one-shot that has fired shows as done; when the page's node
    dies, the banner links the other nodes' dashboards, and slots count live nodes only."""
    expect = _expect()
    root = Path(__file__).resolve().parents[2]
    cluster: Cluster = make_cluster(node_keys={"python_allow": "examples", "python_path": str(root)})
    follower = _start(cluster)
    page = browser.new_context(viewport=VIEWPORT).new_page()
    watch = Watch(page)
    page.goto(cluster.url(follower) + "/")
    expect(page.locator("#members-table tbody tr")).to_have_count(3)
    expect(page.locator('[data-bind="capacity"]')).to_have_text("of 24 slots")

    # A python job through the form; kwargs that are not a JSON object are refused at the field.
    page.get_by_role("link", name="New job").click()
    page.get_by_label("ID", exact=True).fill("greet")
    page.get_by_label("Every", exact=True).check()
    page.get_by_label("Interval (seconds)").fill("1")
    page.get_by_label("Python", exact=True).check()
    expect(page.get_by_label("Command (argv)")).to_be_hidden()
    page.get_by_label("Callable").fill("examples.tasks:greet")
    kwargs = page.get_by_label("Keyword arguments")
    kwargs.fill('["browser"]')
    page.get_by_role("button", name="Create job").click()
    expect(page.locator('.field[data-field="task.kwargs"] .field-error')).to_contain_text("JSON object")
    kwargs.fill('{"name": "browser"}')
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/greet$"))
    code, job = cluster.api(follower, "GET", "/v1/jobs/greet")
    assert code == 200, job
    assert job["task"]["type"] == "python" and job["task"]["callable"] == "examples.tasks:greet", job
    assert job["task"]["kwargs"] == {"name": "browser"}, job
    done_run = page.locator("#runs-table tbody tr", has=page.locator(".badge.s-succeeded")).first
    expect(done_run).to_be_visible(timeout=15_000)
    done_run.locator("td").nth(2).click()
    expect(page.locator("#run-panel")).to_contain_text("hello browser, from greet@")
    page.get_by_role("link", name="Edit").click()  # the form, not the JSON tab, edits it
    expect(page.get_by_label("Callable")).to_have_value("examples.tasks:greet")
    expect(kwargs).to_have_value(re.compile(r'"name": "browser"'))
    page.get_by_role("link", name="Cancel").first.click()

    # A one-shot job: active until its slot, then done (not active), its run as the last result.
    at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    once = {"id": "once", "schedule": {"at": at}, "task": {"type": "shell", "command": ["true"]}}
    assert cluster.api(follower, "POST", "/v1/jobs", once)[0] == 201
    page.get_by_role("link", name="Overview", exact=True).click()
    row = page.locator('#jobs-table tr[data-key="once"]')
    expect(row.locator(".badge.done")).to_have_text("done", timeout=20_000)
    expect(row.locator(".badge.s-succeeded")).to_be_visible(timeout=10_000)
    expect(page.locator('[data-bind="paused"]')).to_contain_text("1 done")

    # The page's node dies: the banner links the others, which serve the same dashboard.
    cluster.kill(follower)
    banner = page.locator("#banner")
    expect(banner).to_contain_text(f"This node ({follower}) did not answer", timeout=10_000)
    links = banner.locator(".banner-links a")
    expect(links).to_have_count(2)
    others = [n for n in cluster.ids if n != follower]
    hrefs = sorted(links.nth(i).get_attribute("href") or "" for i in range(2))
    assert hrefs == sorted(cluster.url(n) + "/" for n in others), hrefs
    page.screenshot(path=tmp_path / "node-down.png", full_page=True)
    links.first.click()
    expect(page.locator("#members-table tbody tr")).to_have_count(3)
    expect(page.locator("#banner")).to_be_hidden()
    dead = page.locator(f'#members-table tr[data-key="{follower}"] .badge.h-down')
    expect(dead).to_be_visible(timeout=20_000)
    expect(page.locator('[data-bind="capacity"]')).to_have_text("of 16 slots")

    watch.check()


def test_dashboard_message_task_through_the_form(make_cluster: Any, browser: Any, tmp_path: Path) -> None:
    """The form writes message tasks (to a real Redis every node has as broker `events`); the job
    page shows where it publishes, and a run shows the broker's answer."""
    from brokerkit import redis_server

    expect = _expect()
    with redis_server(tmp_path) as redis:
        cluster: Cluster = make_cluster(sections={"broker events": {"url": redis.url}})
        follower = _start(cluster)
        page = browser.new_context(viewport=VIEWPORT).new_page()
        watch = Watch(page)
        page.goto(cluster.url(follower) + "/")
        expect(page.locator("#members-table tbody tr")).to_have_count(3)

        page.get_by_role("link", name="New job").click()
        expect(page.locator('#broker-list option[value="events"]')).to_have_count(1)  # offered
        page.get_by_label("ID", exact=True).fill("ticks")
        page.get_by_label("Every", exact=True).check()
        page.get_by_label("Interval (seconds)").fill("1")
        page.get_by_label("Message", exact=True).check()
        expect(page.get_by_label("Command (argv)")).to_be_hidden()
        page.get_by_label("Broker", exact=True).fill("events")
        page.get_by_label("To", exact=True).fill("ticks")
        body = page.locator("#f-message-body")
        options = page.get_by_label("Options")
        options.fill('["list"]')  # not an object: refused at its field, before any request
        page.get_by_role("button", name="Create job").click()
        expect(page.locator('.field[data-field="task.options"] .field-error')).to_contain_text("JSON object")
        options.fill('{"mode": "stream"}')
        body.fill('{"run": "{user}"}')  # the API refuses the unknown field, named at the body
        page.get_by_role("button", name="Create job").click()
        expect(page.locator('.field[data-field="task.body"]:visible .field-error')).to_contain_text("{user}")
        body.fill('{"run": "{run_id}", "brace": "{{x}}"}')
        page.get_by_role("button", name="Create job").click()
        expect(page).to_have_url(re.compile(r"#/jobs/ticks$"))

        code, job = cluster.api(follower, "GET", "/v1/jobs/ticks")
        assert code == 200, job
        assert job["task"]["type"] == "message" and job["task"]["broker"] == "events", job
        assert job["task"]["to"] == "ticks" and job["task"]["options"] == {"mode": "stream"}, job
        assert job["task"]["body"] == {"run": "{run_id}", "brace": "{{x}}"}, job
        definition = page.locator('[data-bind="definition"]')
        expect(definition).to_contain_text("message events → ticks")
        expect(definition).to_contain_text("application/json")

        done = page.locator("#runs-table tbody tr", has=page.locator(".badge.s-succeeded")).first
        expect(done).to_be_visible(timeout=15_000)
        done.locator("td").nth(2).click()
        panel = page.locator("#run-panel")
        expect(panel).to_contain_text("events → ticks")
        answer = panel.locator('[data-bind="broker-answer"]')
        expect(answer).to_contain_text(re.compile(r"^XADD ticks -> \d+-\d+$"))
        run_id = (page.locator("#run-panel .run-title").text_content() or "").strip()
        entry_id = (answer.text_content() or "").rpartition(" ")[2]
        page.screenshot(path=tmp_path / "message-job.png", full_page=True)

        import redis as redis_sync

        client = redis_sync.Redis.from_url(redis.url)
        try:
            ((_, fields),) = client.xrange("ticks", entry_id, entry_id)
        finally:
            client.close()
        assert fields[b"run_id"].decode() == run_id, (fields, run_id)
        assert fields[b"body"] == b'{"run":"' + run_id.encode() + b'","brace":"{x}"}', fields

        page.get_by_role("link", name="Overview", exact=True).click()
        expect(page.locator('#jobs-table tr[data-key="ticks"]')).to_contain_text("message: events → ticks")
        page.locator('#jobs-table tr[data-key="ticks"]').get_by_role("link", name="ticks").click()
        page.get_by_role("link", name="Edit").click()  # the form, not the JSON tab, edits it
        expect(page.get_by_label("Broker", exact=True)).to_have_value("events")
        expect(page.get_by_label("To", exact=True)).to_have_value("ticks")
        expect(options).to_have_value('{"mode":"stream"}')
        expect(body).to_have_value(re.compile(r'"brace": "\{\{x\}\}"'))
        page.get_by_role("link", name="Cancel").first.click()

        watch.check()
        cluster.close()  # before the broker goes: no run fails against a stopped Redis
