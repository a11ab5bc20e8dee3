"""The doctor's public API is explicit and sorted, and it knows nothing of chat code."""

from __future__ import annotations

import pathlib

import noclash.doctor


def test_exports_are_sorted_and_real() -> None:
    names = noclash.doctor.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(noclash.doctor, name) is not None


def test_doctor_depends_on_introspection_only() -> None:
    root = pathlib.Path(noclash.doctor.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for private in ("noclash.chat", "noclash.api", "noclash.db.tables", "noclash.channels"):
            assert private not in text, f"{path.name} imports {private}"
