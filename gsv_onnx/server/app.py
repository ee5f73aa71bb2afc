"""The HTTP app: upstream api_v2's `/tts` (+ control endpoints), OpenAI's `/v1/audio/speech`,
voice management, `/health` and `/metrics`.

State is per request: a request names its voice (a stored voice or a reference path), nothing is
global but the loaded bundle. Failures are HTTP errors with a JSON body
`{"message": ..., "error": {"message", "type", "code"}, "request_id": ...}`; never a 200 with silence.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import shutil
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from gsv_onnx import __version__
from gsv_onnx.audio import encode, resample, to_int16
from gsv_onnx.errors import (
    AudioError,
    BundleError,
    GsvError,
    MissingDependencyError,
    OptionsError,
    TextError,
    VoiceError,
)
from gsv_onnx.server.config import ServerConfig
from gsv_onnx.server.engine import Engine, Job, JobTimeout, QueueFull
from gsv_onnx.server.metrics import Metrics
from gsv_onnx.server.voices import (
    PathNotAllowed,
    VoiceNotFound,
    VoiceStore,
    check_voice_name,
    resolve_ref_path,
)

log = logging.getLogger("gsv_onnx.server")

LANGUAGES = ("auto", "auto_yue", "en", "zh", "ja", "yue", "ko", "all_zh", "all_ja", "all_yue", "all_ko")
SPLIT_METHODS = ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")
API_V2_MEDIA = ("wav", "raw", "ogg", "aac", "flac", "mp3", "opus")
OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
#: OpenAI's raw pcm is 24 kHz 16-bit little-endian; clients assume that rate.
OPENAI_PCM_RATE = 24000
CONTENT_TYPES = {
    "wav": "audio/wav",
    "raw": "audio/raw",
    "pcm": "audio/pcm",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "aac": "audio/aac",
}


class ApiError(Exception):
    """An HTTP error with a status and a message for the client."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}


class TTSParams(BaseModel):
    """Parameters of upstream api_v2's /tts, with its names and defaults (spec §8.1).

    Extensions: `voice` (a stored voice instead of `ref_audio_path`), `noise_scale`.
    Accepted for compatibility but without effect on a V2 CPU engine: batch_size, batch_threshold,
    split_bucket, parallel_infer, sample_steps, super_sampling.
    """

    text: str | None = None
    text_lang: str | None = None
    ref_audio_path: str | None = None
    aux_ref_audio_paths: list[str] | None = None
    prompt_text: str = ""
    prompt_lang: str | None = None
    voice: str | None = None
    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    text_split_method: str = "cut5"
    batch_size: int = 1
    batch_threshold: float = 0.75
    split_bucket: bool = True
    speed_factor: float = 1.0
    fragment_interval: float = 0.3
    seed: int = -1
    media_type: str = "wav"
    streaming_mode: bool | int = False
    parallel_infer: bool = True
    repetition_penalty: float = 1.35
    sample_steps: int = 32
    super_sampling: bool = False
    overlap_length: int = 2
    min_chunk_length: int = 16
    noise_scale: float = 0.5


class SpeechParams(BaseModel):
    """OpenAI's POST /v1/audio/speech body (plus `lang`, `seed` and sampling extensions)."""

    model: str = "gsv"
    input: str
    voice: str
    response_format: str = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream: bool = False
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: str | None = None
    lang: str = "auto"
    seed: int = -1
    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0


