"""`.env.example` documents every setting Lucy reads, and nothing it doesn't."""

from __future__ import annotations

import re
from pathlib import Path

from lucy.config import WHERE, Settings

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_lists_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M))
    variables = {f.alias for f in Settings.model_fields.values() if f.alias}
    assert variables == documented
    assert variables <= set(WHERE)


def test_env_example_loads_as_valid_settings(tmp_path: Path) -> None:
    copy = tmp_path / ".env"
    copy.write_text((ROOT / ".env.example").read_text())
    settings = Settings(_env_file=copy)  # type: ignore[call-arg]
    assert settings.port == 3000 and settings.slack_bot_token is None
