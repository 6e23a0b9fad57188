"""Prometheus metrics (--metrics, issue 13): a known load sent over HTTP/1.1, HTTP/2 and
a WebSocket to real workers, then the master's /metrics scraped and checked number by
number; restarts by cause across a HUP and a --max-requests recycle; the listener and
its options."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import threading
import time
from collections import Counter

import httpx
import pytest
import websockets

from tests.server import Server, run_to_exit

APP = "metrics_app:app"


def metrics_server(*args: str, app: str = APP) -> Server:
    return Server(app, "--no-access-log", "--metrics", "--metrics-port", "0", *args)


def metrics_url(server: Server) -> str:
    return server.wait_for_log(r"Metrics on (http://\S+/metrics)").group(1)


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition, by (name, labels)."""
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for line in response.text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        name, labels, value = match.groups()
        pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_by_series(samples: dict) -> Counter:
    counts = Counter()
    for (name, labels), v in samples.items():
        if name == "ferrocorn_http_requests_total":
            d = dict(labels)
            counts[(d["protocol"], d["method"], d["status_class"])] = int(v)
    return counts


def wait_for(url: str, check, timeout: float = 10.0) -> dict:
    """Scrape until `check(samples)` holds (workers report with their 1 s heartbeat)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never matched; last scrape: {samples}")
        time.sleep(0.2)


def total_requests(samples: dict) -> int:
    return sum(requests_by_series(samples).values())


def check_histogram(samples: dict, name: str) -> int:
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (n, labels), v in samples.items()
        if n == f"{name}_bucket"
    )
    assert buckets and buckets[-1][0] == float("inf"), buckets
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{name} buckets are not cumulative: {buckets}"
    count = value(samples, f"{name}_count")
    assert counts[-1] == count
    assert value(samples, f"{name}_sum") >= 0
    return int(count)


@pytest.mark.timeout(90)
def test_counts_match_a_known_load_over_http1_http2_and_websocket():
    expected = Counter()
    sent_bytes = 0
    received_bytes = 0
    with metrics_server("--workers", "2") as server:
        url = metrics_url(server)
        with httpx.Client(base_url=server.url, timeout=10) as h1:
            for method, status, body, count in [
                ("GET", 200, b"", 5),
                ("POST", 201, b"p" * 100, 3),
                ("PUT", 404, b"q" * 7, 2),
                ("DELETE", 500, b"", 4),
                ("PURGE", 202, b"", 1),
                ("OPTIONS", 302, b"", 2),
                ("HEAD", 200, b"", 1),
            ]:
                size = 25
                for _ in range(count):
                    r = h1.request(method, f"/status/{status}?size={size}", content=body)
                    assert r.status_code == status
                    assert r.http_version == "HTTP/1.1"
                    received_bytes += len(r.content)
                    sent_bytes += len(body)
                key = method if method != "PURGE" else "other"
                expected[("http1", key, f"{status // 100}xx")] += count
            with httpx.Client(base_url=server.url, http1=False, http2=True, timeout=10) as h2:
                for method, status, body, count in [
                    ("GET", 200, b"", 6),
                    ("PATCH", 409, b"z" * 50, 2),
                ]:
                    for _ in range(count):
                        r = h2.request(method, f"/status/{status}?size=33", content=body)
                        assert r.status_code == status
                        assert r.http_version == "HTTP/2"
                        received_bytes += len(r.content)
                        sent_bytes += len(body)
                    expected[("http2", method, f"{status // 100}xx")] += count

                async def websocket_open_during(check):
                    ws_url = server.url.replace("http://", "ws://") + "/ws"
                    async with websockets.connect(ws_url) as ws:
                        await ws.send("hello")
                        assert await ws.recv() == "hello"
                        return await asyncio.to_thread(check)

                def while_everything_is_open():
                    # Kept-alive HTTP/1.1 (idle now), HTTP/2 and the WebSocket, all open.
                    return wait_for(
                        url,
                        lambda s: (
                            value(s, "ferrocorn_connections_open", protocol="websocket") == 1
                            and value(s, "ferrocorn_connections_open", protocol="http2") >= 1
                            and value(s, "ferrocorn_connections_idle") >= 1
                        ),
                    )

                during = asyncio.run(websocket_open_during(while_everything_is_open))
                assert value(during, "ferrocorn_connections_open", protocol="http1") >= 1

        total = sum(expected.values())
        # A report may be taken between a request's counter and its histogram
        # observation: wait for a report that has all of them.
        samples = wait_for(
            url,
            lambda s: (
                total_requests(s) >= total
                and value(s, "ferrocorn_http_request_duration_seconds_count") >= total
                and value(s, "ferrocorn_http_request_queue_seconds_count") >= total
                and value(s, "ferrocorn_connections_open", protocol="websocket") == 0
            ),
        )
        # Exactly the load that was sent: a WebSocket is a connection, not a request.
        assert requests_by_series(samples) == expected
        assert value(samples, "ferrocorn_http_request_bytes_total") == sent_bytes
        assert value(samples, "ferrocorn_http_response_bytes_total") == received_bytes
        assert check_histogram(samples, "ferrocorn_http_request_duration_seconds") == total
        assert check_histogram(samples, "ferrocorn_http_request_queue_seconds") == total
        assert value(samples, "ferrocorn_http_requests_in_flight") == 0
        assert value(samples, "ferrocorn_workers") == 2
        for worker in ("0", "1"):
            rss = [
                v
                for (n, labels), v in samples.items()
                if n == "ferrocorn_worker_rss_bytes" and dict(labels)["worker"] == worker
            ]
            assert len(rss) == 1 and rss[0] > 1024 * 1024, samples
            lag = [
                v
                for (n, labels), v in samples.items()
                if n == "ferrocorn_event_loop_lag_seconds" and dict(labels)["worker"] == worker
            ]
            assert len(lag) == 1 and 0 <= lag[0] < 5.0, samples
        # Every restart cause is listed, at 0.
        for cause in ("crash", "timeout", "max-requests", "lifetime", "rss", "hup"):
            assert value(samples, "ferrocorn_worker_restarts_total", cause=cause) == 0


@pytest.mark.timeout(60)
def test_in_flight_counts_running_requests():
    with metrics_server() as server:
        url = metrics_url(server)

        def three_slow_requests():
            async def send():
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                    await asyncio.gather(*(client.get("/slow") for _ in range(3)))

            asyncio.run(send())

        # The worker reports once a second and a request takes 0.5 s: send rounds of
        # three until a report catches them in flight.
        seen = 0.0
        deadline = time.monotonic() + 15
        while seen == 0 and time.monotonic() < deadline:
            load = threading.Thread(target=three_slow_requests)
            load.start()
            while load.is_alive() and seen == 0:
                seen = value(scrape(url), "ferrocorn_http_requests_in_flight")
                time.sleep(0.05)
            load.join()
        assert 1 <= seen <= 3
        wait_for(url, lambda s: value(s, "ferrocorn_http_requests_in_flight") == 0)


@pytest.mark.timeout(120)
def test_restarts_by_cause_and_counters_never_go_backwards():
    with metrics_server("--max-requests", "20") as server:
        url = metrics_url(server)
        history = []

        def scrape_and_keep(check):
            samples = wait_for(url, check, timeout=20)
            history.append(samples)
            return samples

        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(10):
                assert client.get("/status/200").status_code == 200
        scrape_and_keep(lambda s: total_requests(s) == 10)

        old = server.worker_pids()
        server.signal(signal.SIGHUP)
        server.wait_for_workers(1, exclude=old)
        after_hup = scrape_and_keep(
            lambda s: (
                value(s, "ferrocorn_worker_restarts_total", cause="hup") == 1
                and value(s, "ferrocorn_workers") == 1
            )
        )
        # The replaced worker's requests are still counted.
        assert total_requests(after_hup) == 10

        # 25 more: the new worker serves its 20th and asks to be replaced.
        before = server.worker_pids()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(25):
                assert client.get("/status/200").status_code == 200
                history.append(scrape(url))
        server.wait_for_workers(1, exclude=before)
        final = scrape_and_keep(
            lambda s: (
                value(s, "ferrocorn_worker_restarts_total", cause="max-requests") == 1
                and total_requests(s) == 35
                and value(s, "ferrocorn_http_request_duration_seconds_count") == 35
            )
        )
        assert value(final, "ferrocorn_worker_restarts_total", cause="hup") == 1
        assert value(final, "ferrocorn_worker_restarts_total", cause="crash") == 0
        assert check_histogram(final, "ferrocorn_http_request_duration_seconds") == 35
        assert "(cause: max-requests)" in server.stderr_text()

        # No counter ever went down from one scrape to the next.
        counters = ("_total", "_bucket", "_count", "_sum")
        for earlier, later in zip(history, history[1:], strict=False):
            for key, v in earlier.items():
                if key[0].endswith(counters):
                    assert later.get(key, 0.0) >= v, (key, v, later.get(key))


@pytest.mark.timeout(60)
def test_wsgi_requests_are_counted():
    with metrics_server("--interface", "wsgi", app="metrics_app:wsgi_app") as server:
        url = metrics_url(server)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(4):
                assert client.get("/status/200?size=5").status_code == 200
            assert client.post("/status/503", content=b"abc").status_code == 503
        samples = wait_for(
            url,
            lambda s: (
                total_requests(s) >= 5
                and value(s, "ferrocorn_http_request_queue_seconds_count") >= 5
            ),
        )
        assert requests_by_series(samples) == {
            ("http1", "GET", "2xx"): 4,
            ("http1", "POST", "5xx"): 1,
        }
        assert value(samples, "ferrocorn_http_request_bytes_total") == 3
        assert value(samples, "ferrocorn_http_response_bytes_total") == 4 * 5 + 10
        assert check_histogram(samples, "ferrocorn_http_request_queue_seconds") == 5


@pytest.mark.timeout(60)
def test_the_metrics_listener_is_its_own():
    with metrics_server() as server:
        url = metrics_url(server)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert port != server.port
        # The app's port serves the app, even on /metrics.
        app_answer = httpx.get(f"{server.url}/metrics?size=3")
        assert app_answer.content == b"xxx"
        base = url.removesuffix("/metrics")
        assert httpx.get(f"{base}/other").status_code == 404
        refused = httpx.post(url)
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"
        head = httpx.head(url)
        assert head.status_code == 200 and head.content == b""
        text = httpx.get(url).text
        for name in (
            "ferrocorn_http_requests_total",
            "ferrocorn_http_request_duration_seconds",
            "ferrocorn_worker_restarts_total",
        ):
            assert f"# TYPE {name} " in text and f"# HELP {name} " in text
    # Without --metrics nothing listens.
    with Server(APP, "--no-access-log") as plain:
        assert "Metrics on" not in plain.stderr_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


def test_metrics_options_are_checked():
    for args in (("--metrics-port", "70000"), ("--metrics-port", "x")):
        done = run_to_exit(APP, "--metrics", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "--metrics-port" in done.stderr
    # A port already taken: one line, and the server doesn't start.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = run_to_exit(APP, "--metrics", "--metrics-port", port)
        assert done.returncode == 1, done.stderr
        assert "metrics listener" in done.stderr


def test_the_documented_command_line_and_scrape_config():
    yaml = pytest.importorskip("yaml")
    from tests.test_docs import ROOT, parse

    files = {
        b.attrs["file"]: b.text for b in parse(ROOT / "docs" / "deployment.md") if "file" in b.attrs
    }
    args = files["serve-with-metrics.sh"].split()
    assert args[:2] == ["ferrocorn", "main:app"]
    config = yaml.safe_load(files["prometheus.yml"])
    job = config["scrape_configs"][0]
    target = job["static_configs"][0]["targets"][0]
    path = job.get("metrics_path", "/metrics")
    # The target is the documented metrics port, not the app's.
    assert target.rsplit(":", 1)[1] == args[args.index("--metrics-port") + 1]
    assert path == "/metrics"
    # The same options, on this machine's free ports and loopback.
    options = args[2:]
    options[options.index("--metrics-port") + 1] = "0"
    options[options.index("--metrics-address") + 1] = "127.0.0.1"
    options[options.index("--workers") + 1] = "2"
    with Server(APP, "--no-access-log", *options) as server:
        url = metrics_url(server)
        assert url.endswith(path)
        httpx.get(f"{server.url}/status/200")
        samples = wait_for(url, lambda s: total_requests(s) == 1)
        assert value(samples, "ferrocorn_workers") == 2


class StatsdCollector:
    """A UDP statsd collector on loopback: every line received, parsed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.lines: list[str] = []
        self.datagram_sizes: list[int] = []

    def receive_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                datagram = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.datagram_sizes.append(len(datagram))
            self.lines.extend(datagram.decode().splitlines())

    def counters(self) -> Counter:
        counts = Counter()
        for line in self.lines:
            name, rest = line.split(":", 1)
            parts = rest.split("|")
            if parts[1] == "c":
                counts[name] += int(parts[0])
        return counts

    def timer_count(self, name: str) -> float:
        """How many observations a statsd server counts: 1/rate per timer line."""
        total = 0.0
        for line in self.lines:
            line_name, rest = line.split(":", 1)
            parts = rest.split("|")
            if line_name == name and parts[1] == "ms":
                rates = [p for p in parts[2:] if p.startswith("@")]
                total += 1 / float(rates[0][1:]) if rates else 1
        return total

    def last_gauge(self, name: str) -> int | None:
        values = [
            line.split(":", 1)[1].split("|") for line in self.lines if line.startswith(name + ":")
        ]
        gauges = [int(v[0]) for v in values if v[1] == "g"]
        return gauges[-1] if gauges else None

    def close(self) -> None:
        self.sock.close()


