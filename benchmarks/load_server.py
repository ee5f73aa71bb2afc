"""Load test of `gsv serve`: N concurrent clients for a fixed time, streaming and not.

Starts the server in a subprocess (`python -m gsv_onnx.cli serve`) on a free loopback port with
the given bundle, creates a stored voice from a reference clip through POST /v1/voices, warms up,
then for each client count N runs N client threads for `--duration` seconds. Each client loops
over requests, alternating a whole-file request and a streamed one (so both kinds are measured at
every N), and sleeps for Retry-After (at most 1 s) when the server answers 429. Reported per N:

* requests/s (completed 200s) and seconds of audio per second of wall time,
* latency p50/p90/p99 (request sent -> last byte), separately for whole and streamed requests,
* time to first audio p50/p90/p99 (request sent -> first non-empty body bytes; for a whole-file
  request that is about its latency),
* real-time factor p50 (latency / audio seconds),
* responses by status (errors included), transport errors,
* server RSS (VmRSS of the server process) before and after the run, and sampled every
  `--rss-every` seconds during it (the maxima of the first and second halves show growth).

    python benchmarks/load_server.py --bundle models/full-random.gsv --clients 1,2,4,8 --duration 60
    python benchmarks/load_server.py --bundle B --clients 4 --duration 600     # a soak run

Audio is asked for as /tts media_type=raw (16-bit PCM, 32 kHz), so its length is exact.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

SAMPLE_RATE = 32000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def write_reference(path: Path, seconds: float = 5.0, rate: int = 32000) -> Path:
    """A voiced-like reference clip (harmonics with vibrato): the load test needs no real speech."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 150 + 15 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(0.25 / k * np.sin(k * phase) for k in range(1, 6)) + 0.01 * rng.standard_normal(t.size)
    sf.write(path, wave.astype(np.float32), rate)
    return path


