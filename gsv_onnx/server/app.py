"""The HTTP app: upstream api_v2's `/tts` (+ control endpoints), OpenAI's `/v1/audio/speech`,
voice management, `/health` and `/metrics`.

State is per request: a request names its voice (a stored voice or a reference path), nothing is
global but the loaded bundle. Failures are HTTP errors with a JSON body
`{"message": ..., "error": {"message", "type", "code"}, "request_id": ...}`; never a 200 with
silence. Synthesis runs on a bounded worker pool (`engine.Engine`): a full queue answers 429 with
Retry-After, a request past its timeout 504, and a client that goes away cancels its job.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gsv_onnx import __version__
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
from gsv_onnx.server.encoding import CONTENT_TYPES, StreamEncoder, encode_all, format_available
from gsv_onnx.server.engine import Engine, Job, JobTimeout, QueueFull
from gsv_onnx.server.metrics import Metrics
from gsv_onnx.server.voices import (
    PathNotAllowed,
    ReferenceTooLarge,
    VoiceNotFound,
    VoiceStore,
    check_voice_name,
    read_confined,
    resolve_ref_path,
)

log = logging.getLogger("gsv_onnx.server")

LANGUAGES = ("auto", "auto_yue", "en", "zh", "ja", "ko", "yue", "all_zh", "all_ja", "all_yue", "all_ko")
SPLIT_METHODS = ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")
API_V2_MEDIA = ("wav", "raw", "ogg", "aac", "flac", "mp3", "opus")
OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
#: OpenAI's raw pcm is 24 kHz 16-bit little-endian mono; clients assume that rate.
OPENAI_PCM_RATE = 24000
#: A response whose audio never exceeds this peak is silence: a fault, never a 200.
SILENCE_PEAK = 1e-6
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ApiError(GsvError):
    """An HTTP error with a status and a message for the client."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}


# -- request and response models (they make the OpenAPI schema) ----------------------------------


class TTSParams(BaseModel):
    """Parameters of upstream api_v2's /tts, with its names and defaults (spec §8.1).

    Extensions: `voice` (a stored voice instead of `ref_audio_path`) and `noise_scale`.
    Accepted for compatibility without effect on this engine: batch_size, batch_threshold,
    split_bucket, parallel_infer, sample_steps, super_sampling, overlap_length.
    """

    text: str | None = Field(None, description="text to say (required)")
    text_lang: str | None = Field(
        None, description=f"language of the text (required): {', '.join(LANGUAGES)}"
    )
    ref_audio_path: str | None = Field(
        None,
        description="reference clip (3-10 s) on the server, inside a configured reference directory; "
        "relative paths are taken in the first one. Required unless `voice` is given",
    )
    aux_ref_audio_paths: list[str] | None = Field(
        None, description="extra reference clips averaged into the timbre (same directory rules)"
    )
    prompt_text: str = Field("", description="what the reference clip says; empty = reference-free mode")
    prompt_lang: str | None = Field(None, description="language of prompt_text (default: text_lang)")
    voice: str | None = Field(None, description="a stored voice (GET /v1/voices) instead of ref_audio_path")
    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    text_split_method: str = Field("cut5", description="cut0 (none) ... cut5 (at every punctuation mark)")
    batch_size: int = Field(1, description="accepted, no effect (pieces are synthesized one by one)")
    batch_threshold: float = Field(0.75, description="accepted, no effect")
    split_bucket: bool = Field(True, description="accepted, no effect")
    speed_factor: float = Field(1.0, description="0.25-4; above 1 speaks faster")
    fragment_interval: float = Field(0.3, description="seconds of silence after each piece")
    seed: int = Field(-1, description="-1 = random; the seed used is returned in X-Seed")
    media_type: str = Field(
        "wav", description=f"one of {', '.join(API_V2_MEDIA)} (raw = 16-bit PCM, no header)"
    )
    streaming_mode: bool | int = Field(
        False,
        description="0/false: whole file; 1/true: stream one chunk per piece of text (fragment mode); "
        "2: stream audio while tokens are decoded (first audio after a few tokens); "
        "3: as 2 with fixed chunks of min_chunk_length tokens",
    )
    parallel_infer: bool = Field(True, description="accepted, no effect")
    repetition_penalty: float = 1.35
    sample_steps: int = Field(32, description="accepted, no effect (v3/v4 only upstream)")
    super_sampling: bool = Field(False, description="accepted, no effect (v3 only upstream)")
    overlap_length: int = Field(2, description="accepted, no effect")
    min_chunk_length: int = Field(16, description="streaming_mode 3: tokens per chunk (40 ms each)")
    noise_scale: float = Field(0.5, description="SoVITS prior noise scale (0 = deterministic vocoder)")


