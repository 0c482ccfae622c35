"""Fixtures for every test directory. ``llm_server``: a scripted OpenAI/Anthropic-compatible server on
loopback (see ``tests/llm_server.py``), started once per session and reset before each test;
``nats_server``/``nats_url``: a real JetStream node for the session, a stream of its own per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from accord.nats_local import NatsServer
from llm_server import LLMServer


@pytest.fixture(scope="session")
def _llm_server_session() -> Iterator[LLMServer]:
    server = LLMServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def llm_server(_llm_server_session: LLMServer) -> Iterator[LLMServer]:
    _llm_server_session.reset()
    yield _llm_server_session
    _llm_server_session.reset()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One real nats-server (JetStream) for the session; tests keep apart by stream name."""
    server = NatsServer().start()
    yield server
    server.cleanup()


_streams = itertools.count(1)


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """A ``nats://`` store URL with a stream of its own for this test."""
    return f"{nats_server.url}?stream=T{next(_streams)}_{os.getpid()}"