def sample_rss(pid: int, started: float, every: float, stop: threading.Event, timeline: list) -> None:
    """Append (seconds, RSS MiB) of process `pid` to `timeline` every `every` seconds until `stop`."""
    while not stop.wait(every):
        timeline.append((round(time.monotonic() - started, 1), round(rss_bytes(pid) / 2**20, 1)))


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class Server:
    """`gsv serve` in a subprocess."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.port = args.port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "gsv_onnx.cli",
            "serve",
            "--bundle",
            str(args.bundle),
            "--voices",
            str(work / "voices"),
            "--port",
            str(self.port),
            "--workers",
            str(args.workers),
            "--queue-size",
            str(args.queue_size),
            "--timeout",
            str(args.timeout),
            "--log-level",
            "warning",
        ]
        if args.threads:
            command += ["--threads", str(args.threads)]
        self.log = open(work / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.process.returncode}; see server.log")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the server did not answer /health in time")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def one_request(client: httpx.Client, params: dict, streaming: bool) -> dict:
    """Send one /tts request; returns its timings, status and audio length."""
    query = dict(params, streaming_mode=2 if streaming else 0)
    started = time.perf_counter()
    first = None
    size = 0
    retry_after = None
    try:
        with client.stream("GET", "/tts", params=query) as response:
            status = response.status_code
            if status == 429:
                retry_after = float(response.headers.get("retry-after", "1"))
            for block in response.iter_raw():
                if block and first is None:
                    first = time.perf_counter() - started
                size += len(block)
    except httpx.HTTPError as exc:
        return {"status": f"transport:{type(exc).__name__}", "streaming": streaming}
    latency = time.perf_counter() - started
    record = {"status": status, "streaming": streaming, "latency": latency, "retry_after": retry_after}
    if status == 200:
        record["first_audio"] = first if first is not None else latency
        record["audio_seconds"] = size / 2 / SAMPLE_RATE
    return record


def run_clients(
    url: str, headers: dict, params: dict, clients: int, duration: float
) -> tuple[list[dict], float]:
    records: list[dict] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def client_loop(index: int) -> None:
        streaming = index % 2 == 1  # start half the clients on each kind, then alternate
        with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(600, connect=10)) as client:
            while time.monotonic() < stop_at:
                record = one_request(client, params, streaming)
                record["client"] = index
                with lock:
                    records.append(record)
                if record["status"] == 429:
                    time.sleep(min(1.0, record["retry_after"] or 1.0))
                    continue
                streaming = not streaming

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records, time.perf_counter() - started


def summarize(records: list[dict], wall: float) -> dict:
    ok = [r for r in records if r["status"] == 200]
    summary: dict = {
        "requests": len(records),
        "ok": len(ok),
        "wall_s": round(wall, 1),
        "requests_per_s": round(len(ok) / wall, 3),
        "audio_s_per_s": round(sum(r["audio_seconds"] for r in ok) / wall, 3),
        "statuses": dict(sorted(Counter(str(r["status"]) for r in records).items())),
    }
    for kind, streaming in (("whole", False), ("streamed", True)):
        subset = [r for r in ok if r["streaming"] == streaming]
        latency = [r["latency"] for r in subset]
        first = [r["first_audio"] for r in subset]
        rtf = [r["latency"] / r["audio_seconds"] for r in subset if r["audio_seconds"] > 0]
        summary[kind] = {
            "n": len(subset),
            "latency_p50": percentile(latency, 50),
            "latency_p90": percentile(latency, 90),
            "latency_p99": percentile(latency, 99),
            "first_audio_p50": percentile(first, 50),
            "first_audio_p90": percentile(first, 90),
            "first_audio_p99": percentile(first, 99),
            "rtf_p50": percentile(rtf, 50),
            "audio_s_mean": statistics.fmean(r["audio_seconds"] for r in subset) if subset else None,
        }
    return summary


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, help="bundle to serve (a server is started)")
    parser.add_argument("--url", help="use a running server instead (its RSS is then not measured)")
    parser.add_argument("--api-key", help="API key of the --url server")
    parser.add_argument("--clients", default="1,2,4,8", help="client counts to run, comma-separated")
    parser.add_argument("--duration", type=float, default=60, help="seconds per client count")
    parser.add_argument("--workers", type=int, default=2, help="server synthesis workers")
    parser.add_argument("--queue-size", type=int, default=8, help="server queue size")
    parser.add_argument("--timeout", type=float, default=300, help="server request timeout")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads per session in the server")
    parser.add_argument("--port", type=int, help="server port (default: a free one)")
    parser.add_argument("--text", default="Good morning, how are you today?", help="text of every request")
    parser.add_argument("--lang", default="en")
    parser.add_argument("--reference", type=Path, help="reference clip (default: a generated 5 s tone)")
    parser.add_argument(
        "--prompt-text", default="This is my reference voice.", help="what the reference says"
    )
    parser.add_argument("--prompt-lang", default="en")
    parser.add_argument("--rss-every", type=float, default=10, help="seconds between server RSS samples")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not args.bundle and not args.url:
        parser.error("give --bundle (start a server) or --url (use a running one)")

    work = Path(tempfile.mkdtemp(prefix="gsv-load-"))
    server = None
    url = args.url
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    results: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "settings": {k: str(v) for k, v in vars(args).items() if k != "api_key"},
        "runs": [],
    }
    try:
        if args.bundle:
            server = Server(args, work)
            url = server.url
            started = time.perf_counter()
            server.wait_ready()
            results["server_start_s"] = round(time.perf_counter() - started, 1)
            print(
                f"server up at {url} in {results['server_start_s']} s (pid {server.process.pid})", flush=True
            )
        reference = args.reference or write_reference(work / "reference.wav")
        with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            response = client.post(
                "/v1/voices",
                files={"file": (reference.name, reference.read_bytes(), "audio/wav")},
                data={
                    "name": "loadtest",
                    "text": args.prompt_text,
                    "lang": args.prompt_lang,
                    "overwrite": "true",
                },
            )
            if response.status_code != 201:
                raise RuntimeError(f"creating the voice failed: {response.status_code} {response.text}")
            params = {"text": args.text, "text_lang": args.lang, "voice": "loadtest", "media_type": "raw"}
            for streaming in (False, True):  # warm-up: first-use costs stay out of the figures
                warm = one_request(client, params, streaming)
                if warm["status"] != 200:
                    raise RuntimeError(f"warm-up request failed: {warm}")
        for clients in [int(c) for c in args.clients.split(",")]:
            rss_before = rss_bytes(server.process.pid) if server else None
            timeline: list[tuple[float, float]] = []
            sampling = threading.Event()

            sampler = None
            if server:
                sampler = threading.Thread(
                    target=sample_rss,
                    args=(server.process.pid, time.monotonic(), args.rss_every, sampling, timeline),
                    daemon=True,
                )
                sampler.start()
            records, wall = run_clients(url, headers, params, clients, args.duration)
            sampling.set()
            if sampler:
                sampler.join()
            rss_after = rss_bytes(server.process.pid) if server else None
            summary = summarize(records, wall)
            summary.update(
                clients=clients,
                rss_before_mb=rss_before and round(rss_before / 2**20, 1),
                rss_after_mb=rss_after and round(rss_after / 2**20, 1),
                load_avg_after=os.getloadavg(),
                rss_timeline_mb=timeline,
            )
            if timeline:
                half = len(timeline) // 2
                summary["rss_first_half_max_mb"] = max(m for _, m in timeline[: max(half, 1)])
                summary["rss_second_half_max_mb"] = max(m for _, m in timeline[half:])
            results["runs"].append(summary)
            whole, streamed = summary["whole"], summary["streamed"]
            print(
                f"N={clients}: {summary['ok']}/{summary['requests']} ok in {summary['wall_s']} s, "
                f"{summary['requests_per_s']} req/s, {summary['audio_s_per_s']} audio s/s | "
                f"whole p50/p90/p99 {fmt(whole['latency_p50'])}/{fmt(whole['latency_p90'])}/"
                f"{fmt(whole['latency_p99'])} s | streamed latency p50 {fmt(streamed['latency_p50'])} s, "
                f"first audio p50/p90/p99 {fmt(streamed['first_audio_p50'])}/{fmt(streamed['first_audio_p90'])}/"
                f"{fmt(streamed['first_audio_p99'])} s | statuses {summary['statuses']} | "
                f"RSS {summary['rss_before_mb']} -> {summary['rss_after_mb']} MB",
                flush=True,
            )
        if server:
            metrics = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
            results["server_metrics_5xx"] = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("gsv_requests_total{") and 'status="5' in line
            )
    finally:
        if server:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
