"""Engines for local models: in this process (transformers), or a server potstill starts.

A local model config's `engine` (the names are `config.Engine`) says what runs it:
`transformers` is `models/local.LocalChatModel` in this process; `vllm` and `command` start
an OpenAI-compatible server (`vllm serve`, or any command line: llama.cpp's server, SGLang,
`potstill serve`) on a free 127.0.0.1 port, wait for its health check, talk to it through
the `openai` backend and stop it when done; `auto` picks vLLM on a CUDA machine that has it,
else transformers. `EngineServer` is the launcher; `LaunchedChatModel` the ChatModel on top.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import weakref
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from potstill.config import ModelConfig
from potstill.models.base import Admit, ChatRequest, ChatResponse
from potstill.models.openai_backend import EndpointRefused

# Seconds a stopped engine gets to exit after SIGTERM before it is killed.
STOP_GRACE_S = 10.0
# Lines of the engine's log quoted in an error.
LOG_TAIL_LINES = 20


class EngineError(EndpointRefused):
    """An engine that exited, or never answered its health check: one clear message with
    the command, where its log is and the log's last lines."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def vllm_available() -> bool:
    """True on a CUDA machine with the `vllm` command installed (the `vllm` extra)."""
    if shutil.which("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_engine(config: ModelConfig) -> str:
    """The engine that runs a local model on this machine: `auto` becomes vllm or transformers."""
    if config.engine != "auto":
        return config.engine
    return "vllm" if vllm_available() else "transformers"


def vllm_command(path: str, name: str) -> list[str]:
    """`vllm serve` for a model folder, or for a LoRA adapter folder on its base model."""
    folder = Path(path)
    adapter = folder / "adapter_config.json"
    if adapter.exists():
        base = json.loads(adapter.read_text())["base_model_name_or_path"]
        return [
            "vllm",
            "serve",
            base,
            "--enable-lora",
            "--lora-modules",
            f"{name}={folder}",
            "--host",
            "{host}",
            "--port",
            "{port}",
        ]
    return [
        "vllm",
        "serve",
        path,
        "--served-model-name",
        name,
        "--host",
        "{host}",
        "--port",
        "{port}",
    ]


def engine_command(config: ModelConfig, path: str, name: str) -> list[str]:
    engine = resolve_engine(config)
    if engine == "vllm":
        return vllm_command(path, name)
    if not config.engine_command:
        raise EngineError("engine: command needs engine_command (the server's command line)")
    return list(config.engine_command)


class EngineServer:
    """Starts an OpenAI-compatible server command, waits until it is healthy, stops it.

    `{host}`, `{port}`, `{model}` and `{name}` in the command are filled in; the port is a
    free one. stdout and stderr go to `log_path`. Health is `GET /health`, else
    `GET /v1/models` (servers differ); an engine that exits first, or is not healthy within
    `ready_s` seconds, is stopped and raises EngineError.
    """

    def __init__(
        self,
        command: Sequence[str],
        log_path: Path,
        *,
        model: str = "",
        name: str = "",
        host: str = "127.0.0.1",
        ready_s: float = 600.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = free_port(host)
        fill = {"host": host, "port": str(self.port), "model": model, "name": name}
        self.command = [part.format(**fill) for part in command]
        self.log_path = log_path
        self.ready_s = ready_s
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> EngineServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.command)}\n".encode())
            log.flush()
            try:
                self.process = subprocess.Popen(
                    self.command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **(self.env or {})},
                    start_new_session=True,
                )
            except OSError as exc:
                raise EngineError(f"cannot start engine {self.command[0]!r}: {exc}") from None
        self._finalizer = weakref.finalize(self, _stop_process, self.process)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.ready_s
        root = f"http://{self.host}:{self.port}"
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise self._error(f"exited with code {code} before it was healthy")
            for path in ("/health", "/v1/models"):
                try:
                    if httpx.get(root + path, timeout=2.0).status_code == 200:
                        return
                except httpx.HTTPError:
                    break  # not listening yet
            if time.monotonic() > deadline:
                raise self._error(f"was not healthy after {self.ready_s:g} s")
            time.sleep(0.2)

    def _error(self, what: str) -> EngineError:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            lines = []
        tail = "\n".join(f"  {line}" for line in lines)
        return EngineError(
            f"engine `{' '.join(self.command)}` {what}; its log is {self.log_path}"
            + (f", ending:\n{tail}" if tail else "")
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_GRACE_S; the exit code (None if never started)."""
        if self.process is None:
            return None
        return _stop_process(self.process)

    def __enter__(self) -> EngineServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_process(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait()
    return int(process.returncode)


class LaunchedChatModel:
    """A local model run by an engine server: started at the first request, used through
    the `openai` backend, stopped by `close()`, when it is collected, or at exit."""

    def __init__(self, config: ModelConfig, ref: str | None, log_dir: Path) -> None:
        from potstill.models.local import local_identity
        from potstill.models.packaged import resolve_local_ref

        self.config = config
        self.engine = resolve_engine(config)
        self.path = resolve_local_ref(ref or config.model)
        self.name = Path(self.path).name or "model"
        self.log_dir = log_dir
        self._identity = f"{self.engine}:{local_identity(ref or config.model)}"
        self.server: EngineServer | None = None
        self._client: Any = None

    @property
    def identity(self) -> str:
        return self._identity

    def _ensure(self) -> Any:
        if self._client is not None and self.server is not None and self.server.alive():
            return self._client
        if self.server is not None:
            raise self.server._error("exited while in use")
        from potstill.models.openai_backend import OpenAIChatModel

        stamp = time.strftime("%Y%m%d-%H%M%S")
        server = EngineServer(
            engine_command(self.config, self.path, self.name),
            self.log_dir / f"{self.engine}-{self.name}-{stamp}.log",
            model=self.path,
            name=self.name,
            ready_s=self.config.engine_ready_s,
        )
        self.server = server.start()
        self._client = OpenAIChatModel(
            self.name,
            base_url=server.base_url,
            max_concurrency=self.config.max_concurrency,
            timeout_s=self.config.timeout_s,
            max_retries=self.config.max_retries,
        )
        return self._client

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        return list(await self._ensure().generate(requests))

    async def stream(
        self, requests: Sequence[ChatRequest], admit: Admit | None = None
    ) -> AsyncGenerator[tuple[int, ChatResponse], None]:
        async for item in self._ensure().stream(requests, admit):
            yield item

    def close(self) -> int | None:
        """Stop the engine; its exit code (None if it never started)."""
        return self.server.stop() if self.server is not None else None
