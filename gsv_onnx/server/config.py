"""Server settings: defaults, then a config file (TOML or JSON), then `GSV_*` environment variables,
then command-line flags (each later source wins)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gsv_onnx.errors import GsvError

ENV_PREFIX = "GSV_"


class ConfigError(GsvError):
    """The server configuration is invalid."""


@dataclass
class ServerConfig:
    """Everything `gsv serve` can be told.

    `ref_dirs`: directories from which api_v2's `ref_audio_path` may be read (the voices directory
    is always allowed). Paths outside them, `..` escapes and symlinks that leave them are refused.
    `bundle_dirs`: directories from which /set_gpt_weights and /set_sovits_weights may load a
    bundle (default: the directory holding `bundle`).
    `workers`: synthesis jobs running at once; `queue_size`: jobs allowed to wait for a worker
    (beyond that: 429 with Retry-After). `request_timeout`: seconds a job may take in all.
    `api_key`: when set, every endpoint but /health needs `Authorization: Bearer <key>`.
    `threads`: ONNX Runtime intra-op threads per session. The TTS gets one GPT decoder per worker.
    `user_dict`: a user pronunciation dictionary file (.tsv or .json, docs/frontend.md) applied to
    every request's text and reference transcript; `g2pw`: a G2PWModel directory for Mandarin
    polyphones (needs the `g2pw` extra). Both are read when the server starts.
    """

    bundle: str = ""
    voices: str = "voices"
    host: str = "127.0.0.1"
    port: int = 9880
    workers: int = 1
    queue_size: int = 4
    request_timeout: float = 120.0
    max_text_chars: int = 5000
    max_upload_bytes: int = 10 * 1024 * 1024
    ref_dirs: list[str] = field(default_factory=list)
    bundle_dirs: list[str] = field(default_factory=list)
    api_key: str | None = None
    threads: int | None = None
    log_level: str = "info"
    user_dict: str | None = None
    g2pw: str | None = None

    def validate(self) -> None:
        """Raise `ConfigError` naming the first bad setting."""
        if not self.bundle:
            raise ConfigError(
                "no bundle given: pass --bundle DIR (or GSV_BUNDLE, or 'bundle' in the config file)"
            )
        if not 0 < int(self.port) < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}")
        for name in ("workers", "max_text_chars", "max_upload_bytes"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.queue_size) < 0:
            raise ConfigError(f"queue_size must be >= 0, got {self.queue_size}")
        if not float(self.request_timeout) > 0:
            raise ConfigError(f"request_timeout must be > 0 seconds, got {self.request_timeout}")

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, env: dict[str, str] | None = None, **flags: Any):
        """Build the configuration from a file, the environment and explicit flags (None = unset)."""
        values: dict[str, Any] = {}
        if path:
            values.update(_read_file(Path(path)))
        values.update(_from_env(os.environ if env is None else env))
        values.update({k: v for k, v in flags.items() if v is not None})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        config = cls(**{k: _coerce(known[k].type, k, v) for k, v in values.items()})
        config.validate()
        return config


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib  # Python 3.11+

            data = tomllib.loads(text)
    except ModuleNotFoundError as exc:
        raise ConfigError("TOML config files need Python 3.11+; use a .json config file") from exc
    except ValueError as exc:
        raise ConfigError(f"the config file {path} is not valid {path.suffix or 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the config file {path} must hold a table of settings")
    return data.get("server", data) if isinstance(data.get("server"), dict) else data


def _from_env(env: dict[str, str]) -> dict[str, Any]:
    names = {f.name for f in fields(ServerConfig)}
    return {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in names
    }


def _coerce(annotation: Any, name: str, value: Any) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("list"):
            if isinstance(value, str):
                return [part for part in value.split(os.pathsep) if part]
            return [str(v) for v in value]
        if value is None:
            return None
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name} has a bad value {value!r}: {exc}") from exc