class SpeechParams(BaseModel):
    """OpenAI's POST /v1/audio/speech body (plus `lang`, `seed` and sampling extensions)."""

    model: str = Field("gsv", description="ignored: the server speaks with its loaded bundle")
    input: str = Field(..., description="text to say")
    voice: str = Field(..., description="a stored voice name (GET /v1/voices)")
    response_format: str = Field(
        "mp3", description=f"one of {', '.join(OPENAI_FORMATS)}; pcm is 24 kHz s16le"
    )
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream: bool = Field(False, description="stream the body piece by piece as it is made")
    stream_format: Literal["audio", "sse"] = Field("audio", description="only 'audio' is supported")
    instructions: str | None = Field(None, description="accepted, ignored")
    lang: str = Field("auto", description=f"language of the input: {', '.join(LANGUAGES)}")
    seed: int = -1
    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class ErrorBody(BaseModel):
    """The body of every error response."""

    message: str
    error: ErrorDetail
    request_id: str


class VoiceInfo(BaseModel):
    name: str
    prompt_text: str | None = None
    prompt_lang: str | None = None
    languages: list[str] = []
    usable: bool | None = Field(None, description="made with the loaded bundle")
    error: str | None = None


class VoiceList(BaseModel):
    voices: list[VoiceInfo]


class Message(BaseModel):
    message: str


class Health(BaseModel):
    status: str
    version: str
    bundle_id: str
    workers: int
    running: int
    queue_depth: int


_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 422, 429, 500, 504)}


def _audio_responses(formats: tuple[str, ...]) -> dict:
    return {
        200: {
            "description": "the audio (whole file, or a chunked stream when streaming)",
            "content": {CONTENT_TYPES[f].split(";")[0]: {} for f in formats},
        },
        **_ERRORS,
    }


# -- ASGI middleware: request id, API key, body size limit, metrics, faults ------------------------


class _BodyTooLarge(Exception):
    pass


