"""``pixelprune export`` and the files in OUT: the marker is untrusted input, nothing outside OUT (or
not written by the exporter) is ever removed, and an export killed at any stage leaves OUT as the
old export or the new one, which a rerun recovers from."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from pixelprune.core.settings import PixelPruneSettings
from pixelprune.hub_configs import export_writer
from pixelprune.hub_configs.exporter import MARKER, ExportError, export
from pixelprune.hub_configs.out_folder import STAGING_PREFIX, fingerprint

FAMILY = "qwen3_vl"


def tree(folder: Path) -> dict[str, tuple[str, str | None]]:
    """name -> (sha256 of the content, symlink target), every entry but the marker."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir", os.readlink(p) if p.is_symlink() else None)
        for p in sorted(folder.iterdir()) if p.name != MARKER
    }


def marker(out: Path) -> dict:
    return json.loads((out / MARKER).read_text())


@pytest.fixture(scope="module")
def base(tiny_checkpoint) -> Path:
    return tiny_checkpoint(FAMILY)


@pytest.fixture()
def victims(tmp_path) -> dict[str, Path]:
    """Files outside OUT that a malicious marker might name."""
    other = tmp_path / "other_checkpoint"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"precious weights")
    (tmp_path / "notes.txt").write_text("my notes")
    return {"sibling": tmp_path / "notes.txt", "absolute": other / "model.safetensors"}


def _planted(out: Path, files) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"generator": "pixelprune export", "format": 2, "state": "complete", "files": files}))


@pytest.mark.parametrize(
    "name",
    ["../notes.txt", "ABSOLUTE", "sub/config.json", ".hidden", "..", "", "a\\b"],
)
def test_marker_naming_anything_but_a_file_inside_out_is_refused(base, tmp_path, victims, name):
    out = tmp_path / "out"
    target = str(victims["absolute"]) if name == "ABSOLUTE" else name
    _planted(out, {target: {"size": 1, "mtime_ns": 1}})
    before = tree(out)
    with pytest.raises(ExportError, match="which is not a plain file name inside OUT.*nothing in OUT was changed"):
        export(base, out, sample_images=[])
    with pytest.raises(ExportError, match="not a plain file name inside OUT"):
        export(base, out, sample_images=[], force=True)  # --force never makes a marker trusted
    assert victims["sibling"].read_text() == "my notes"
    assert victims["absolute"].read_bytes() == b"precious weights"
    assert tree(out) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"generator": "pixelprune export", "files": ["../notes.txt", "config.json"]}, "has format None"),
        ({"generator": "someone else", "format": 2, "state": "complete", "files": {}}, "does not name pixelprune export"),
        ({"generator": "pixelprune export", "format": 2, "state": "complete", "files": {"config.json": {"size": True, "mtime_ns": 1}}}, "invalid fingerprint"),
        ({"generator": "pixelprune export", "format": 2, "state": "in progress", "staging": "../../x", "files": {}}, "as its staging folder"),
        ([1, 2], "does not name pixelprune export"),
    ],
)
def test_malformed_or_foreign_markers_are_refused(base, tmp_path, victims, content, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text(json.dumps(content))
    with pytest.raises(ExportError, match=message):
        export(base, out, sample_images=[])
    assert victims["sibling"].read_text() == "my notes" and sorted(p.name for p in out.iterdir()) == [MARKER]


def test_marker_cannot_claim_a_user_file_inside_out(base, tmp_path):
    """A listed name whose fingerprint does not match is not the exporter's: kept, never overwritten."""
    out = tmp_path / "out"
    export(base, out, sample_images=[])
    (out / "notes.txt").write_text("mine")
    (out / "README.md").write_text("my edited card")
    data = marker(out)
    data["files"]["notes.txt"] = {"size": 999, "mtime_ns": 1}
    (out / MARKER).write_text(json.dumps(data))
    with pytest.raises(ExportError, match="did not write, or that changed since it wrote them: README.md"):
        export(base, out, sample_images=[])
    assert (out / "README.md").read_text() == "my edited card"
    export(base, out, sample_images=[], force=True)
    assert (out / "notes.txt").read_text() == "mine"  # not in the export: a user file stays
    assert (out / "README.md").read_text().startswith("---")


def test_previous_files_no_longer_written_are_removed_only_if_unchanged(base, tmp_path):
    out = tmp_path / "out"
    export(base, out, sample_images=[])
    data = marker(out)
    (out / "old_extra.json").write_text("{}")  # as if a previous export had written it
    (out / "changed_extra.json").write_text("{}")
    data["files"]["old_extra.json"] = fingerprint(out / "old_extra.json")
    data["files"]["changed_extra.json"] = fingerprint(out / "changed_extra.json")
    (out / MARKER).write_text(json.dumps(data))
    (out / "changed_extra.json").write_text('{"edited": true}')
    export(base, out, sample_images=[])
    assert not (out / "old_extra.json").exists()
    assert (out / "changed_extra.json").read_text() == '{"edited": true}'
    assert "old_extra.json" not in marker(out)["files"] and "changed_extra.json" not in marker(out)["files"]


class Killed(BaseException):
    """Stands for SIGKILL / Ctrl-C: not an Exception, so nothing cleans up after it."""


def _kill_at(monkeypatch, stage: str) -> None:
    """Make the writer die at ``stage``."""
    if stage == "first marker":
        monkeypatch.setattr(export_writer, "_write_marker", lambda *a, **k: (_ for _ in ()).throw(Killed()))
    elif stage == "weight copy":
        real_copy = export_writer._copy_weights

        def copy_then_die(staging, files):
            real_copy(staging, files)
            with open(staging / files[0].name, "r+b") as handle:  # a half-written weight file
                handle.truncate(10)
            raise Killed()

        monkeypatch.setattr(export_writer, "_copy_weights", copy_then_die)
    elif stage == "text files":
        calls = {"n": 0}
        real_open = open

        def open_then_die(path, mode="r", *args, **kwargs):
            if "x" in mode:
                calls["n"] += 1
                if calls["n"] == 5:
                    raise Killed()
            return real_open(path, mode, *args, **kwargs)

        monkeypatch.setattr(export_writer, "open", open_then_die, raising=False)
    elif stage == "moving into place":
        real_replace = os.replace
        calls = {"n": 0}

        def replace_then_die(src, dst):
            calls["n"] += 1
            if calls["n"] == 6:
                raise Killed()
            real_replace(src, dst)

        monkeypatch.setattr(export_writer.os, "replace", replace_then_die)
    elif stage == "final marker":
        real = export_writer._write_marker

        def die_on_complete(out, plan, state, files, **extra):
            if state == "complete":
                raise Killed()
            real(out, plan, state, files, **extra)

        monkeypatch.setattr(export_writer, "_write_marker", die_on_complete)
    else:  # pragma: no cover
        raise AssertionError(stage)


STAGES = ["first marker", "text files", "weight copy", "moving into place", "final marker"]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "reexport"])
def test_killed_export_leaves_old_or_new_and_a_rerun_recovers(base, tmp_path, monkeypatch, stage, previous):
    new_settings = PixelPruneSettings(threshold=0.05)
    reference = tmp_path / "reference" / "repo"
    export(base, reference, sample_images=[], weights="copy", settings=new_settings)
    new_tree = tree(reference)
    out = tmp_path / "out" / "repo"
    old_tree = None
    if previous:
        export(base, out, sample_images=[])
        old_tree = tree(out)
    with monkeypatch.context() as patch:
        _kill_at(patch, stage)
        with pytest.raises(Killed):
            export(base, out, sample_images=[], weights="copy", settings=new_settings)
    staging = [p.name for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)] if out.exists() else []
    visible = {k: v for k, v in tree(out).items() if k not in staging} if out.exists() else {}
    state = marker(out)["state"] if out.exists() and (out / MARKER).exists() else None
    if stage == "moving into place":  # the only moment OUT mixes old and new files: the marker says so
        assert state == "in progress"
        assert all(v in (new_tree.get(k), (old_tree or {}).get(k)) for k, v in visible.items())
    elif stage == "final marker":
        assert visible == new_tree
    elif previous:
        assert visible == old_tree  # the old export, untouched (a half-copied weight is only in staging)
    else:
        assert visible == {}
    # A rerun explains, clears the interrupted run's files and ends with exactly the new export.
    export(base, out, sample_images=[], weights="copy", settings=new_settings)
    assert tree(out) == new_tree
    assert marker(out)["state"] == "complete" and "staging" not in marker(out)


