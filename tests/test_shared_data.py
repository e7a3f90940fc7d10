"""The ../shared gate: present folders pass through; absent ones skip on a checkout and fail under CI."""

from __future__ import annotations

import pytest

from tests.shared_data import need_shared


def test_present_folder_and_marker_are_returned(tmp_path):
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "config.json").write_text("{}")
    assert need_shared("models", "m", marker="config.json", root=tmp_path) == tmp_path / "models" / "m"


def test_missing_folder_skips_with_its_name_on_a_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"\.\./shared/data/real is not present"):
        need_shared("data", "real", root=tmp_path)
    (tmp_path / "models" / "m").mkdir(parents=True)  # the folder without its marker file is missing too
    with pytest.raises(pytest.skip.Exception, match="m/config.json is not present"):
        need_shared("models", "m", marker="config.json", root=tmp_path)


def test_missing_folder_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"\.\./shared/data/real is not present.*CI must run"):
        need_shared("data", "real", root=tmp_path)
