"""Property-based tests (hypothesis) for the name/path validators and the commit/read protocol.

Skipped where hypothesis is not installed (it is not in requirements/cpu.lock yet).
"""

from __future__ import annotations

import os

import pytest

from rayloom import storage
from rayloom.config._validate import name_problem
from rayloom.errors import UserError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.reliability

_NAMES = st.one_of(st.text(max_size=40), st.sampled_from(["", ".", "..", "./x", "../x", ".git", "a/..", "x\x00"]))


@given(_NAMES)
def test_an_accepted_name_is_one_child_of_its_folder(name):
    root = "/srv/runs/models"
    if name_problem(name):
        return
    joined = os.path.normpath(os.path.join(root, name))
    assert os.path.dirname(joined) == root and os.path.basename(joined) == name and not name.startswith(".")


@given(st.lists(st.sampled_from(["runs", "models", "..", ".", "x", "data"]), max_size=5))
def test_check_output_path_never_accepts_the_root_or_above(parts):
    root = "/srv/runs"
    out = os.path.join(root, *parts) if parts else root
    resolved = os.path.normpath(out)
    is_root_or_above = resolved == root or root.startswith(resolved.rstrip("/") + "/") or resolved == "/"
    try:
        storage.check_output_path(out, root=root)
    except UserError:
        assert is_root_or_above
    else:
        assert not is_root_or_above


_FILES = st.dictionaries(st.sampled_from(["a", "b.bin", "sub/c", "sub/d.json", "e"]), st.text(max_size=20),
                         min_size=1, max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_FILES, min_size=1, max_size=5), st.integers(min_value=1, max_value=3))
def test_reads_see_exactly_the_last_commit_and_rollback_the_one_before(tmp_path_factory, commits, keep):
    base = tmp_path_factory.mktemp("prop")
    dest = str(base / "artifact")
    for n, files in enumerate(commits):
        src = base / f"src{n}"
        for rel, text in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_text(text)
        storage.commit_dir(src, dest, keep_versions=keep)
        info = storage.read_commit(dest)
        assert {r: storage.read_text(storage.join(info.path, r)) for r in info.files} == files
        assert len(storage.list_versions(dest)) == min(n + 1, keep)
    if len(commits) > 1 and keep > 1:
        storage.rollback(dest)
        info = storage.read_commit(dest)
        assert {r: storage.read_text(storage.join(info.path, r)) for r in info.files} == commits[-2]
