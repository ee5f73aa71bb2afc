"""`gsv serve`: the HTTP server (upstream api_v2 + OpenAI speech API)."""

from __future__ import annotations

import argparse
import logging

from gsv_onnx.errors import MissingDependencyError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP server (api_v2 /tts, OpenAI /v1/audio/speech, voices, /health, /metrics)",
        description=(
            "Serve a bundle over HTTP. Settings come from defaults, then --config (TOML or JSON), then "
            "GSV_* environment variables (GSV_BUNDLE, GSV_PORT, GSV_API_KEY, ...), then these flags."
        ),
    )
    parser.add_argument("--bundle", help="converted bundle directory (gsv convert)")
    parser.add_argument("--voices", help="directory of stored voices (default: ./voices)")
    parser.add_argument("--config", help="config file (.toml or .json) with the same setting names")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help="port (default 9880, as upstream api_v2)")
    parser.add_argument("--workers", type=int, help="synthesis jobs at once (default 1)")
    parser.add_argument("--queue-size", type=int, dest="queue_size", help="jobs that may wait (default 4)")
    parser.add_argument(
        "--timeout", type=float, dest="request_timeout", help="seconds per request (default 120)"
    )
    parser.add_argument("--max-text-chars", type=int, dest="max_text_chars", help="longest text accepted")
    parser.add_argument(
        "--max-upload-bytes", type=int, dest="max_upload_bytes", help="largest upload accepted"
    )
    parser.add_argument(
        "--ref-dir",
        action="append",
        dest="ref_dirs",
        help="directory api_v2's ref_audio_path may read from (repeatable; the voices dir is always allowed)",
    )
    parser.add_argument(
        "--bundle-dir",
        action="append",
        dest="bundle_dirs",
        help="directory /set_gpt_weights may load bundles from (repeatable; default: the bundle's parent)",
    )
    parser.add_argument(
        "--api-key", dest="api_key", help="require 'Authorization: Bearer KEY' (not on /health)"
    )
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    parser.add_argument(
        "--user-dict",
        dest="user_dict",
        metavar="FILE",
        help="user pronunciation dictionary (.tsv word<TAB>pronunciation, or .json) for every request",
    )
    parser.add_argument(
        "--g2pw", metavar="DIR", help="G2PWModel directory for Mandarin polyphones (needs gsv-onnx[g2pw])"
    )
    parser.add_argument("--log-level", dest="log_level", help="uvicorn log level (default info)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("the server needs its extra: pip install 'gsv-onnx[server]'") from exc
    from gsv_onnx.server.app import create_app
    from gsv_onnx.server.config import ServerConfig

    config = ServerConfig.load(
        args.config,
        bundle=args.bundle,
        voices=args.voices,
        host=args.host,
        port=args.port,
        workers=args.workers,
        queue_size=args.queue_size,
        request_timeout=args.request_timeout,
        max_text_chars=args.max_text_chars,
        max_upload_bytes=args.max_upload_bytes,
        ref_dirs=args.ref_dirs,
        bundle_dirs=args.bundle_dirs,
        api_key=args.api_key,
        threads=args.threads,
        log_level=args.log_level,
        user_dict=args.user_dict,
        g2pw=args.g2pw,
    )
    app = create_app(config)
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        logging.getLogger("gsv_onnx.server").warning(
            "listening on %s without an API key: anyone who can reach this address can use the server",
            config.host,
        )
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level)
    return 0
