"""One run of a chat task, from where its saved state stands: build the conversation
(system prompt, memory, history, the message), call the model, pass its tool calls through
the approval gate (or to the user's machine), save after every step, and finish with the
answer stored and remembered, or fail with a stable code. Scheduling is `runner.py`'s.

`base` holds what every part of a run shares (its task and state, its events, saving,
the failures that end it), `tool_round` the tool calls (the approval gate, the project's
workspace, the user's machine), and `core` the rest: loading, the model loop, building
the conversation, and the end.
"""

from veche.apps.agents.run.core import Run

__all__ = ["Run"]