def create_app(config: ServerConfig, tts=None) -> FastAPI:
    """Build the app for `config`; `tts` (a loaded `TTS`) is loaded from `config.bundle` if None."""
    if tts is None:
        from gsv_onnx.runtime.options import RuntimeOptions
        from gsv_onnx.runtime.tts import TTS

        options = RuntimeOptions(intra_op_threads=config.threads) if config.threads else None
        tts = TTS.load(config.bundle, options)
    engine = Engine(config.workers, config.queue_size, config.request_timeout)
    store = VoiceStore(config.voices)
    metrics = Metrics(engine)
    allowed_dirs = [Path(store.directory)] + [Path(d) for d in config.ref_dirs]
    bundle_dirs = (
        [Path(config.bundle).resolve().parent] + [Path(d) for d in config.ref_dirs] if config.bundle else []
    )

    app = FastAPI(
        title="gsv-onnx",
        version=__version__,
        description=(
            "GPT-SoVITS V2 text-to-speech on CPU. `/tts` follows upstream api_v2; `/v1/audio/speech` "
            "follows OpenAI's speech API; voices are managed under `/v1/voices`."
        ),
    )
    app.state.tts = tts
    app.state.engine = engine
    app.state.store = store
    app.state.metrics = metrics
    app.state.config = config

    # -- middleware: request id, auth, size limit, metrics --------------------------------------

    @app.middleware("http")
    async def frame(request: Request, call_next):
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        request.state.request_id = request_id
        endpoint = _endpoint_label(request)
        try:
            if config.api_key and request.url.path != "/health":
                header = request.headers.get("authorization", "")
                token = header[7:] if header.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(token.encode(), config.api_key.encode()):
                    raise ApiError(
                        401,
                        "missing or wrong API key: send 'Authorization: Bearer <key>'",
                        "authentication_error",
                        {"WWW-Authenticate": "Bearer"},
                    )
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > config.max_upload_bytes + 64 * 1024:
                raise ApiError(
                    413,
                    f"request body of {length} bytes is over the limit of {config.max_upload_bytes} bytes",
                    "request_too_large",
                )
            response = await call_next(request)
        except ApiError as exc:
            response = _error_response(exc, request_id)
        response.headers["X-Request-ID"] = request_id
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        if response.status_code >= 400:
            metrics.errors.labels(endpoint).inc()
        return response

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error_response(exc, request.state.request_id)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return _error_response(ApiError(422, _validation_message(exc)), request.state.request_id)

    @app.exception_handler(Exception)
    async def _fault(request: Request, exc: Exception):
        request_id = getattr(request.state, "request_id", "-")
        log.exception("request %s failed", request_id)
        return _error_response(
            ApiError(500, f"internal error (request id {request_id})", "server_error"), request_id
        )

    # -- helpers bound to this app ---------------------------------------------------------------

    def admit() -> Job:
        try:
            return engine.admit()
        except QueueFull:
            retry = max(1, int(config.request_timeout // 10))
            raise ApiError(
                429,
                "the server is busy: every synthesis worker is taken and the queue is full; retry later",
                "rate_limit_error",
                {"Retry-After": str(retry)},
            ) from None

    def voice_from_ref(ref_path: str, prompt_text: str, prompt_lang: str, aux: list[str]):
        real = resolve_ref_path(ref_path, allowed_dirs)
        aux_real = [resolve_ref_path(p, allowed_dirs) for p in aux]
        current = app.state.tts
        stats = [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in [real, *aux_real]]
        key = ("ref", current.bundle_id, tuple(stats), prompt_text, prompt_lang)
        return store.cached(
            key, lambda: current.prepare_voice(real, text=prompt_text, lang=prompt_lang, aux_refs=aux_real)
        )

    async def collect(job: Job, make_chunks, request: Request) -> list:
        """Run a job to the end, cancelling it if the client goes away."""
        chunks = []

        async def watch() -> None:
            while not job.cancel.is_set():
                if await request.is_disconnected():
                    job.cancel.set()
                    return
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch())
        try:
            async for chunk in engine.run(job, make_chunks):
                chunks.append(chunk)
        except JobTimeout:
            raise ApiError(
                504,
                f"synthesis took longer than the {config.request_timeout:g} s request timeout; "
                "send shorter text",
                "timeout",
            ) from None
        finally:
            watcher.cancel()
        return chunks

    async def stream_body(job: Job, make_chunks, fmt: str, sample_rate_out: int | None, endpoint: str):
        """A StreamingResponse whose status reflects errors before the first chunk."""
        agen = engine.run(job, make_chunks)
        try:
            first = await agen.__anext__()
        except StopAsyncIteration:
            engine.release(job)
            raise ApiError(400, "the text has nothing to say") from None
        except JobTimeout:
            engine.release(job)
            raise ApiError(504, "synthesis timed out before the first audio", "timeout") from None
        except BaseException:
            engine.release(job)
            raise
        started = job.started

        async def body():
            produced = 0.0
            try:
                chunk = first
                if fmt == "wav":
                    yield _wav_stream_header(sample_rate_out or chunk.sample_rate)
                while True:
                    produced += chunk.duration
                    yield await asyncio.to_thread(_encode_chunk, chunk, fmt, sample_rate_out)
                    try:
                        chunk = await agen.__anext__()
                    except StopAsyncIteration:
                        break
            except JobTimeout:
                log.warning("stream timed out after %.1f s of audio", produced)
                raise
            finally:
                await agen.aclose()
                engine.release(job)
                elapsed = time.perf_counter() - started
                metrics.latency.labels(endpoint).observe(elapsed)
                if job.first_audio is not None:
                    metrics.first_audio.observe(job.first_audio)
                if produced > 0:
                    metrics.audio_seconds.inc(produced)
                    metrics.rtf.observe(elapsed / produced)

        return StreamingResponse(body(), media_type=CONTENT_TYPES[fmt])

    async def respond(
        request: Request,
        job: Job,
        make_chunks,
        fmt: str,
        streaming: bool,
        rate_out: int | None,
        endpoint: str,
    ) -> Response:
        if streaming:
            return await stream_body(job, make_chunks, fmt, rate_out, endpoint)
        try:
            chunks = await collect(job, make_chunks, request)
        finally:
            engine.release(job)
        if not chunks:
            raise ApiError(400, "the text has nothing to say")
        samples = np.concatenate([c.samples for c in chunks])
        rate = chunks[0].sample_rate
        elapsed = time.perf_counter() - job.started
        duration = len(samples) / rate
        metrics.latency.labels(endpoint).observe(elapsed)
        if job.first_audio is not None:
            metrics.first_audio.observe(job.first_audio)
        metrics.audio_seconds.inc(duration)
        if duration > 0:
            metrics.rtf.observe(elapsed / duration)
        data = await asyncio.to_thread(_encode_all, samples, rate, fmt, rate_out)
        seed = getattr(chunks[0], "seed", None)
        headers = {"X-Audio-Seconds": f"{duration:.3f}", "X-Sample-Rate": str(rate_out or rate)}
        if seed is not None:
            headers["X-Seed"] = str(seed)
        return Response(content=data, media_type=CONTENT_TYPES[fmt], headers=headers)

    def synth_chunks(voice, text: str, lang: str, options: dict[str, Any]):
        current = app.state.tts

        def make_chunks(cancel=None):
            resolved = voice() if callable(voice) else voice
            kwargs = dict(options)
            if cancel is not None and _accepts(current.stream, "cancel"):
                kwargs["cancel"] = cancel
            return current.stream(text, resolved, lang=lang, **kwargs)

        return make_chunks

    # -- api_v2 ------------------------------------------------------------------------------------

    async def tts_endpoint(request: Request, params: TTSParams) -> Response:
        text = (params.text or "").strip("\n")
        if not text.strip():
            raise ApiError(400, "text is required")
        if len(text) > config.max_text_chars:
            raise ApiError(
                400,
                f"text is {len(text)} characters, over this server's limit of "
                f"{config.max_text_chars}; split it into several requests",
            )
        lang = _check_lang(params.text_lang, "text_lang")
        media = (params.media_type or "").lower()
        if media not in API_V2_MEDIA:
            raise ApiError(
                400,
                f"media_type {params.media_type!r} is not supported; use one of {', '.join(API_V2_MEDIA)}",
            )
        _check_encoder(media)
        if params.text_split_method not in SPLIT_METHODS:
            raise ApiError(
                400,
                f"text_split_method {params.text_split_method!r} is not supported; use one of "
                f"{', '.join(SPLIT_METHODS)}",
            )
        mode = int(params.streaming_mode)
        if mode not in (0, 1, 2, 3):
            raise ApiError(
                400, f"streaming_mode {params.streaming_mode!r} is invalid; use 0-3 (or true/false)"
            )
        options = {
            "top_k": params.top_k,
            "top_p": params.top_p,
            "temperature": params.temperature,
            "repetition_penalty": params.repetition_penalty,
            "text_split_method": params.text_split_method,
            "speed_factor": params.speed_factor,
            "fragment_interval": params.fragment_interval,
            "seed": None if params.seed == -1 else params.seed,
            "noise_scale": params.noise_scale,
        }
        if params.voice:
            voice: Any = store.load(params.voice)
        elif params.ref_audio_path:
            prompt_text = params.prompt_text or ""
            prompt_lang = _check_lang(params.prompt_lang or lang, "prompt_lang") if prompt_text else "zh"
            # Resolve the paths now so a refused path is a 4xx before any work is queued.
            resolve_ref_path(params.ref_audio_path, allowed_dirs)
            for aux in params.aux_ref_audio_paths or []:
                resolve_ref_path(aux, allowed_dirs)
            ref_path, aux_paths = params.ref_audio_path, list(params.aux_ref_audio_paths or [])
            voice = lambda: voice_from_ref(ref_path, prompt_text, prompt_lang, aux_paths)  # noqa: E731
        else:
            raise ApiError(400, "ref_audio_path is required (or 'voice', the name of a stored voice)")
        job = admit()
        make_chunks = synth_chunks(voice, text, lang, options)
        return await respond(
            request, job, make_chunks, "pcm" if media == "raw" else media, mode > 0, None, "tts"
        )

    @app.get("/tts", summary="Synthesize (upstream api_v2, query parameters)", tags=["api_v2"])
    async def tts_get(request: Request) -> Response:
        query = dict(request.query_params)
        if "text_lang" in query:
            query["text_lang"] = query["text_lang"].lower()
        if "aux_ref_audio_paths" in request.query_params:
            query["aux_ref_audio_paths"] = request.query_params.getlist("aux_ref_audio_paths")
        try:
            params = TTSParams.model_validate(query)
        except ValidationError as exc:
            raise ApiError(400, _validation_message(exc)) from None
        return await tts_endpoint(request, params)

    @app.post("/tts", summary="Synthesize (upstream api_v2, JSON body)", tags=["api_v2"])
    async def tts_post(request: Request, params: TTSParams) -> Response:
        return await tts_endpoint(request, params)

    @app.get("/set_refer_audio", tags=["api_v2"], summary="Prepare a reference clip ahead of use")
    async def set_refer_audio(refer_audio_path: str = "") -> JSONResponse:
        if not refer_audio_path:
            raise ApiError(400, "refer_audio_path is required")
        resolve_ref_path(refer_audio_path, allowed_dirs)
        job = admit()
        try:
            async for _ in engine.run(job, lambda: iter([voice_from_ref(refer_audio_path, "", "zh", [])])):
                pass
        except JobTimeout:
            raise ApiError(504, "preparing the reference timed out", "timeout") from None
        finally:
            engine.release(job)
        return JSONResponse({"message": "success"})

    async def switch_bundle(weights_path: str) -> JSONResponse:
        if not weights_path:
            raise ApiError(400, "weights_path is required")
        if weights_path.endswith((".ckpt", ".pth")):
            raise ApiError(
                400,
                "this server loads converted bundles, not checkpoints: run "
                "'gsv convert --gpt X.ckpt --sovits Y.pth ... -o DIR' and pass that DIR",
            )
        real = Path(os.path.realpath(weights_path))
        if not any(
            real == Path(os.path.realpath(d)) or Path(os.path.realpath(d)) in real.parents
            for d in bundle_dirs
        ):
            raise ApiError(
                403, f"{weights_path!r} is outside the directories this server may load bundles from"
            )
        from gsv_onnx.runtime.tts import TTS

        current = app.state.tts
        app.state.tts = await asyncio.to_thread(TTS.load, real, current.runtime_options)
        return JSONResponse({"message": "success"})

    @app.get("/set_gpt_weights", tags=["api_v2"], summary="Load another converted bundle")
    async def set_gpt_weights(weights_path: str = "") -> JSONResponse:
        return await switch_bundle(weights_path)

    @app.get("/set_sovits_weights", tags=["api_v2"], summary="Load another converted bundle")
    async def set_sovits_weights(weights_path: str = "") -> JSONResponse:
        return await switch_bundle(weights_path)

    # -- OpenAI ------------------------------------------------------------------------------------

    @app.post("/v1/audio/speech", tags=["openai"], summary="Synthesize (OpenAI speech API)")
    async def speech(request: Request, params: SpeechParams) -> Response:
        text = params.input
        if not text.strip():
            raise ApiError(400, "input is empty; give some text to say")
        if len(text) > config.max_text_chars:
            raise ApiError(
                400, f"input is {len(text)} characters, over this server's limit of {config.max_text_chars}"
            )
        fmt = params.response_format.lower()
        if fmt not in OPENAI_FORMATS:
            raise ApiError(
                400,
                f"response_format {params.response_format!r} is not supported; use one of "
                f"{', '.join(OPENAI_FORMATS)}",
            )
        _check_encoder(fmt)
        if params.stream_format == "sse":
            raise ApiError(400, "stream_format 'sse' is not supported; use 'audio'")
        lang = _check_lang(params.lang, "lang")
        voice = store.load(params.voice)
        options = {
            "speed_factor": params.speed,
            "seed": None if params.seed == -1 else params.seed,
            "top_k": params.top_k,
            "top_p": params.top_p,
            "temperature": params.temperature,
            "text_split_method": "cut5",
        }
        job = admit()
        rate_out = OPENAI_PCM_RATE if fmt == "pcm" else None
        return await respond(
            request, job, synth_chunks(voice, text, lang, options), fmt, params.stream, rate_out, "speech"
        )

    # -- voices --------------------------------------------------------------------------------------

    @app.get("/v1/voices", tags=["voices"], summary="List stored voices")
    async def list_voices() -> JSONResponse:
        voices = []
        for name in store.names():
            try:
                voice = store.load(name)
            except GsvError as exc:
                voices.append({"name": name, "error": str(exc)})
                continue
            voices.append(
                {
                    "name": name,
                    "prompt_text": voice.prompt_text,
                    "prompt_lang": voice.prompt_lang,
                    "languages": list(voice.languages),
                    "usable": voice.bundle_id == app.state.tts.bundle_id,
                }
            )
        return JSONResponse({"voices": voices})

    @app.post("/v1/voices", status_code=201, tags=["voices"], summary="Create a voice from a reference clip")
    async def create_voice(
        request: Request,
        file: UploadFile = File(..., description="3-10 s reference clip (wav, flac, ogg, mp3)"),
        name: str = Form(...),
        text: str = Form("", description="what the clip says (empty: reference-free voice)"),
        lang: str = Form("zh"),
        overwrite: bool = Form(False),
    ) -> JSONResponse:
        try:
            check_voice_name(name)
        except GsvError as exc:
            raise ApiError(400, str(exc)) from None
        lang = _check_lang(lang, "lang")
        if store.path(name).exists() and not overwrite:
            raise ApiError(
                409, f"a voice named {name!r} exists; DELETE it first or send overwrite=true", "conflict"
            )
        data = await _read_limited(file, config.max_upload_bytes)
        job = admit()
        current = app.state.tts
        try:
            voices = [
                v
                async for v in engine.run(
                    job, lambda: iter([current.prepare_voice(data, text=text, lang=lang)])
                )
            ]
        except JobTimeout:
            raise ApiError(504, "preparing the voice timed out", "timeout") from None
        finally:
            engine.release(job)
        store.save(name, voices[0])
        return JSONResponse(
            {"name": name, "prompt_text": voices[0].prompt_text, "prompt_lang": voices[0].prompt_lang},
            status_code=201,
        )

    @app.delete("/v1/voices/{name}", status_code=204, tags=["voices"], summary="Delete a stored voice")
    async def delete_voice(name: str) -> Response:
        try:
            check_voice_name(name)
        except GsvError as exc:
            raise ApiError(400, str(exc)) from None
        store.delete(name)
        return Response(status_code=204)

    # -- service -------------------------------------------------------------------------------------

    @app.get("/health", tags=["service"], summary="Liveness (no API key needed)")
    async def health() -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "bundle_id": app.state.tts.bundle_id,
                "workers": config.workers,
                "running": engine.running,
                "queue_depth": engine.queue_depth,
            }
        )

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.on_event("shutdown")
    async def _shutdown() -> None:
        engine.shutdown()

    # Map the project's own errors to HTTP statuses (registered last: most specific first).
    for error_type, status in (
        (VoiceNotFound, 404),
        (PathNotAllowed, 403),
        (MissingDependencyError, 400),
        (TextError, 400),
        (OptionsError, 400),
        (AudioError, 400),
        (VoiceError, 400),
        (BundleError, 400),
        (GsvError, 400),
    ):
        app.add_exception_handler(error_type, _status_handler(status))
    return app


