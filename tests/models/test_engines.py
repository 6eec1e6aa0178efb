"""The engine launcher: a server command started on a free port, used, stopped; a dead or
never-healthy engine is a clear error, not a hang."""

import asyncio
import json
import sys
import threading
from pathlib import Path

import pytest

from potstill.config import ModelConfig
from potstill.models import build_model, model_identity
from potstill.models.base import ChatRequest
from potstill.models.engines import (
    EngineError,
    EngineServer,
    LaunchedChatModel,
    resolve_engine,
    vllm_command,
)


def test_an_engine_that_dies_is_an_error_naming_its_log(tmp_path: Path) -> None:
    log = tmp_path / "engines" / "dead.log"
    command = [
        sys.executable,
        "-c",
        "print('cannot load weights', flush=True); raise SystemExit(3)",
    ]
    with pytest.raises(EngineError) as info:
        EngineServer(command, log, ready_s=60).start()
    message = str(info.value)
    assert "exited with code 3" in message
    assert str(log) in message and "cannot load weights" in message


def test_an_engine_that_never_becomes_healthy_is_stopped_and_an_error(tmp_path: Path) -> None:
    server = EngineServer(
        [sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "e.log", ready_s=1
    )
    with pytest.raises(EngineError, match="not healthy after 1 s"):
        server.start()
    assert not server.alive()


def test_a_command_engine_needs_its_command() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="engine_command"):
        ModelConfig(engine="command")
    with pytest.raises(ValidationError, match="applies to `engine: command` only"):
        ModelConfig(engine="vllm", engine_command=["x"])


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["llama-server", "-m", "{model}"], "engine_command has no {port}"),
        (["server", "--port", "{port}", "--ctx", "{context}"], "unknown placeholder {context}"),
        (["server", "--port", "{port}", '--args={"a": 1}'], 'unknown placeholder {"a"}'),
        (["server", "--port", "{port", "--x"], "'{port': expected '}' before end of string"),
    ],
)
def test_an_engine_command_that_could_not_be_filled_in_is_refused(
    command: list[str], message: str
) -> None:
    """Refused when the config is read, not after engine_ready_s of waiting on a port the
    server never listens on, nor as a KeyError when it is started."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        ModelConfig(engine="command", engine_command=command)
    assert message in str(caught.value)
    # Doubled braces are literal, and every placeholder potstill fills in is accepted.
    good = ["server", "--port", "{port}", "--host", "{host}", "-m", "{model}", "{name}", "{{}}"]
    assert ModelConfig(engine="command", engine_command=good).engine_command == good


def test_auto_is_transformers_without_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert resolve_engine(ModelConfig()) == "transformers"
    assert resolve_engine(ModelConfig(engine="vllm")) == "vllm"


def test_vllm_serves_a_merged_model_or_a_base_with_its_adapter(tmp_path: Path) -> None:
    merged = vllm_command("/runs/r/students/s/final", "s")
    assert merged[:3] == ["vllm", "serve", "/runs/r/students/s/final"]
    assert "--served-model-name" in merged
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "org/base"})
    )
    lora = vllm_command(str(adapter), "s")
    assert lora[:3] == ["vllm", "serve", "org/base"]
    assert lora[lora.index("--lora-modules") + 1] == f"s={adapter}"


def _potstill_serve(tiny_model_dir: Path) -> ModelConfig:
    command = [
        sys.executable,
        "-m",
        "potstill",
        "serve",
        "{model}",
        "--port",
        "{port}",
        "--name",
        "{name}",
    ]
    return ModelConfig(
        model=str(tiny_model_dir), engine="command", engine_command=command, engine_ready_s=120
    )


def test_a_launched_model_is_known_without_starting_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = _potstill_serve(tiny_model_dir)
    model = build_model(config, log_dir=tmp_path)
    assert isinstance(model, LaunchedChatModel)
    assert model.identity == model_identity(config)
    assert model.identity.startswith("command:local:")
    assert model.server is None


@pytest.mark.slow
def test_the_launcher_starts_uses_and_stops_potstill_serve(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """...and SIGTERM stops that server within seconds while a long generation streams."""
    import httpx

    from potstill.models.local import LocalChatModel

    model = build_model(_potstill_serve(tiny_model_dir), log_dir=tmp_path / "engines")
    assert isinstance(model, LaunchedChatModel)
    requests = [
        ChatRequest([{"role": "user", "content": f"Count to {i}"}], max_tokens=5) for i in range(3)
    ]
    remote = asyncio.run(model.generate(requests))
    local = LocalChatModel(str(tiny_model_dir)).generate_sync(requests)
    assert [r.error for r in remote] == [None] * 3
    assert [r.text for r in remote] == [r.text for r in local]
    server = model.server
    assert server is not None and server.alive()
    (log,) = (tmp_path / "engines").glob("command-*.log")
    first = log.read_text().splitlines()[0]
    assert first.startswith("$ ") and " potstill serve " in first
    # A long sampled generation (it rarely meets the stop token) is streaming when SIGTERM comes.
    body = {
        "messages": [{"role": "user", "content": "Tell a long story"}],
        "max_tokens": 1000,
        "temperature": 2.0,
        "seed": 1,
        "stream": True,
    }
    started = threading.Event()

    def client() -> None:
        try:
            with httpx.stream(
                "POST", f"{server.base_url}/chat/completions", json=body, timeout=60
            ) as r:
                for _ in r.iter_lines():
                    started.set()
        except httpx.HTTPError:
            pass

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    assert started.wait(60)
    code = model.close()
    # uvicorn shuts down, then re-raises SIGTERM (-15); SIGKILL after the grace period is -9.
    assert code == -15
    assert "Finished server process" in log.read_text()
    assert not server.alive()
    thread.join(30)
    assert not thread.is_alive()
