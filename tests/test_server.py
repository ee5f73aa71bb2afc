"""The HTTP server end to end: real uvicorn servers on loopback, the tiny bundle, httpx clients.

Three servers share one loaded `TTS` (each runs uvicorn in a thread of this process, on a port
the OS picked): `main` (2 workers, an API key, small limits), `tight` (1 worker, no queue) for
queue-full and cancellation, and `short` (a 1 s request timeout). One more test starts the real
`gsv serve` command in a subprocess. Random weights make noise, so audio is checked by decoding it,
measuring its length and level, and comparing bytes between runs with the same seed.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from gsv_onnx.runtime.tts import TTS  # noqa: E402
from gsv_onnx.server.app import create_app  # noqa: E402
from gsv_onnx.server.config import ServerConfig  # noqa: E402

API_KEY = "test-key-3f9a"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PROMPT_TEXT = "This is my reference voice."
SHORT_TEXT = "Hello there."
THREE_PIECES = "Hello there. How are you? Fine, thanks."
TWO_PIECES = "Hello there. Goodbye now."
LONG_TEXT = " ".join(f"Sentence number {i}." for i in range(40))
MAX_TEXT_CHARS = 600
MAX_UPLOAD = 600_000
# Audio whose peak stays under this is treated as silence (the random tiny model is far louder).
AUDIBLE = 1e-3


# -- fixtures ---------------------------------------------------------------------------------------


def write_tone(path: Path, f0: float, seconds: float = 4.0, rate: int = 22050, seed: int = 0) -> Path:
    """A voiced-like clip: harmonics of `f0` with vibrato and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 + 0.1 * f0 * np.sin(2 * np.pi * 3 * t)) / rate
    wave = sum(0.25 / k * np.sin(k * phase) for k in range(1, 6)) + 0.01 * rng.standard_normal(t.size)
    sf.write(path, wave.astype(np.float32), rate)
    return path


@pytest.fixture(scope="module")
def bundle_path(tiny_bundle) -> Path:
    """The project's tiny bundle (tests/conftest.py, cached across sessions)."""
    return Path(tiny_bundle)


class Recorder:
    """Wraps `TTS.prepare_voice` on one instance to record which references reached it."""

    def __init__(self, tts: TTS) -> None:
        self.calls: list[object] = []
        self._prepare = tts.prepare_voice
        tts.prepare_voice = self  # instance attribute shadows the method

    def __call__(self, reference, *args, **kwargs):
        self.calls.append(reference)
        return self._prepare(reference, *args, **kwargs)


class ServerThread:
    """A uvicorn server on 127.0.0.1 (a port the OS picks) running in a daemon thread."""

    def __init__(self, app) -> None:
        self.app = app
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the uvicorn server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


@pytest.fixture(scope="module")
def env(bundle_path, tmp_path_factory):
    """Both servers, their directories, the shared TTS and two stored voices (alice, bob)."""
    root = tmp_path_factory.mktemp("server")
    refs = root / "refs"
    refs.mkdir()
    (refs / "sub").mkdir()
    outside = root / "outside"
    outside.mkdir()
    write_tone(refs / "a.wav", 170.0, seed=1)
    write_tone(refs / "sub" / "b.wav", 260.0, seed=2)
    secret = write_tone(outside / "secret.wav", 200.0, seed=3)
    os.symlink(secret, refs / "escape.wav")
    os.symlink(outside, refs / "escape_dir")
    tts = TTS.load(bundle_path)
    recorder = Recorder(tts)
    main_config = ServerConfig(
        bundle=str(bundle_path),
        voices=str(root / "voices"),
        workers=2,
        queue_size=8,
        request_timeout=60,
        max_text_chars=MAX_TEXT_CHARS,
        max_upload_bytes=MAX_UPLOAD,
        ref_dirs=[str(refs)],
        api_key=API_KEY,
    )
    tight_config = ServerConfig(
        bundle=str(bundle_path),
        voices=str(root / "voices-tight"),
        workers=1,
        queue_size=0,
        request_timeout=60,
        ref_dirs=[str(refs)],
        bundle_dirs=[str(bundle_path.parent)],
    )
    timeout_config = ServerConfig(
        bundle=str(bundle_path),
        voices=str(root / "voices-timeout"),
        workers=1,
        queue_size=1,
        request_timeout=1.0,
        ref_dirs=[str(refs)],
    )
    with (
        ServerThread(create_app(main_config, tts)) as main,
        ServerThread(create_app(tight_config, tts)) as tight,
        ServerThread(create_app(timeout_config, tts)) as short,
    ):
        client = httpx.Client(base_url=main.url, headers=AUTH, timeout=60)
        tight_client = httpx.Client(base_url=tight.url, timeout=60)
        for name, clip, text in (("alice", refs / "a.wav", PROMPT_TEXT), ("bob", refs / "sub" / "b.wav", "")):
            response = client.post(
                "/v1/voices",
                files={"file": (clip.name, clip.read_bytes(), "audio/wav")},
                data={"name": name, "text": text, "lang": "en"},
            )
            assert response.status_code == 201, response.text
        yield SimpleNamespace(
            main=main,
            tight=tight,
            short=short,
            client=client,
            tight_client=tight_client,
            refs=refs,
            outside=outside,
            secret=secret,
            tts=tts,
            recorder=recorder,
            bundle=bundle_path,
        )
        client.close()
        tight_client.close()