def _status_handler(status: int):
    async def handler(request: Request, exc: Exception):
        return _error_response(ApiError(status, str(exc), type(exc).__name__), request.state.request_id)

    return handler


def _error_response(exc: ApiError, request_id: str) -> JSONResponse:
    body = {
        "message": exc.message,
        "error": {"message": exc.message, "type": exc.kind, "code": exc.status},
        "request_id": request_id,
    }
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where or 'request'}: {error.get('msg')}")
    return "bad parameters: " + "; ".join(parts)


def _endpoint_label(request: Request) -> str:
    path = request.url.path
    if path.startswith("/v1/voices"):
        return "/v1/voices"
    known = (
        "/tts",
        "/v1/audio/speech",
        "/health",
        "/metrics",
        "/set_refer_audio",
        "/set_gpt_weights",
        "/set_sovits_weights",
        "/docs",
        "/openapi.json",
    )
    return path if path in known else "other"


def _check_lang(lang: str | None, name: str) -> str:
    if not lang:
        raise ApiError(400, f"{name} is required; use one of {', '.join(LANGUAGES)}")
    if lang.lower() not in LANGUAGES:
        raise ApiError(400, f"{name} {lang!r} is not supported; use one of {', '.join(LANGUAGES)}")
    return lang.lower()


def _check_encoder(fmt: str) -> None:
    if fmt == "aac" and not shutil.which("ffmpeg"):
        raise ApiError(
            400, "aac needs ffmpeg on the server, which is not installed; use wav, ogg, flac or mp3"
        )


