"""``python -m noclash.doctor.fixtures``: its options are options, never file names."""

from __future__ import annotations

import os
from pathlib import Path

from noclash.doctor.fixtures import main


def test_help_prints_usage_and_builds_nothing(tmp_path: Path, capsys) -> None:
    here = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert main(["--help"]) == 0
        assert main(["-h"]) == 0
        assert main(["--frobnicate"]) == 2
    finally:
        os.chdir(here)
    assert "usage:" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # "--help" was built as a SQLite file here
