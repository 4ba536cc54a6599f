"""Containment: hostile keys and file names are refused, by the core's one check, at every place
that turns a key into a path or an output key; nothing is ever written beside the root."""

from pathlib import Path

import pytest

from shardflow.core.keys import check_relative, contained_path, relative_key
from shardflow.errors import DeterministicError, UnsafeKey
from shardflow.processing.tabular import output_name

PREFIX = "events/dt=2026-01-03/"

HOSTILE = {
    "climbs out": ("../../../../../../../../../../../tmp/x/pwned.parquet", "'..' segment"),
    "climbs back in": ("a/../b.parquet", "'..' segment"),
    "absolute": ("/tmp/x/pwned.parquet", "starts with '/'"),
    "empty segment": ("a//b.parquet", "empty segment"),
    "trailing slash": ("a/b/", "empty segment"),
    "dot segment": ("./b.parquet", "'.' segment"),
    "backslash": ("..\\..\\x.parquet", "backslash"),
    "newline": ("a\nb.parquet", "control character"),
    "nul": ("a\x00b.parquet", "control character"),
    "escape": ("\x1b[2Jb.parquet", "control character"),
    "delete": ("a\x7fb.parquet", "control character"),
    "the prefix itself": ("", "names the prefix itself"),
}


@pytest.mark.parametrize(("relative", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_keys_are_refused_naming_the_key_and_why(relative, reason):
    with pytest.raises(UnsafeKey) as refused:
        relative_key(PREFIX, PREFIX + relative)
    assert repr(PREFIX + relative) in str(refused.value) and reason in str(refused.value)
    assert isinstance(refused.value, DeterministicError)  # never retried
    with pytest.raises(UnsafeKey):
        check_relative(relative)


@pytest.mark.parametrize(
    "relative", ["part-0000.parquet", "late/part-0001.parquet", "a.b/c..d/e...parquet", "été/ü.csv.gz", "x y.csv"]
)
def test_plain_relative_keys_pass_unchanged(relative):
    assert relative_key(PREFIX, PREFIX + relative) == relative
    assert check_relative(relative) == relative


def test_hostile_a_key_outside_the_prefix_is_refused():
    with pytest.raises(UnsafeKey, match="not under the prefix"):
        relative_key(PREFIX, "events/dt=2026-01-04/part-0000.parquet")


@pytest.mark.parametrize(("relative", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_paths_never_leave_the_root(tmp_path, relative, reason):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    with pytest.raises(UnsafeKey):
        contained_path(root, relative)
    with pytest.raises(UnsafeKey):
        output_name(relative if relative.endswith(".parquet") else relative + "/x.parquet", "parquet", "csv")
    assert list(outside.iterdir()) == []


def test_hostile_a_link_that_leads_out_of_the_root_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "inner").symlink_to(outside)
    assert contained_path(root, "late/part-0001.parquet") == root / "late" / "part-0001.parquet"
    with pytest.raises(UnsafeKey, match="leads outside"):
        contained_path(root, "inner/pwned.parquet")


def test_output_names_keep_their_folder_and_take_the_outputs_suffix():
    assert output_name("a/part-3.csv.gz", "csv.gz", "parquet") == "a/part-3.parquet"
    assert output_name(str(Path("late") / "p.parquet"), "parquet", "csv") == "late/p.csv"
