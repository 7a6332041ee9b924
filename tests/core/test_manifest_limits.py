"""Manifest limits, linear parsing, control-message bounds and the folded pull deny-list."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.filesync import (
    MAX_DEPTH,
    MAX_DIRS,
    MAX_ENTRIES,
    Manifest,
    plan_pull,
    safe_relpath,
)
from jupyter_gpumarket.core.pathfold import NameTree, fold_name, fold_path, is_denied_name
from jupyter_gpumarket.exceptions import ProtocolError, SyncTooLarge, UnsafePath

from synchelpers import entry, manifest, sha

SHA = sha(b"x")


def _wire(paths: list[str]) -> dict[str, object]:
    return {"files": {p: [1, SHA, 1] for p in paths}}


# --- limits ----------------------------------------------------------------------------------
def test_too_many_entries_are_refused_before_any_is_checked() -> None:
    files = {f"f{i}": [1, SHA, 1] for i in range(MAX_ENTRIES + 1)}
    files["../escape"] = [1, SHA, 1]  # would be an UnsafePath if entries were looked at
    with pytest.raises(SyncTooLarge, match=r"100,002 files, more than the 100,000") as info:
        Manifest.from_json({"files": files})
    assert ".gpumarketignore" in str(info.value)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 2000])
def test_paths_deeper_than_the_limit_are_refused(depth: int) -> None:
    with pytest.raises(UnsafePath, match=f"nested {depth} levels deep, more than {MAX_DEPTH}"):
        Manifest.from_json(_wire(["a/" * (depth - 1) + "f"]))
    assert safe_relpath("a/" * (MAX_DEPTH - 1) + "f").count("/") == MAX_DEPTH - 1


def test_too_many_directories_are_refused() -> None:
    deep = "/".join(f"n{k}" for k in range(MAX_DEPTH - 2))
    paths = [f"t{i}/{deep}/f" for i in range(MAX_DIRS // (MAX_DEPTH - 1) + 1)]
    with pytest.raises(SyncTooLarge, match="more than 100,000 directories"):
        Manifest.from_json(_wire(paths))


@pytest.mark.parametrize("order", [["a/b/c", "a/b"], ["a/b", "a/b/c"], ["x", "a/b", "a/b/c/d"]])
def test_a_name_used_as_file_and_directory_is_refused_in_either_order(order: list[str]) -> None:
    with pytest.raises(ProtocolError, match="'a/b' both as a file and as a directory"):
        Manifest.from_json(_wire(order))


def test_huge_path_strings_are_refused_before_splitting() -> None:
    with pytest.raises(UnsafePath, match="longer than 4096 bytes"):
        safe_relpath("./" * 1_000_000 + "f")


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6).map("/".join))
def test_tree_clash_matches_the_prefix_definition(extra: str) -> None:
    paths = ["a/b", "c", extra]
    clashes = any(p != q and q.startswith(p + "/") for p in set(paths) for q in set(paths))
    try:
        Manifest.from_json(_wire(paths))
    except ProtocolError:
        assert clashes
    else:
        assert not clashes


# --- control messages --------------------------------------------------------------------------
def test_control_messages_have_their_own_size_limit() -> None:
    big = b'{"op":"refused","request":"x","message":"' + b"a" * control.MAX_CONTROL_BYTES + b'"}'
    with pytest.raises(ProtocolError, match="too large"):
        control.parse_agent_message(big)


@pytest.mark.parametrize("filler", [b"{},", b"[],", b"1,"])
def test_control_messages_with_too_many_values_are_refused(filler: bytes) -> None:
    body = filler * (control.MAX_CONTROL_VALUES + 1)
    raw = b'{"op":"sync_offer","manifest":{"files":{}},"x":[' + body + b"0]}"
    with pytest.raises(ProtocolError, match="JSON values"):
        control.parse_agent_message(raw)


def test_a_manifest_at_the_entry_limit_fits_a_control_message() -> None:
    paths = [f"data/train/class_{i % 1000:04d}/image_{i:06d}.jpeg" for i in range(MAX_ENTRIES)]
    offer = control.SyncOffer(manifest=Manifest.from_json(_wire(paths)).to_json())
    raw = control.dump(offer)
    assert len(raw) < control.MAX_CONTROL_BYTES
    parsed = control.parse_agent_message(raw)
    assert len(Manifest.from_json(parsed.manifest)) == MAX_ENTRIES


# --- folding and the pull deny-list ------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        ".git",
        ".Git",
        ".GIT",
        ".git.",
        ".git ",
        ".git. . ",
        ".g\u200cit",
        "\ufeff.git",
        ".git\u200d",
        ".\uff27it",
        ".git::$INDEX_ALLOCATION",
        ".git:stream",
        "GIT~1",
        "git~12",
    ],
)
def test_every_spelling_of_git_folds_to_a_denied_name(name: str) -> None:
    assert is_denied_name(fold_name(name), frozenset({".git"}))


@pytest.mark.parametrize("name", [".gitignore", ".gi\u0301t", "git", "digit~1", ".github"])
def test_other_names_are_not_denied(name: str) -> None:
    assert not is_denied_name(fold_name(name), frozenset({".git"}))


def test_fold_path_matches_case_and_compatibility_twins() -> None:
    assert fold_path("Sub/NOTES.txt") == fold_path("sub/notes.txt")
    assert fold_path("\ufb01le.txt") == fold_path("file.txt")
    assert fold_path("caf\u00e9") == fold_path("cafe\u0301")
    assert fold_path("Stra\u00dfe") == fold_path("strasse")


@pytest.mark.parametrize(
    "path",
    [
        ".Git/config",
        ".GIT/hooks/pre-commit",
        "deep/down/.gIt/config",
        ".git./config",
        "GIT~1/config",
        ".git",
        ".VENV/bin/activate",
        "a/Node_Modules/x.js",
        ".GPUMARKET/x",
        "__PYCACHE__/m.pyc",
        ".Ipynb_Checkpoints/n.ipynb",
        "VENV~1/bin/python",
    ],
)
def test_plan_pull_never_writes_denied_dirs_in_any_spelling(path: str) -> None:
    remote = Manifest({path: entry(b"planted"), "ok.txt": entry(b"ok")})
    plan = plan_pull(remote, Manifest(), Manifest())
    assert [item.local_path for item in plan.items] == ["ok.txt"]
    assert [s.path for s in plan.skipped] == [path]


@pytest.mark.parametrize(
    ("local", "remote"),
    [("notes.txt", "NOTES.txt"), ("file.txt", "\ufb01le.txt"), ("caf\u00e9", "cafe\u0301")],
)
def test_plan_pull_never_writes_over_a_local_file_of_another_spelling(
    local: str, remote: str
) -> None:
    here = Manifest({local: entry(b"mine")})
    plan = plan_pull(Manifest({remote: entry(b"theirs")}), here, here)
    assert plan.items == ()
    assert "in the way" in plan.skipped[0].reason


def test_plan_pull_keeps_only_one_of_two_remote_twins() -> None:
    plan = plan_pull(manifest(**{"A.txt": b"1", "a.txt": b"2"}), Manifest(), Manifest())
    assert len(plan.items) == 1
    assert len(plan.skipped) == 1


def test_name_tree_reports_file_and_directory_clashes_without_adding() -> None:
    tree = NameTree(fold_name)
    assert tree.add("Data/x.csv") is None
    assert tree.add("data") == ("dir", "data")
    assert tree.add("DATA/X.CSV") == ("file", "Data/x.csv")
    assert tree.add("data/x.csv/y") == ("file", "Data/x.csv")
    assert tree.add("Data/x.csv") is None  # the same file again: not a clash
    assert tree.add("data/new.csv") is None
    assert tree.add("data/x.csv/y") == ("file", "Data/x.csv")  # the clash added nothing


def test_wire_round_trip_of_a_limit_manifest_is_json() -> None:
    m = Manifest.from_json(_wire(["a/" * (MAX_DEPTH - 1) + "f"]))
    assert json.loads(json.dumps(m.to_json())) == m.to_json()
