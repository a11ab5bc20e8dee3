"""The live server against its own OpenAPI document, fuzzed by schemathesis, on both databases.

The real app behind uvicorn (``tests/support/server.py``), over real HTTP, with every
schemathesis check: no 5xx, every status, content type, header and body as documented,
schema-valid requests accepted and schema-violating ones refused, the bearer security
enforced where declared, no resource missing right after its create. Stateful runs follow
the document's links and schemathesis' inferred ones (a chatbot created, then its
connections, conversations, widget sessions, messages...). The fuzzer is an administrator
and plays Meta's and Telegram's part, so every route and both webhook parsers are reached
(``tests/support/fuzz_hooks.py``); ``tests/schemathesis.toml`` is its configuration.

Budget: ``max-time`` seconds per database (60 unless ``NOCLASH_FUZZ_SECONDS`` says
otherwise), from a fixed seed so a failure reproduces (``NOCLASH_FUZZ_SEED`` picks another:
a longer run with other seeds is the way to look for more). schemathesis runs in its own
process, so the server keeps the suite's process (and its GIL) to itself.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noclash.config import Settings
from tests.support.server import start_live_server

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "tests" / "schemathesis.toml"
SECONDS = int(os.environ.get("NOCLASH_FUZZ_SECONDS", "60"))
SEED = os.environ.get("NOCLASH_FUZZ_SEED", "15")


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 240)
def test_the_live_server_answers_as_its_document_says(database_url: str, tmp_path: Path):
    app_secret, verify_token = secrets.token_hex(16), secrets.token_hex(16)
    with start_live_server(
        database_url, meta_app_secret=app_secret, meta_verify_token=verify_token
    ) as server:
        env = {
            **os.environ,
            # The hooks module (tests.support.fuzz_hooks) and noclash, from this tree.
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
            ),
            "NOCLASH_FUZZ_DATABASE_URL": Settings(database_url=database_url).sqlalchemy_url,
            "NOCLASH_META_APP_SECRET": app_secret,
            "NOCLASH_META_VERIFY_TOKEN": verify_token,
        }
        command = [
            sys.executable, "-m", "schemathesis.cli",
            "--config-file", str(CONFIG), "--no-color",
            "run", f"{server.base_url}/openapi.json",
            "--seed", SEED, "--max-time", str(SECONDS),
        ]  # fmt: skip
        started = time.monotonic()
        # Its own working directory: schemathesis writes nothing into the checkout.
        result = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SECONDS + 180
        )
        elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    # Shown with -rA or on failure: what was covered, in how long.
    print(f"schemathesis: {elapsed:.1f} s\n{output[-6000:]}")
    assert result.returncode == 0, output[-20000:]
    # The stateful phase ran and followed links (a run that reached nothing proves nothing).
    links = re.search(r"API Links:\s+(\d+) covered", output)
    assert links is not None and int(links.group(1)) > 0, output[-6000:]