class FrameMiddleware:
    """Wraps every HTTP request: gives it a request id, checks the API key (all paths but /health),
    limits the body size (Content-Length and the bytes actually received), counts it in the
    metrics and turns an unhandled exception into a logged JSON 500."""

    def __init__(self, app, config: ServerConfig, metrics: Metrics) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics
        self.body_limit = config.max_upload_bytes + 64 * 1024  # room for multipart framing and fields

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given_id = headers.get("x-request-id", "")
        request_id = given_id if _REQUEST_ID.match(given_id) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        endpoint = _endpoint_label(scope.get("path", ""))
        state = {"status": 0, "started": False, "too_large": False, "replaced": False}
        received = 0

        async def emit(message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                state["status"] = message["status"]
                message["headers"] = list(message.get("headers", [])) + [
                    (b"x-request-id", request_id.encode())
                ]
            await send(message)

        async def refuse(error: ApiError) -> None:
            await _send_error(emit, error, request_id)

        async def send_wrapper(message) -> None:
            if state["replaced"]:
                return
            if state["too_large"] and message["type"] == "http.response.start" and not state["started"]:
                # The app saw its body cut off (Starlette reports that as a 400 parse error):
                # answer 413 instead, whatever the app made of it.
                state["replaced"] = True
                await refuse(_too_large(received, self.config.max_upload_bytes))
                return
            await emit(message)

        async def receive_wrapper():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.body_limit:
                    state["too_large"] = True
                    raise _BodyTooLarge()
            return message

        try:
            if self.config.api_key and scope.get("path") != "/health":
                header = headers.get("authorization", "")
                token = header[7:].strip() if header.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(token.encode(), self.config.api_key.encode()):
                    await refuse(
                        ApiError(
                            401,
                            "missing or wrong API key: send 'Authorization: Bearer <key>'",
                            "authentication_error",
                            {"WWW-Authenticate": "Bearer"},
                        )
                    )
                    return
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.body_limit:
                await refuse(_too_large(int(length), self.config.max_upload_bytes))
                return
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            too_large = state["too_large"]
            if state["started"]:
                if not too_large:
                    log.exception("request %s failed after its response started", request_id)
                return
            if too_large:
                await refuse(_too_large(received, self.config.max_upload_bytes))
            else:
                log.exception("request %s failed", request_id)
                await refuse(ApiError(500, f"internal error (request id {request_id})", "server_error"))
        finally:
            status = state["status"] or 500
            self.metrics.requests.labels(endpoint, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(endpoint, str(status)).inc()


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body of {size} bytes or more is over this server's upload limit of {limit} bytes; "
        "send a shorter clip (3-10 s is enough)",
        "request_too_large",
    )


async def _send_error(send, error: ApiError, request_id: str) -> None:
    response = _error_response(error, request_id)
    await send(
        {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})


# -- the app ---------------------------------------------------------------------------------------


def create_app(config: ServerConfig, tts=None) -> FastAPI:
    """Build the app for `config`; `tts` (a loaded `TTS`) is loaded from `config.bundle` if None.

    The TTS gets one GPT decoder per synthesis worker (`workers`), so the workers decode at the
    same time; a given `tts` whose decoder pool is smaller is grown to `workers`.
    """
    from gsv_onnx.runtime.options import SynthesisOptions

    if tts is None:
        from gsv_onnx.runtime.options import FrontendOptions, RuntimeOptions
        from gsv_onnx.runtime.tts import TTS

        options = RuntimeOptions(intra_op_threads=config.threads or None, decoder_pool_size=config.workers)
        frontend = FrontendOptions(user_dict=config.user_dict or None, g2pw_dir=config.g2pw or None)
        tts = TTS.load(config.bundle, options, frontend=frontend)
    else:
        tts.decoders.grow(config.workers)
    engine = Engine(config.workers, config.queue_size, config.request_timeout)
    store = VoiceStore(config.voices)
    metrics = Metrics(engine)
    allowed_dirs = [Path(d) for d in config.ref_dirs] + [Path(store.directory)]
    bundle_dirs = [Path(d) for d in config.bundle_dirs]
    if not bundle_dirs and config.bundle:
        bundle_dirs = [Path(config.bundle).resolve().parent]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.shutdown()

    app = FastAPI(
        title="gsv-onnx",
        version=__version__,
        description=(
            "GPT-SoVITS V2 text-to-speech on CPU. `/tts` follows upstream api_v2; `/v1/audio/speech` "
            "follows OpenAI's speech API; voices are managed under `/v1/voices`. Every error is a JSON "
            "body `{message, error: {message, type, code}, request_id}`. When the server has an API key, "
            "every endpoint but `/health` needs `Authorization: Bearer <key>`."
        ),
        lifespan=lifespan,
    )
    app.state.tts = tts
    app.state.engine = engine
    app.state.store = store
    app.state.metrics = metrics
    app.state.config = config
    app.add_middleware(FrameMiddleware, config=config, metrics=metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error_response(exc, _request_id(request))

    @app.exception_handler(JobTimeout)
    async def _job_timeout(request: Request, exc: JobTimeout):
        return _error_response(_timeout_error(config.request_timeout), _request_id(request))

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull):
        error = ApiError(429, "the server is busy; retry later", "rate_limit_error")
        error.headers = {"Retry-After": str(engine.retry_after())}
        return _error_response(error, _request_id(request))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return _error_response(ApiError(422, _validation_message(exc)), _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        error = ApiError(exc.status_code, str(exc.detail), kind, dict(exc.headers or {}))
        return _error_response(error, _request_id(request))

    # -- helpers bound to this app ---------------------------------------------------------------

    def admit() -> Job:
        try:
            return engine.admit()
        except QueueFull:
            raise ApiError(
                429,
                "the server is busy: every synthesis worker is taken and the queue is full; "
                "retry after the number of seconds in Retry-After",
                "rate_limit_error",
                {"Retry-After": str(engine.retry_after())},
            ) from None

    def voice_from_ref(ref_path: str, prompt_text: str, prompt_lang: str, aux: list[str]):
        """The voice of a reference path (prepared once, then cached while the files are unchanged)."""
        current = app.state.tts
        real = resolve_ref_path(ref_path, allowed_dirs)
        aux_real = [resolve_ref_path(p, allowed_dirs) for p in aux]
        stats = []
        for path in [real, *aux_real]:
            stat = path.stat()
            stats.append((str(path), stat.st_mtime_ns, stat.st_size))
        key = ("ref", current.bundle_id, tuple(stats), prompt_text, prompt_lang)

        def prepare():
            # Read through a descriptor checked against the allowed directories: a path swapped for
            # a symlink after the check above still cannot make us read outside them.
            data = read_confined(real, allowed_dirs, config.max_upload_bytes)
            aux_data = [read_confined(p, allowed_dirs, config.max_upload_bytes) for p in aux_real]
            return current.prepare_voice(data, text=prompt_text, lang=prompt_lang, aux_refs=aux_data)

        return store.cached(key, prepare)

    def check_text(text: str | None, name: str) -> str:
        text = (text or "").strip("\n")
        if not text.strip():
            raise ApiError(400, f"{name} is empty; give some text to say")
        if len(text) > config.max_text_chars:
            raise ApiError(
                400,
                f"{name} is {len(text)} characters, over this server's limit of "
                f"{config.max_text_chars}; split it into several requests",
            )
        return text

    def check_options(options: dict[str, Any]) -> None:
        """Reject out-of-range options before the job is queued (400 naming the option)."""
        try:
            SynthesisOptions(**options)
        except OptionsError as exc:
            raise ApiError(400, str(exc)) from None

    async def collect(job: Job, make_chunks: Callable, request: Request) -> list:
        """Run a job to the end, cancelling it if the client goes away."""
        chunks = []
        gone = asyncio.Event()

        async def watch() -> None:
            while not job.cancel.is_set():
                if await request.is_disconnected():
                    gone.set()
                    job.cancel.set()
                    return
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        try:
            async for chunk in engine.run(job, make_chunks):
                chunks.append(chunk)
        except JobTimeout:
            raise _timeout_error(config.request_timeout) from None
        finally:
            watcher.cancel()
        if gone.is_set():
            # Nobody will read this; the status (nginx's "client closed request") is for the metrics.
            raise ApiError(499, "the client disconnected; synthesis stopped", "client_closed_request")
        return chunks

    def observe(endpoint: str, job: Job, produced_seconds: float) -> None:
        elapsed = time.perf_counter() - job.started
        metrics.latency.labels(endpoint).observe(elapsed)
        if job.first_audio is not None:
            metrics.first_audio.labels(endpoint).observe(job.first_audio)
        if produced_seconds > 0:
            metrics.audio_seconds.inc(produced_seconds)
            metrics.rtf.observe(elapsed / produced_seconds)

    async def stream_body(
        request: Request, job: Job, make_chunks: Callable, fmt: str, rate_out: int | None, endpoint: str
    ) -> StreamingResponse:
        """A streamed response; errors before the first chunk still get their own status."""
        agen = engine.run(job, make_chunks)
        try:
            first = await agen.__anext__()
            if float(np.abs(first.samples).max(initial=0.0)) < SILENCE_PEAK:
                raise _silence_error(_request_id(request))
            rate = rate_out or first.sample_rate
            encoder = StreamEncoder(fmt, rate)
        except StopAsyncIteration:
            engine.release(job)
            raise ApiError(400, "the text has nothing to say") from None
        except JobTimeout:
            await agen.aclose()
            engine.release(job)
            raise _timeout_error(config.request_timeout) from None
        except BaseException:
            await agen.aclose()
            engine.release(job)
            raise

        async def body():
            produced = 0.0
            finished = False
            try:
                chunk = first
                while True:
                    produced += chunk.duration
                    samples = chunk.samples
                    if rate != chunk.sample_rate:
                        from gsv_onnx.audio import resample

                        samples = resample(samples, chunk.sample_rate, rate)
                    yield await asyncio.to_thread(encoder.feed, samples)
                    try:
                        chunk = await agen.__anext__()
                    except StopAsyncIteration:
                        break
                tail = encoder.finish()
                finished = True
                if tail:
                    yield tail
            except JobTimeout:
                log.warning(
                    "request %s: stream stopped by the %.0f s timeout after %.1f s of audio",
                    _request_id(request),
                    config.request_timeout,
                    produced,
                )
                raise
            finally:
                if not finished:
                    encoder.close()
                await agen.aclose()
                engine.release(job)
                observe(endpoint, job, produced)

        headers = {"X-Sample-Rate": str(rate), "Cache-Control": "no-store"}
        seed = getattr(first, "seed", None)
        if seed is not None:
            headers["X-Seed"] = str(seed)
        return StreamingResponse(body(), media_type=CONTENT_TYPES[fmt], headers=headers)

    async def respond(
        request: Request,
        job: Job,
        make_chunks: Callable,
        fmt: str,
        streaming: bool,
        rate_out: int | None,
        endpoint: str,
    ) -> Response:
        if streaming:
            return await stream_body(request, job, make_chunks, fmt, rate_out, endpoint)
        try:
            chunks = await collect(job, make_chunks, request)
        finally:
            engine.release(job)
        if not chunks:
            raise ApiError(400, "the text has nothing to say")
        samples = np.concatenate([c.samples for c in chunks])
        rate = chunks[0].sample_rate
        duration = len(samples) / rate
        if float(np.abs(samples).max(initial=0.0)) < SILENCE_PEAK:
            raise _silence_error(_request_id(request))
        observe(endpoint, job, duration)
        data = await asyncio.to_thread(encode_all, samples, rate, fmt, rate_out)
        headers = {"X-Audio-Seconds": f"{duration:.3f}", "X-Sample-Rate": str(rate_out or rate)}
        seed = getattr(chunks[0], "seed", None)
        if seed is not None:
            headers["X-Seed"] = str(seed)
        return Response(content=data, media_type=CONTENT_TYPES[fmt], headers=headers)

    def synth_chunks(
        voice, text: str, lang: str, options: dict[str, Any], token_chunks: tuple[int, int] | None = None
    ) -> Callable:
        """The job's generator factory: resolves the voice and calls `TTS.stream` in the worker.

        `token_chunks` None: one chunk per piece of text (the audio `synthesize` makes);
        (first, later): token-level streaming, chunks of that many new tokens (0 = the runtime's
        defaults), the first audio after a few decoded tokens.
        """
        current = app.state.tts

        def make_chunks(cancel=None):
            resolved = voice() if callable(voice) else voice
            kwargs = dict(options)
            if cancel is not None and _accepts(current.stream, "cancel"):
                kwargs["cancel"] = cancel
            if _accepts(current.stream, "granularity"):
                kwargs["granularity"] = "pieces" if token_chunks is None else "tokens"
                if token_chunks and token_chunks[0] > 0:
                    from gsv_onnx.runtime.options import StreamingOptions

                    kwargs["streaming"] = StreamingOptions(
                        first_chunk_tokens=token_chunks[0], chunk_tokens=token_chunks[1]
                    )
            return current.stream(text, resolved, lang=lang, **kwargs)

        return make_chunks

    # -- api_v2 ------------------------------------------------------------------------------------

    async def tts_endpoint(request: Request, params: TTSParams) -> Response:
        if not params.text:
            raise ApiError(400, "text is required")
        text = check_text(params.text, "text")
        lang = _check_lang(params.text_lang, "text_lang")
        media = (params.media_type or "").lower()
        if media not in API_V2_MEDIA:
            raise ApiError(
                400,
                f"media_type {params.media_type!r} is not supported; use one of {', '.join(API_V2_MEDIA)}",
            )
        _check_format(media)
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
        if mode == 3 and not 1 <= params.min_chunk_length <= 500:
            raise ApiError(400, f"min_chunk_length must be 1..500 tokens, got {params.min_chunk_length}")
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
        check_options(options)
        if params.voice:
            voice: Any = store.load(params.voice)
        elif params.ref_audio_path:
            prompt_text = params.prompt_text or ""
            prompt_lang = _check_lang(params.prompt_lang or lang, "prompt_lang") if prompt_text else "zh"
            # Resolve the paths now so a refused path is a 4xx before any work is queued.
            resolve_ref_path(params.ref_audio_path, allowed_dirs)
            aux_paths = list(params.aux_ref_audio_paths or [])
            for aux in aux_paths:
                resolve_ref_path(aux, allowed_dirs)
            ref_path = params.ref_audio_path

            def voice_of_ref() -> Any:
                return voice_from_ref(ref_path, prompt_text, prompt_lang, aux_paths)

            voice = voice_of_ref
        else:
            raise ApiError(400, "ref_audio_path is required (or 'voice', the name of a stored voice)")
        job = admit()
        # Mode 1 streams whole pieces (upstream's fragment mode); 2 and 3 stream tokens as they are
        # decoded: 2 with the runtime's chunking, 3 with fixed chunks of min_chunk_length tokens.
        token_chunks = None
        if mode == 2:
            token_chunks = (0, 0)
        elif mode == 3:
            token_chunks = (params.min_chunk_length, params.min_chunk_length)
        make_chunks = synth_chunks(voice, text, lang, options, token_chunks)
        return await respond(request, job, make_chunks, media, mode > 0, None, "/tts")

    @app.get(
        "/tts",
        summary="Synthesize (upstream api_v2, query parameters)",
        tags=["api_v2"],
        response_class=Response,
        responses=_audio_responses(API_V2_MEDIA),
    )
    async def tts_get(request: Request, params: Annotated[TTSParams, Query()]) -> Response:
        return await tts_endpoint(request, params)

    @app.post(
        "/tts",
        summary="Synthesize (upstream api_v2, JSON body)",
        tags=["api_v2"],
        response_class=Response,
        responses=_audio_responses(API_V2_MEDIA),
    )
    async def tts_post(request: Request, params: TTSParams) -> Response:
        return await tts_endpoint(request, params)

    @app.get(
        "/set_refer_audio",
        tags=["api_v2"],
        summary="Prepare a reference clip ahead of use (cached; /tts still names it per request)",
        response_model=Message,
        responses=_ERRORS,
    )
    async def set_refer_audio(refer_audio_path: str = "") -> JSONResponse:
        if not refer_audio_path:
            raise ApiError(400, "refer_audio_path is required")
        resolve_ref_path(refer_audio_path, allowed_dirs)
        job = admit()
        try:
            async for _ in engine.run(job, lambda: iter([voice_from_ref(refer_audio_path, "", "zh", [])])):
                pass
        except JobTimeout:
            raise _timeout_error(config.request_timeout) from None
        finally:
            engine.release(job)
        return JSONResponse({"message": "success"})

    async def switch_bundle(weights_path: str) -> JSONResponse:
        if not weights_path or "\x00" in weights_path:
            raise ApiError(400, "weights_path is required")
        if weights_path.endswith((".ckpt", ".pth")):
            raise ApiError(
                400,
                "this server loads converted bundles, not checkpoints: run "
                "'gsv convert --gpt X.ckpt --sovits Y.pth ... -o DIR' and pass that DIR",
            )
        real = Path(os.path.realpath(weights_path))
        roots = [Path(os.path.realpath(d)) for d in bundle_dirs]
        if not any(real == root or root in real.parents for root in roots):
            raise ApiError(
                403,
                f"{weights_path!r} is outside the directories this server may load bundles from "
                "(set bundle_dirs / --bundle-dir)",
                "permission_error",
            )
        from gsv_onnx.runtime.tts import TTS

        current = app.state.tts
        app.state.tts = await asyncio.to_thread(
            TTS.load, real, current.runtime_options, frontend=current.frontend_options
        )
        app.state.tts.decoders.grow(config.workers)
        log.info("loaded bundle %s (%s)", real, app.state.tts.bundle_id)
        return JSONResponse({"message": "success"})

    @app.get(
        "/set_gpt_weights",
        tags=["api_v2"],
        summary="Load another converted bundle (GPT and SoVITS live together in a bundle)",
        response_model=Message,
        responses=_ERRORS,
    )
    async def set_gpt_weights(weights_path: str = "") -> JSONResponse:
        return await switch_bundle(weights_path)

    @app.get(
        "/set_sovits_weights",
        tags=["api_v2"],
        summary="Load another converted bundle (same as /set_gpt_weights)",
        response_model=Message,
        responses=_ERRORS,
    )
    async def set_sovits_weights(weights_path: str = "") -> JSONResponse:
        return await switch_bundle(weights_path)

    # -- OpenAI ------------------------------------------------------------------------------------

    @app.post(
        "/v1/audio/speech",
        tags=["openai"],
        summary="Synthesize (OpenAI speech API)",
        response_class=Response,
        responses=_audio_responses(OPENAI_FORMATS),
    )
    async def speech(request: Request, params: SpeechParams) -> Response:
        text = check_text(params.input, "input")
        fmt = params.response_format.lower()
        if fmt not in OPENAI_FORMATS:
            raise ApiError(
                400,
                f"response_format {params.response_format!r} is not supported; use one of "
                f"{', '.join(OPENAI_FORMATS)}",
            )
        _check_format(fmt)
        if params.stream_format == "sse":
            raise ApiError(400, "stream_format 'sse' is not supported; use 'audio'")
        lang = _check_lang(params.lang, "lang")
        options = {
            "speed_factor": params.speed,
            "seed": None if params.seed == -1 else params.seed,
            "top_k": params.top_k,
            "top_p": params.top_p,
            "temperature": params.temperature,
            "text_split_method": "cut5",
        }
        check_options(options)
        voice = store.load(params.voice)
        job = admit()
        rate_out = OPENAI_PCM_RATE if fmt == "pcm" else None
        # Streamed speech starts after a few decoded tokens; a whole file is made piece by piece.
        make_chunks = synth_chunks(voice, text, lang, options, (0, 0) if params.stream else None)
        return await respond(request, job, make_chunks, fmt, params.stream, rate_out, "/v1/audio/speech")

    # -- voices --------------------------------------------------------------------------------------

    def voice_info(name: str) -> dict:
        voice = store.load(name)
        return {
            "name": name,
            "prompt_text": voice.prompt_text,
            "prompt_lang": voice.prompt_lang,
            "languages": list(voice.languages),
            "usable": voice.bundle_id == app.state.tts.bundle_id,
        }

    @app.get("/v1/voices", tags=["voices"], summary="List stored voices", response_model=VoiceList)
    async def list_voices() -> JSONResponse:
        voices = []
        for name in store.names():
            try:
                voices.append(voice_info(name))
            except GsvError as exc:
                voices.append({"name": name, "error": str(exc)})
        return JSONResponse({"voices": voices})

    @app.get(
        "/v1/voices/{name}",
        tags=["voices"],
        summary="Describe one stored voice",
        response_model=VoiceInfo,
        responses=_ERRORS,
    )
    async def get_voice(name: str) -> JSONResponse:
        _check_name(name)
        return JSONResponse(voice_info(name))

    @app.post(
        "/v1/voices",
        status_code=201,
        tags=["voices"],
        summary="Create a voice from an uploaded reference clip",
        response_model=VoiceInfo,
        responses=_ERRORS,
    )
    async def create_voice(
        request: Request,
        file: UploadFile = File(..., description="3-10 s reference clip (wav, flac, ogg, mp3)"),
        name: str = Form(..., description="1-64 letters, digits, '_', '-', '.'"),
        text: str = Form("", description="what the clip says (empty: reference-free voice)"),
        lang: str = Form("zh", description="language of the text"),
        overwrite: bool = Form(False),
    ) -> JSONResponse:
        _check_name(name)
        lang = _check_lang(lang, "lang")
        if len(text) > config.max_text_chars:
            raise ApiError(400, f"text is {len(text)} characters, over the limit of {config.max_text_chars}")
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
            raise _timeout_error(config.request_timeout) from None
        finally:
            engine.release(job)
        store.save(name, voices[0])
        return JSONResponse(
            {
                "name": name,
                "prompt_text": voices[0].prompt_text,
                "prompt_lang": voices[0].prompt_lang,
                "languages": list(voices[0].languages),
                "usable": True,
            },
            status_code=201,
        )

    @app.delete(
        "/v1/voices/{name}",
        status_code=204,
        tags=["voices"],
        summary="Delete a stored voice",
        responses=_ERRORS,
    )
    async def delete_voice(name: str) -> Response:
        _check_name(name)
        store.delete(name)
        return Response(status_code=204)

    # -- service -------------------------------------------------------------------------------------

    @app.get("/health", tags=["service"], summary="Liveness (no API key needed)", response_model=Health)
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

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # Map the project's own errors to HTTP statuses (Starlette picks the most specific class).
    for error_type, status in (
        (VoiceNotFound, 404),
        (PathNotAllowed, 403),
        (ReferenceTooLarge, 413),
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


def _request_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "-")


def _status_handler(status: int):
    async def handler(request: Request, exc: Exception):
        kind = "permission_error" if status == 403 else "not_found" if status == 404 else type(exc).__name__
        return _error_response(ApiError(status, str(exc), kind), _request_id(request))

    return handler


def _timeout_error(timeout: float) -> ApiError:
    return ApiError(
        504,
        f"synthesis took longer than this server's {timeout:g} s request timeout; send shorter text",
        "timeout",
    )


def _silence_error(request_id: str) -> ApiError:
    log.error("request %s: synthesis produced only silence", request_id)
    return ApiError(500, f"synthesis produced only silence (request id {request_id})", "server_error")


def _error_response(exc: ApiError, request_id: str) -> JSONResponse:
    body = {
        "message": exc.message,
        "error": {"message": exc.message, "type": exc.kind, "code": exc.status},
        "request_id": request_id,
    }
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where or 'request'}: {error.get('msg')}")
    return "bad parameters: " + "; ".join(parts)


_KNOWN_PATHS = (
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


def _endpoint_label(path: str) -> str:
    if path.startswith("/v1/voices"):
        return "/v1/voices"
    return path if path in _KNOWN_PATHS else "other"


def _check_lang(lang: str | None, name: str) -> str:
    if not lang:
        raise ApiError(400, f"{name} is required; use one of {', '.join(LANGUAGES)}")
    if lang.lower() not in LANGUAGES:
        raise ApiError(400, f"{name} {lang!r} is not supported; use one of {', '.join(LANGUAGES)}")
    return lang.lower()


def _check_name(name: str) -> None:
    try:
        check_voice_name(name)
    except GsvError as exc:
        raise ApiError(400, str(exc)) from None


def _check_format(fmt: str) -> None:
    if not format_available("pcm" if fmt == "raw" else fmt):
        need = "ffmpeg on the server" if fmt == "aac" else "a libsndfile with that encoder"
        raise ApiError(400, f"{fmt} needs {need}, which this server lacks; use wav, ogg or flac")


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
            raise _too_large(len(data), limit)
    if not data:
        raise ApiError(400, "the uploaded file is empty; send a 3-10 s audio clip")
    return bytes(data)