def test_interrupted_staging_folder_is_only_removed_when_the_marker_names_it(base, tmp_path):
    out = tmp_path / "out"
    export(base, out, sample_images=[])
    lookalike = out / f"{STAGING_PREFIX}0123456789abcdef"
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("not the exporter's")
    export(base, out, sample_images=[], force=True)  # a foreign entry, not in the export's names
    assert (lookalike / "keep.txt").read_text() == "not the exporter's"


def test_a_write_error_is_one_clear_export_error_and_keeps_the_old_export(base, tmp_path, monkeypatch):
    out = tmp_path / "out"
    export(base, out, sample_images=[])
    old = tree(out)

    def disk_full(staging, plan):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_writer, "_stage", disk_full)
    with pytest.raises(ExportError, match="No space left on device.*still holds the previous export.*rerun"):
        export(base, out, sample_images=[], weights="copy")
    assert {k: v for k, v in tree(out).items() if not k.startswith(STAGING_PREFIX)} == old
    monkeypatch.undo()
    export(base, out, sample_images=[], weights="copy")
    assert not [p for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_a_symlink_in_out_is_replaced_never_written_through(base, tmp_path, victims):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").symlink_to(victims["absolute"])
    with pytest.raises(ExportError, match="not empty and was not written by pixelprune export"):
        export(base, out, sample_images=[])
    export(base, out, sample_images=[], force=True)
    assert victims["absolute"].read_bytes() == b"precious weights"
    assert not (out / "config.json").is_symlink() and json.loads((out / "config.json").read_text())["auto_map"]