@pytest.mark.timeout(60)
def test_statsd_sends_gunicorns_names_for_a_known_load():
    collector = StatsdCollector()
    try:
        with Server(
            APP,
            "--no-access-log",
            "--workers",
            "2",
            "--statsd-host",
            collector.address,
            "--statsd-prefix",
            "web",
            "--dogstatsd-tags",
            "env:test,pod:a",
        ) as server:
            sent = Counter()
            with httpx.Client(base_url=server.url, timeout=10) as client:
                for status, count in ((200, 7), (404, 3), (503, 2)):
                    for _ in range(count):
                        assert client.get(f"/status/{status}").status_code == status
                    sent[status] += count
                # Over HTTP/2 too: statsd counts every protocol.
                with httpx.Client(base_url=server.url, http1=False, http2=True) as h2:
                    for _ in range(4):
                        assert h2.get("/status/200").status_code == 200
                    sent[200] += 4
            # Workers report with their 1 s heartbeat; the master flushes every second.
            collector.receive_for(3.5)
        total = sum(sent.values())
        assert collector.lines, "no statsd datagram arrived"
        assert all(line.startswith("web.gunicorn.") for line in collector.lines)
        assert all(line.endswith("|#env:test,pod:a") for line in collector.lines)
        assert max(collector.datagram_sizes) <= 1400
        counters = collector.counters()
        assert counters["web.gunicorn.requests"] == total
        for status, count in sent.items():
            assert counters[f"web.gunicorn.request.status.{status}"] == count
        assert round(collector.timer_count("web.gunicorn.request.duration")) == total
        assert collector.last_gauge("web.gunicorn.workers") in (0, 1, 2)
        assert 2 in {
            int(line.split(":", 1)[1].split("|")[0])
            for line in collector.lines
            if line.startswith("web.gunicorn.workers:")
        }
    finally:
        collector.close()


def test_statsd_documented_command_line_and_a_collector_that_is_down():
    from tests.test_docs import ROOT, parse

    files = {
        b.attrs["file"]: b.text for b in parse(ROOT / "docs" / "deployment.md") if "file" in b.attrs
    }
    args = files["serve-with-statsd.sh"].split()
    assert args[:2] == ["ferrocorn", "main:app"]
    options = args[2:]
    options[options.index("--workers") + 1] = "1"
    # Nothing listens on the collector's port: serving goes on, datagrams are dropped.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    options[options.index("--statsd-host") + 1] = f"127.0.0.1:{port}"
    with Server(APP, "--no-access-log", *options) as server:
        for _ in range(3):
            for _ in range(5):
                assert httpx.get(f"{server.url}/status/200").status_code == 200
            time.sleep(1.1)
        assert "statsd" not in server.stderr_text().lower()
    done = run_to_exit(APP, "--statsd-host", "no-port-here")
    assert done.returncode == 1, done.stderr
    assert "--statsd-host no-port-here" in done.stderr
