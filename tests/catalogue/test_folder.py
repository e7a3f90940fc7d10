"""CatalogueFolder: the versioned read of catalogue.json, and what --overwrite may delete."""

from __future__ import annotations

import json

import pytest

from muser.catalogue.folder import FORMAT_VERSION, CatalogueFolder


def test_the_version_is_read_and_a_newer_or_damaged_one_refused_in_one_sentence(tmp_path):
    folder = CatalogueFolder(tmp_path)
    assert folder.read_info() is None
    folder.write_info({"format_version": FORMAT_VERSION, "complete": False})
    assert folder.read_info()["format_version"] == FORMAT_VERSION
    with pytest.raises(ValueError, match="incomplete"):
        folder.read_complete()
    folder.info_path.write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match=f"format_version {FORMAT_VERSION + 1}; this muser reads up to"):
        folder.read_info()
    folder.info_path.write_text("{torn")
    with pytest.raises(ValueError, match="not valid JSON.*--overwrite"):
        folder.read_info()


def test_overwrite_removes_only_the_catalogue_files(tmp_path):
    folder = CatalogueFolder(tmp_path / "emb")
    assert folder.open_for_writing(overwrite=False) is None
    folder.write_info({"format_version": 1})
    folder.embeddings.write_bytes(b"x")
    (folder.root / folder.part("src-1", "train-000000.tar")).parent.mkdir(parents=True)
    (folder.root / "notes.txt").write_text("mine")
    assert folder.open_for_writing(overwrite=False) == {"format_version": 1}
    assert folder.open_for_writing(overwrite=True) is None
    assert sorted(p.name for p in folder.root.iterdir()) == ["notes.txt"]


def test_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "report.pdf").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a catalogue's \\(report.pdf\\)"):
        CatalogueFolder(tmp_path).open_for_writing(overwrite=False)