def _accepts(function, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = bytearray()
    while True:
        block = await upload.read(1 << 16)
        if not block:
            break
        data.extend(block)
        if len(data) > limit:
            raise ApiError(
                413, f"the upload is over the limit of {limit} bytes; send a 3-10 s clip", "request_too_large"
            )
    if not data:
        raise ApiError(400, "the uploaded file is empty; send a 3-10 s audio clip")
    return bytes(data)


def _wav_stream_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header for a stream of unknown length (sizes set to the maximum)."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )


def _encode_chunk(chunk, fmt: str, rate_out: int | None) -> bytes:
    samples, rate = chunk.samples, chunk.sample_rate
    if rate_out and rate_out != rate:
        samples, rate = resample(samples, rate, rate_out), rate_out
    if fmt in ("wav", "pcm"):
        return to_int16(samples).astype("<i2").tobytes()
    return _encode_all(samples, rate, fmt, None)


def _encode_all(samples: np.ndarray, rate: int, fmt: str, rate_out: int | None) -> bytes:
    if rate_out and rate_out != rate:
        samples, rate = resample(samples, rate, rate_out), rate_out
    if fmt == "aac":
        return _ffmpeg_aac(samples, rate)
    return encode(samples, rate, fmt)


def _ffmpeg_aac(samples: np.ndarray, rate: int) -> bytes:
    """AAC in an ADTS stream at 192 kbit/s through ffmpeg, as upstream does."""
    pcm = to_int16(samples).astype("<i2").tobytes()
    command = [
        "ffmpeg",
        "-loglevel",
        "error",
        "-f",
        "s16le",
        "-ar",
        str(rate),
        "-ac",
        "1",
        "-i",
        "pipe:0",
        "-c:a",
        "aac",
        "-b:a",
        "192k",
        "-f",
        "adts",
        "pipe:1",
    ]
    result = subprocess.run(command, input=pcm, capture_output=True, timeout=120, check=False)
    if result.returncode != 0:
        raise AudioError(f"ffmpeg failed to encode aac: {result.stderr.decode(errors='replace')[:200]}")
    return result.stdout
