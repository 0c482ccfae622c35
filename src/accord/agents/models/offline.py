"""OfflineConfig: a deterministic stand-in model that needs no network and says that it is offline.

It is the demo default on a machine with no model endpoint. It never pretends to think: each reply is
built from the agent's name and the last message it was shown, marked ``[offline model]``, so nobody
mistakes its output for an LLM's.
"""

from __future__ import annotations

import hashlib

from .base import ModelReply, ModelRequest

_OPENERS = ("Noted", "Understood", "Acknowledged", "Got it", "Agreed")


class OfflineModel:
    name = "offline"

    async def complete(self, request: ModelRequest) -> ModelReply:
        last = next((m for m in reversed(request.messages) if m.get("role") == "user"), None)
        content = str(last.get("content") or "") if last else ""
        words = content.split()
        gist = " ".join(words[:12]) + (" …" if len(words) > 12 else "")
        pick = int(hashlib.sha256((request.agent_name + content).encode()).hexdigest(), 16) % len(_OPENERS)
        text = f"[offline model] {_OPENERS[pick]}: {gist}" if gist else "[offline model] Hello."
        tokens_in = sum(len(str(m.get("content") or "").split()) for m in request.messages)
        return ModelReply(text=text, model=self.name, tokens_in=tokens_in, tokens_out=len(text.split()))


class OfflineConfig:
    def create(self) -> OfflineModel:
        return OfflineModel()
