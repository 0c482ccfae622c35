"""Fixtures for every test directory. ``llm_server``: a scripted OpenAI/Anthropic-compatible server on
loopback (see ``tests/llm_server.py``), started once per session and reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
