"""The README's usage snippet runs as written against the real pipeline."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
# The repository's README shows the same snippet ("Sending from your application").
ROOT_README = Path(__file__).resolve().parents[3] / "README.md"


def snippet(readme: Path = README) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", readme.read_text(), re.MULTILINE | re.DOTALL)
    usage = [block for block in blocks if "EyeClient(" in block and "track(" in block]
    assert usage, f"{readme} has no python block using EyeClient(...).track(...)"
    return usage[0]


def test_the_repository_readme_shows_the_tested_snippet():
    assert snippet(ROOT_README) == snippet(), "README.md and clients/python/README.md differ"


def test_readme_snippet_runs_and_its_event_is_stored(eye_server, tmp_path):
    code = snippet()
    ast.parse(code)
    script = tmp_path / "readme_snippet.py"
    script.write_text(code)
    env = dict(os.environ, EYE_ENDPOINT=eye_server.endpoint, EYE_API_KEY=eye_server.api_key)
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"^tracked ([0-9a-f-]{36})$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    assert "rejected" not in result.stdout.split("tracked")[0], result.stdout
    assert "'accepted': 1" in result.stdout, result.stdout
    event_id = match.group(1)
    eye_server.wait_stored(
        f"event_id = '{event_id}' AND category = 'page interaction' AND name = 'pageview' "
        "AND data->>'path' = '/pricing'",
        1,
    )