# -- helpers -------------------------------------------------------------------------------------------


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a whole audio file (reading blocks to the end, so unknown-length streams work)."""
    with sf.SoundFile(io.BytesIO(data)) as handle:
        blocks = []
        while True:
            block = handle.read(16384, dtype="float32", always_2d=True)
            if len(block) == 0:
                break
            blocks.append(block[:, 0])
        return np.concatenate(blocks), handle.samplerate


def decode_flac_stream(data: bytes, tmp_path: Path) -> np.ndarray:
    """int16 samples of a streamed FLAC (its header says "length unknown").

    libsndfile reads such a file only from disk, and its last partial block read fails at the end
    of the data; the blocks before it are returned (at most one block short).
    """
    path = tmp_path / "stream.flac"
    path.write_bytes(data)
    blocks = []
    with sf.SoundFile(path) as handle:
        try:
            while True:
                block = handle.read(1024, dtype="int16", always_2d=True)
                if len(block) == 0:
                    break
                blocks.append(block[:, 0])
        except sf.LibsndfileError:
            pass
    return np.concatenate(blocks)


def assert_audible(samples: np.ndarray, min_seconds: float, rate: int) -> None:
    assert samples.shape[0] >= min_seconds * rate, f"only {samples.shape[0] / rate:.2f} s of audio"
    assert float(np.abs(samples).max()) > AUDIBLE, "the response is silence"


def assert_error(response, status: int, text: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == status
    assert body["message"] and body["request_id"]
    assert response.headers["x-request-id"] == body["request_id"]
    if text:
        assert text.lower() in body["message"].lower(), body["message"]
    return body


def tts_query(**extra) -> dict:
    query = {
        "text": SHORT_TEXT,
        "text_lang": "en",
        "ref_audio_path": "a.wav",
        "prompt_text": PROMPT_TEXT,
        "prompt_lang": "en",
        "seed": 5,
    }
    query.update(extra)
    return query


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# -- service endpoints, schema, API key ----------------------------------------------------------------


def test_health_without_key_and_openapi_documents_every_endpoint(env):
    health = httpx.get(f"{env.main.url}/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["bundle_id"] == env.tts.bundle_id

    schema = env.client.get("/openapi.json").json()
    paths = schema["paths"]
    expected = {
        "/tts": {"get", "post"},
        "/set_refer_audio": {"get"},
        "/set_gpt_weights": {"get"},
        "/set_sovits_weights": {"get"},
        "/v1/audio/speech": {"post"},
        "/v1/voices": {"get", "post"},
        "/v1/voices/{name}": {"get", "delete"},
        "/health": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
        for method in methods:
            assert paths[path][method].get("summary"), (path, method)
    query_names = {p["name"] for p in paths["/tts"]["get"]["parameters"]}
    assert {
        "text",
        "text_lang",
        "ref_audio_path",
        "prompt_text",
        "media_type",
        "streaming_mode",
        "seed",
    } <= query_names
    assert "audio/wav" in paths["/tts"]["get"]["responses"]["200"]["content"]
    assert "429" in paths["/v1/audio/speech"]["post"]["responses"]
    speech_body = schema["components"]["schemas"]["SpeechParams"]["properties"]
    assert {"model", "input", "voice", "response_format", "speed", "stream"} <= set(speech_body)


def test_api_key_required_everywhere_but_health(env):
    url = env.main.url
    assert_error(httpx.get(f"{url}/v1/voices", timeout=10), 401, "API key")
    assert_error(httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"}, timeout=10), 401)
    response = httpx.get(f"{url}/tts", params=tts_query(), timeout=10)
    assert_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error(httpx.get(f"{url}/openapi.json", timeout=10), 401)
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def test_unknown_route_is_json_404(env):
    assert_error(env.client.get("/no/such/endpoint"), 404)


# -- synthesis: every media type decodes ---------------------------------------------------------------


@pytest.mark.parametrize("media", ["wav", "ogg", "flac", "mp3", "opus", "aac"])
def test_tts_get_media_types_decode(env, media):
    if media == "aac" and not shutil.which("ffmpeg"):
        assert_error(env.client.get("/tts", params=tts_query(media_type="aac")), 400, "ffmpeg")
        return
    response = env.client.get("/tts", params=tts_query(media_type=media))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("audio/")
    assert response.headers["x-seed"] == "5"
    if media == "aac":
        assert response.content[:2] == b"\xff\xf1" or response.content[:2] == b"\xff\xf9"  # ADTS sync
        return
    samples, rate = decode(response.content)
    seconds = float(response.headers["x-audio-seconds"])
    assert abs(samples.shape[0] / rate - seconds) < 0.1
    assert_audible(samples, 0.5, rate)


def test_tts_raw_matches_wav_and_post_json(env):
    wav = env.client.get("/tts", params=tts_query(media_type="wav"))
    raw = env.client.post("/tts", json=tts_query(media_type="raw"))
    assert wav.status_code == raw.status_code == 200
    assert raw.headers["content-type"].startswith("audio/raw")
    samples, rate = sf.read(io.BytesIO(wav.content), dtype="int16")
    assert rate == int(raw.headers["x-sample-rate"]) == 32000
    # Same seed, same text, same voice: the raw body is exactly the wav's samples.
    assert len(raw.content) == 2 * samples.shape[0]
    assert np.frombuffer(raw.content, "<i2").tobytes() == samples.astype("<i2").tobytes()
    assert np.abs(samples).max() > AUDIBLE * 32768


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "wav", "pcm", "aac"])
def test_openai_speech_formats(env, fmt):
    body = {
        "model": "tts-1",
        "input": SHORT_TEXT,
        "voice": "alice",
        "response_format": fmt,
        "lang": "en",
        "seed": 3,
    }
    response = env.client.post("/v1/audio/speech", json=body)
    if fmt == "aac" and not shutil.which("ffmpeg"):
        assert_error(response, 400, "ffmpeg")
        return
    assert response.status_code == 200, response.text
    seconds = float(response.headers["x-audio-seconds"])
    if fmt == "pcm":
        assert response.headers["x-sample-rate"] == "24000"
        assert abs(len(response.content) / 2 - seconds * 24000) <= 2
        samples = np.frombuffer(response.content, "<i2").astype(np.float32) / 32768
        assert_audible(samples, 0.5, 24000)
    elif fmt == "aac":
        assert response.content[:2] in (b"\xff\xf1", b"\xff\xf9")
    else:
        samples, rate = decode(response.content)
        assert abs(samples.shape[0] / rate - seconds) < 0.1
        assert_audible(samples, 0.5, rate)


# -- streaming --------------------------------------------------------------------------------------------


def read_stream(client, method: str, url: str, **kwargs) -> tuple[list[bytes], list[float], httpx.Response]:
    chunks, arrivals = [], []
    started = time.perf_counter()
    with client.stream(method, url, **kwargs) as response:
        if response.status_code != 200:
            response.read()
            return [], [], response
        for chunk in response.iter_raw():
            chunks.append(chunk)
            arrivals.append(time.perf_counter() - started)
    return chunks, arrivals, response


def test_tts_streaming_arrives_in_several_chunks(env):
    # Upstream's clients send streaming_mode=true in the query string (fragment mode).
    chunks, arrivals, response = read_stream(
        env.client,
        "GET",
        "/tts",
        params=tts_query(text=THREE_PIECES, streaming_mode="true", media_type="wav"),
    )
    assert response.status_code == 200, response.text
    assert len(chunks) >= 3, len(chunks)
    assert arrivals[-1] - arrivals[0] > 0.05  # pieces arrive as they are made, not all at the end
    data = b"".join(chunks)
    samples, rate = decode(data)
    assert rate == 32000
    # Four pieces of the random model, each followed by 0.3 s of silence.
    assert_audible(samples, 1.0, rate)
    # The same request unstreamed gives the same samples (same seed).
    whole = env.client.post("/tts", json=tts_query(text=THREE_PIECES, media_type="raw"))
    assert np.frombuffer(data[44:], "<i2").tobytes() == whole.content


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "pcm", "wav"])
def test_openai_streaming_formats_decode(env, fmt, tmp_path):
    # Token-level streaming: even one piece of text arrives in several chunks.
    body = {
        "input": SHORT_TEXT,
        "voice": "bob",
        "response_format": fmt,
        "lang": "en",
        "seed": 4,
        "stream": True,
    }
    chunks, _, response = read_stream(env.client, "POST", "/v1/audio/speech", json=body)
    assert response.status_code == 200, response.text
    assert len(chunks) >= 2
    data = b"".join(chunks)
    if fmt == "pcm":
        assert len(data) % 2 == 0
        samples, rate = np.frombuffer(data, "<i2").astype(np.float32) / 32768, 24000
    elif fmt == "flac":
        samples = decode_flac_stream(data, tmp_path).astype(np.float32) / 32768
        rate = 32000
    else:
        samples, rate = decode(data)
    assert_audible(samples, 1.0, rate)
    if fmt == "wav":
        # The whole-file answer has the same length (token streaming cross-fades its joins, so
        # the samples differ slightly, but not the duration).
        whole = env.client.post("/v1/audio/speech", json={**body, "stream": False})
        expected, _ = sf.read(io.BytesIO(whole.content), dtype="float32")
        assert abs(samples.shape[0] - expected.shape[0]) <= 1280


def test_token_streaming_modes_2_and_3(env):
    counts = {}
    for mode in (2, 3):
        query = tts_query(streaming_mode=mode, media_type="raw", min_chunk_length=10)
        chunks, arrivals, response = read_stream(env.client, "GET", "/tts", params=query)
        assert response.status_code == 200, response.text
        samples = np.frombuffer(b"".join(chunks), "<i2")
        assert samples.shape[0] > 32000 and np.abs(samples).max() > AUDIBLE * 32768
        counts[mode] = len(chunks)
    # 75 tokens of the random model: several token chunks (mode 3: one per 10 tokens).
    assert counts[2] >= 3 and counts[3] >= 5, counts
    assert_error(env.client.get("/tts", params=tts_query(streaming_mode=3, min_chunk_length=0)), 400)


# -- concurrency: per-request voices -------------------------------------------------------------------------


def test_concurrent_requests_with_different_voices_get_their_own_audio(env):
    def speak(voice: str) -> bytes:
        body = {"input": TWO_PIECES, "voice": voice, "response_format": "wav", "lang": "en", "seed": 11}
        response = env.client.post("/v1/audio/speech", json=body)
        assert response.status_code == 200, response.text
        return response.content

    alone = {voice: speak(voice) for voice in ("alice", "bob")}
    assert alone["alice"] != alone["bob"]
    with ThreadPoolExecutor(4) as pool:
        futures = [(voice, pool.submit(speak, voice)) for voice in ("alice", "bob", "bob")]
        together = [(voice, future.result(timeout=60)) for voice, future in futures]
    for voice, data in together:
        assert data == alone[voice], f"{voice}'s audio changed when another voice spoke at the same time"


# -- bounded queue, cancellation --------------------------------------------------------------------------


def tight_health(env) -> dict:
    return env.tight_client.get("/health").json()


def test_queue_full_429_then_disconnect_stops_synthesis(env):
    client = env.tight_client
    query = tts_query(text=LONG_TEXT, streaming_mode=1, media_type="raw")
    with client.stream("GET", "/tts", params=query) as slow:
        assert slow.status_code == 200
        # Keep the iterator: dropping it would close the connection (a disconnect) at once.
        stream = slow.iter_raw()
        assert len(next(stream)) > 0
        assert tight_health(env)["running"] == 1
        refused = client.get("/tts", params=tts_query())
        body = assert_error(refused, 429, "busy")
        assert body["error"]["type"] == "rate_limit_error"
        assert int(refused.headers["retry-after"]) >= 1
        refused = client.post(
            "/v1/voices", files={"file": ("x.wav", b"RIFF", "audio/wav")}, data={"name": "x"}
        )
        assert_error(refused, 429)
        assert len(next(stream)) > 0  # the slow stream went on meanwhile
        disconnected_at = time.monotonic()
    # The client is gone: the job stops after at most the piece in progress (the long text has 40).
    assert wait_until(lambda: tight_health(env)["running"] == 0, timeout=5), tight_health(env)
    assert time.monotonic() - disconnected_at < 5
    assert tight_health(env)["queue_depth"] == 0
    again = client.get("/tts", params=tts_query(media_type="raw"))
    assert again.status_code == 200


def test_token_stream_disconnect_stops_decoding(env):
    query = tts_query(text=LONG_TEXT, streaming_mode=2, media_type="wav")
    with env.tight_client.stream("GET", "/tts", params=query) as response:
        stream = response.iter_raw()
        assert len(next(stream)) > 0
        assert tight_health(env)["running"] == 1
        disconnected_at = time.monotonic()
    assert wait_until(lambda: tight_health(env)["running"] == 0, timeout=5), tight_health(env)
    assert time.monotonic() - disconnected_at < 5
    assert env.tight_client.get("/tts", params=tts_query(media_type="raw")).status_code == 200


def test_non_streaming_client_that_gives_up_cancels_its_job(env):
    query = tts_query(text=LONG_TEXT, media_type="raw")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{env.tight.url}/tts", params=query, timeout=httpx.Timeout(10, read=0.8))
    assert wait_until(lambda: tight_health(env)["running"] == 0, timeout=5), tight_health(env)
    closed = 'gsv_requests_total{endpoint="/tts",status="499"}'  # counted as "client closed request"
    assert wait_until(lambda: closed in env.tight_client.get("/metrics").text, timeout=5)
    assert env.tight_client.get("/tts", params=tts_query(media_type="raw")).status_code == 200


# -- path confinement ------------------------------------------------------------------------------------------


def traversal_attempts(env) -> list[str]:
    return [
        "../outside/secret.wav",
        "sub/../../outside/secret.wav",
        str(env.secret),
        str(env.secret.resolve()),
        "escape.wav",  # a symlink inside the directory pointing out of it
        "escape_dir/secret.wav",  # a path through a symlinked directory
        "a.wav\x00.txt",
        "/etc/passwd",
        "//etc/passwd",
    ]


def test_path_traversal_is_refused_and_nothing_is_read(env):
    before = len(env.recorder.calls)
    for attempt in traversal_attempts(env):
        assert_error(env.client.get("/tts", params=tts_query(ref_audio_path=attempt)), 403)
        assert_error(env.client.post("/tts", json=tts_query(ref_audio_path=attempt)), 403)
        assert_error(env.client.get("/set_refer_audio", params={"refer_audio_path": attempt}), 403)
    # Extra references follow the same rule.
    assert_error(env.client.post("/tts", json=tts_query(aux_ref_audio_paths=["../outside/secret.wav"])), 403)
    assert len(env.recorder.calls) == before, "a refused path reached the reference encoder"
    # The same clip inside the allowed directory works (so the refusals above are about the path).
    shutil.copy(env.secret, env.refs / "inside_copy.wav")
    assert env.client.get("/tts", params=tts_query(ref_audio_path="inside_copy.wav")).status_code == 200
    assert env.client.get("/set_refer_audio", params={"refer_audio_path": "sub/b.wav"}).json() == {
        "message": "success"
    }


def test_bundle_switch_is_confined(env, tmp_path):
    client = env.tight_client
    assert_error(client.get("/set_gpt_weights", params={"weights_path": str(tmp_path)}), 403)
    assert_error(client.get("/set_sovits_weights", params={"weights_path": "/etc"}), 403)
    assert_error(client.get("/set_gpt_weights", params={"weights_path": "x.ckpt"}), 400, "converted bundles")
    assert_error(client.get("/set_gpt_weights"), 400)
    response = client.get("/set_sovits_weights", params={"weights_path": str(env.bundle)})
    assert response.status_code == 200 and response.json() == {"message": "success"}
    assert tight_health(env)["bundle_id"] == env.tts.bundle_id


# -- bad inputs give the right codes -----------------------------------------------------------------------------


def test_bad_parameters(env):
    client = env.client
    assert_error(client.get("/tts", params=tts_query(text_lang="xx")), 400, "text_lang")
    assert_error(client.get("/tts", params=tts_query(text="")), 400, "text")
    assert_error(client.post("/tts", json=tts_query(text="  \n ")), 400, "empty")
    assert_error(client.get("/tts", params={"text": "hi", "ref_audio_path": "a.wav"}), 400, "text_lang")
    assert_error(client.get("/tts", params=tts_query(ref_audio_path="")), 400, "ref_audio_path")
    assert_error(client.get("/tts", params=tts_query(media_type="wma")), 400, "media_type")
    assert_error(client.get("/tts", params=tts_query(text_split_method="cut9")), 400, "text_split_method")
    assert_error(client.get("/tts", params=tts_query(streaming_mode=7)), 400, "streaming_mode")
    assert_error(client.get("/tts", params=tts_query(top_p=2)), 400, "top_p")
    assert_error(client.get("/tts", params=tts_query(top_k="many")), 422, "top_k")
    assert_error(client.get("/tts", params=tts_query(text="x" * (MAX_TEXT_CHARS + 1))), 400, "limit")
    assert_error(client.get("/tts", params=tts_query(ref_audio_path="missing.wav")), 404)
    assert_error(client.get("/tts", params=tts_query(text="...", prompt_text="")), 400)
    speech = {"input": SHORT_TEXT, "voice": "alice", "lang": "en"}
    assert_error(client.post("/v1/audio/speech", json={**speech, "lang": "klingon"}), 400, "lang")
    assert_error(client.post("/v1/audio/speech", json={**speech, "input": ""}), 400, "empty")
    assert_error(client.post("/v1/audio/speech", json={**speech, "input": "y" * (MAX_TEXT_CHARS + 1)}), 400)
    assert_error(client.post("/v1/audio/speech", json={**speech, "response_format": "midi"}), 400)
    assert_error(client.post("/v1/audio/speech", json={**speech, "speed": 10}), 422, "speed")
    assert_error(client.post("/v1/audio/speech", json={"voice": "alice"}), 422, "input")
    assert_error(client.post("/v1/audio/speech", json={**speech, "voice": "nobody"}), 404, "nobody")
    assert_error(client.get("/tts", params=tts_query(voice="nobody")), 404)
    assert_error(client.post("/v1/audio/speech", json={**speech, "stream_format": "sse"}), 400)


def test_voice_uploads_are_validated(env):
    client = env.client
    clip = (env.refs / "a.wav").read_bytes()

    def upload(name: str, data: bytes, **fields):
        return client.post(
            "/v1/voices", files={"file": ("clip.wav", data, "audio/wav")}, data={"name": name, **fields}
        )

    assert_error(upload("junk", os.urandom(5000)), 400, "decode")
    assert_error(upload("empty", b""), 400)
    short = io.BytesIO()
    sf.write(short, np.zeros(8000, np.float32) + 0.1, 16000, format="WAV")
    assert_error(upload("short", short.getvalue()), 400, "between")
    assert_error(upload("../evil", clip), 400, "voice name")
    assert_error(upload("alice", clip), 409)
    assert_error(upload("klingon", clip, text="hi", lang="tlh"), 400, "lang")
    big = clip + b"\0" * (MAX_UPLOAD + 1)
    assert_error(upload("big", big), 413)

    # Without Content-Length (chunked), the limit holds on the bytes actually received.
    def chunked():
        boundary = b"--gsvboundary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig2\r\n'
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        yield b"Content-Type: audio/wav\r\n\r\n"
        for _ in range(20):
            yield b"\0" * 65536
        yield b"\r\n" + boundary + b"--\r\n"

    response = client.post(
        "/v1/voices", content=chunked(), headers={"Content-Type": "multipart/form-data; boundary=gsvboundary"}
    )
    assert_error(response, 413)
    names = [v["name"] for v in client.get("/v1/voices").json()["voices"]]
    assert not {"junk", "empty", "short", "big", "big2", "klingon"} & set(names)


def test_voice_management(env):
    client = env.client
    listed = {v["name"]: v for v in client.get("/v1/voices").json()["voices"]}
    assert {"alice", "bob"} <= set(listed)
    assert listed["alice"]["prompt_text"] == PROMPT_TEXT and listed["alice"]["usable"] is True
    assert listed["bob"]["prompt_text"] == ""
    assert client.get("/v1/voices/alice").json()["prompt_lang"] == "en"
    clip = (env.refs / "sub" / "b.wav").read_bytes()
    created = client.post(
        "/v1/voices",
        files={"file": ("b.wav", clip, "audio/wav")},
        data={"name": "carol", "text": "", "lang": "en"},
    )
    assert created.status_code == 201 and created.json()["name"] == "carol"
    speech = {"input": SHORT_TEXT, "voice": "carol", "lang": "en", "response_format": "wav"}
    assert client.post("/v1/audio/speech", json=speech).status_code == 200
    assert client.get("/tts", params=tts_query(voice="carol", ref_audio_path=None)).status_code == 200
    assert client.delete("/v1/voices/carol").status_code == 204
    assert_error(client.delete("/v1/voices/carol"), 404)
    assert_error(client.get("/v1/voices/carol"), 404)
    assert_error(client.post("/v1/audio/speech", json=speech), 404)
    assert_error(client.delete("/v1/voices/bad%20name"), 400, "voice name")
    assert_error(client.delete("/v1/voices/..%2Fetc"), 404)  # decoded to a path no route has


# -- metrics ----------------------------------------------------------------------------------------------


def test_metrics_exposition(env):
    env.client.get("/tts", params=tts_query(media_type="raw"))
    text = env.client.get("/metrics").text
    for needle in (
        'gsv_requests_total{endpoint="/tts",status="200"}',
        'gsv_errors_total{endpoint="/tts",status="400"}',
        'gsv_request_seconds_bucket{endpoint="/tts"',
        "gsv_time_to_first_audio_seconds_count",
        "gsv_real_time_factor_count",
        "gsv_queue_depth",
        "gsv_jobs_running",
        "gsv_audio_seconds_total",
    ):
        assert needle in text, needle


# -- timeouts and faults --------------------------------------------------------------------------------------


def test_request_timeout_is_504_and_stops_the_job(env):
    url = env.short.url
    response = httpx.get(f"{url}/tts", params=tts_query(text=LONG_TEXT, media_type="raw"), timeout=30)
    assert_error(response, 504, "timeout")
    engine = env.short.app.state.engine
    assert wait_until(lambda: engine.running == 0 and engine.admitted == 0, timeout=5)
    # A stream past its timeout is cut off: the client never sees a complete body. (On a loaded
    # machine the first piece may itself take over a second: then it is a 504 before the stream.)
    try:
        response = httpx.get(
            f"{url}/tts", params=tts_query(text=LONG_TEXT, streaming_mode=1, media_type="raw"), timeout=30
        )
    except httpx.RemoteProtocolError:
        pass
    else:
        assert_error(response, 504, "timeout")
    assert wait_until(lambda: engine.running == 0 and engine.admitted == 0, timeout=5)


@contextmanager
def faulty_stream(tts: TTS, transform):
    """Pass every chunk of `tts.stream` through `transform` (fault injection on the real runtime)."""
    original = tts.stream

    @functools.wraps(original)
    def stream(*args, **kwargs):
        for chunk in original(*args, **kwargs):
            yield transform(chunk)

    tts.stream = stream
    try:
        yield
    finally:
        del tts.stream


def test_silence_is_never_a_200(env):
    def silence(chunk):
        return dataclasses.replace(chunk, samples=np.zeros_like(chunk.samples))

    with faulty_stream(env.tts, silence):
        assert_error(env.client.get("/tts", params=tts_query()), 500, "silence")
        assert_error(env.client.get("/tts", params=tts_query(streaming_mode=1)), 500, "silence")
        body = {"input": SHORT_TEXT, "voice": "alice", "lang": "en", "stream": True}
        assert_error(env.client.post("/v1/audio/speech", json=body), 500, "silence")


def test_internal_fault_is_a_logged_json_500(env, caplog):
    def explode(chunk):
        raise RuntimeError("injected fault")

    with caplog.at_level(logging.ERROR, logger="gsv_onnx.server"), faulty_stream(env.tts, explode):
        response = env.client.get("/tts", params=tts_query(), headers={"X-Request-ID": "fault-42"})
    body = assert_error(response, 500, "fault-42")
    assert body["request_id"] == "fault-42" and "injected" not in body["message"]
    assert "fault-42" in caplog.text and "injected fault" in caplog.text
    assert env.main.app.state.engine.admitted == 0


# -- configuration and the `gsv serve` command -------------------------------------------------------------------


def test_config_sources_in_order(tmp_path):
    from gsv_onnx.server.config import ConfigError

    config_file = tmp_path / "serve.json"
    config_file.write_text('{"server": {"bundle": "b.gsv", "workers": 3, "port": 7000, "ref_dirs": ["r1"]}}')
    env = {"GSV_PORT": "8000", "GSV_REF_DIRS": f"r2{os.pathsep}r3", "GSV_API_KEY": "k", "OTHER": "x"}
    config = ServerConfig.load(config_file, env=env, workers=5, host=None)
    assert (config.bundle, config.workers, config.port) == ("b.gsv", 5, 8000)
    assert config.ref_dirs == ["r2", "r3"] and config.api_key == "k" and config.host == "127.0.0.1"
    with pytest.raises(ConfigError, match="unknown setting"):
        ServerConfig.load(None, env={}, bundle="b", colour="blue")
    with pytest.raises(ConfigError, match="workers"):
        ServerConfig.load(None, env={"GSV_WORKERS": "0"}, bundle="b")
    with pytest.raises(ConfigError, match="port"):
        ServerConfig.load(None, env={"GSV_PORT": "eighty"}, bundle="b")
    with pytest.raises(ConfigError, match="bundle"):
        ServerConfig.load(None, env={})


def test_gsv_serve_command_runs_a_server(bundle_path, tmp_path, capsys):
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, GSV_PORT=str(port), GSV_API_KEY="cli-key", GSV_VOICES=str(tmp_path / "voices"))
    command = [
        sys.executable,
        "-m",
        "gsv_onnx.cli",
        "serve",
        "--bundle",
        str(bundle_path),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None

        assert wait_until(up, timeout=60, interval=0.2)
        assert process.poll() is None, process.stdout.read().decode(errors="replace")
        assert httpx.get(f"{url}/v1/voices", timeout=5).status_code == 401
        listed = httpx.get(f"{url}/v1/voices", headers={"Authorization": "Bearer cli-key"}, timeout=5)
        assert listed.status_code == 200 and listed.json() == {"voices": []}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # A bad setting is one line and exit status 2, as every gsv command.
    from gsv_onnx.cli import main

    assert main(["serve", "--bundle", str(bundle_path), "--workers", "0"]) == 2
    assert "workers must be >= 1" in capsys.readouterr().err
