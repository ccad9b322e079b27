"""Alerts through a real 3-node cluster: a webhook per failed run (after its retries), signed; a
burst grouped; a leader killed mid-burst neither loses nor doubles an alert (beyond at-least-once:
the check de-duplicates by alert id); an e-mail over STARTTLS to an aiosmtpd server."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from cluster import Cluster, Sink, free_ports

pytestmark = pytest.mark.integration

KEY = "k3y-for-tests"


def start(make_cluster: type[Cluster], **kwargs: Any) -> Cluster:
    cluster = make_cluster(sections={"secrets": {"HOOK_KEY": KEY}}, **kwargs)
    cluster.start()
    cluster.wait_healthy()
    cluster.wait_registered()
    cluster.wait_for(
        "cluster version 2", lambda: (cluster.status(cluster.ids[0]) or {}).get("cluster_version") == 2
    )
    return cluster


def put(cluster: Cluster, path: str, body: Any, expect: tuple[int, ...] = (200, 201)) -> Any:
    code, answer = cluster.api(cluster.ids[0], "PUT", path, body)
    assert code in expect, (code, answer)
    return answer


def failing_job(job_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "schedule": {"every": 5},
        "task": {"type": "shell", "command": ["false"]},
        "notify": [{"on": ["failed"], "channel": "ops"}],
        **extra,
    }


def alerts_received(sink: Sink) -> list[dict[str, Any]]:
    with sink.lock:
        return [e for e in sink.events if e["path"] == "/alerts"]


def verified(event: dict[str, Any]) -> dict[str, Any]:
    """The payload of a received webhook, after checking its signature as a consumer would."""
    stamp, body = event["x-raftsched-timestamp"], event["body"].encode()
    mac = hmac.new(KEY.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert event["x-raftsched-signature"] == f"sha256={mac}"
    payload: dict[str, Any] = orjson.loads(body)
    assert payload["alert_id"] == event["x-raftsched-alert-id"]
    return payload


def runs(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    code, answer = cluster.api(cluster.leader(), "GET", f"/v1/jobs/{job_id}/runs?consistent=true&limit=1000")
    assert code == 200, answer
    return list(answer["items"])


def test_one_signed_webhook_per_failed_run_after_its_retries(make_cluster: type[Cluster]) -> None:
    sink = Sink()
    cluster = start(make_cluster)
    try:
        channel = {"type": "webhook", "url": sink.url + "/alerts", "signing_secret": {"secret": "HOOK_KEY"}}
        answer = put(cluster, "/v1/channels/ops", {**channel, "group_window_s": 2})
        assert answer["signing_secret"] == {"secret": "HOOK_KEY"}
        code, refused = cluster.api(
            cluster.ids[0],
            "POST",
            "/v1/jobs",
            failing_job("x", notify=[{"on": ["failed"], "channel": "nope"}]),
        )
        assert (code, refused["error"]["code"]) == (422, "unknown_channel")
        job = failing_job("fails", retries={"max": 2, "initial_delay": 0.3, "backoff": 1, "jitter": 0})
        assert cluster.api(cluster.ids[0], "POST", "/v1/jobs", job)[0] == 201
        failed = cluster.wait_for(
            "two failed runs",
            lambda: (f := [r for r in runs(cluster, "fails") if r["state"] == "failed"])[1:] and f,
            timeout=40,
        )
        cluster.api(cluster.ids[0], "POST", "/v1/jobs/fails/pause")
        failed = [r for r in runs(cluster, "fails") if r["state"] == "failed"]
        ids = {r["run_id"] for r in failed}
        cluster.wait_for(
            "a webhook per failed run", lambda: {verified(e)["run_id"] for e in alerts_received(sink)} >= ids
        )
        time.sleep(1.5)
        payloads = [verified(e) for e in alerts_received(sink)]
        print("received webhook:", alerts_received(sink)[0])
        assert sorted(p["run_id"] for p in payloads) == sorted(ids)  # exactly one each
        for p in payloads:
            assert (p["event"], p["state"], p["attempt"], p["count"]) == ("run.failed", "failed", 3, 1)
            assert p["job_id"] == "fails" and p["error"] and p["cluster"] == "raftsched"
        code, listed = cluster.api(cluster.ids[1], "GET", "/v1/alerts?channel=ops")
        assert code == 200 and {a["delivery"]["state"] for a in listed["items"]} == {"delivered"}
    finally:
        sink.close()


def test_a_burst_is_grouped_and_a_leader_kill_neither_loses_nor_doubles(make_cluster: type[Cluster]) -> None:
    sink = Sink()
    cluster = start(make_cluster)
    try:
        channel = {"type": "webhook", "url": sink.url + "/alerts", "signing_secret": {"secret": "HOOK_KEY"}}
        put(cluster, "/v1/channels/ops", {**channel, "group_window_s": 4})
        job = failing_job("burst", schedule={"every": 0.2}, overlap="allow")
        assert cluster.api(cluster.ids[0], "POST", "/v1/jobs", job)[0] == 201
        time.sleep(5)
        leader = cluster.leader()
        cluster.kill(leader)  # mid-burst: events noted, a group open, alerts in delivery
        survivor = cluster.leader(exclude=(leader,))
        time.sleep(4)
        assert cluster.api(survivor, "POST", "/v1/jobs/burst/pause")[0] == 200
        cluster.wait_for(
            "no active run",
            lambda: not [r for r in runs(cluster, "burst") if r["state"] in ("pending", "running")],
        )
        failed = len([r for r in runs(cluster, "burst") if r["state"] == "failed"])
        assert failed > 30

        def counted() -> int:
            unique = {p["alert_id"]: p for p in map(verified, alerts_received(sink))}
            return sum(p["count"] for p in unique.values())

        cluster.wait_for("every failure in exactly one alert", lambda: counted() == failed, timeout=40)
        time.sleep(5)  # nothing more comes: no alert covers a failure twice
        unique = {p["alert_id"]: p for p in map(verified, alerts_received(sink))}
        assert sum(p["count"] for p in unique.values()) == failed
        assert len(unique) <= 8 < failed  # grouped: a message per window, not one per failure
        grouped = [p for p in unique.values() if p["count"] > 1]
        assert grouped and grouped[0]["summary"] == {"run.failed": grouped[0]["count"]}
        print(f"{failed} failures -> {len(unique)} alerts, {len(alerts_received(sink))} webhooks received")
    finally:
        sink.close()


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_an_email_arrives_over_starttls(
    make_cluster: type[Cluster], tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message as MessageHandler

    received: list[Any] = []

    class Handler(MessageHandler):
        def handle_message(self, message: Any) -> None:
            received.append(message)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_cert)
    port = free_ports(1)[0]
    server = Controller(
        Handler(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
    )
    server.start()
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert[0]))  # the nodes trust the test's certificate
    cluster = start(make_cluster)
    try:
        channel = {
            "type": "email",
            "smtp": f"localhost:{port}",
            "from": "raftsched@localhost",
            "to": ["ops@localhost"],
        }
        put(cluster, "/v1/channels/mail", channel)
        job = failing_job(
            "mailed", schedule={"at": "2099-01-01T00:00:00Z"}, notify=[{"on": ["failed"], "channel": "mail"}]
        )
        assert cluster.api(cluster.ids[0], "POST", "/v1/jobs", job)[0] == 201
        code, run = cluster.api(cluster.ids[0], "POST", "/v1/jobs/mailed/trigger")
        assert code == 201, run
        cluster.wait_for("the e-mail", lambda: received, timeout=30)
        message = received[0]
        print("received e-mail:\n" + message.as_string())
        assert message["Subject"].startswith("[raftsched] run.failed mailed")
        assert message["X-Raftsched-Alert-Id"] and message["To"] == "ops@localhost"
        assert f"run_id: {run['run_id']}" in message.get_payload()
        cluster.wait_for(
            "its delivery recorded",
            lambda: (
                len(cluster.api(cluster.ids[2], "GET", "/v1/alerts?channel=mail&state=delivered")[1]["items"])
                == 1
            ),
        )
    finally:
        server.stop()
