"""A manifest updated from a change (``digests.splice``) is the manifest a walk gives, and the change list
from its edits is the one from comparing whole manifests: checked on random trees and random changes."""

import os
import shutil
import tempfile

from hypothesis import HealthCheck, example, given, settings, strategies as st

from common import changes, digests

# Names that sort apart as text and as bytes, and around "/" ("a-b" sorts between "a" and "a/b").
NAMES = st.sampled_from(["a", "a-b", "a0", "b", "ü", "\udcff", "\udc80", "z\u00e9", ".x"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
KINDS = st.sampled_from(["file", "dir", "link", "hardlink", "gone", "mode"])
OPERATIONS = st.lists(st.tuples(KINDS, PATHS, PATHS), max_size=12)


def apply(root, kind, path, other):
    """One change at ``path`` (``other``: a link target or hard-link source); what cannot be done is skipped."""
    full, source = os.path.join(root, path), os.path.join(root, other)
    parent = os.path.dirname(full)
    if kind == "gone":
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        elif os.path.lexists(full):
            os.unlink(full)
        return
    if kind == "mode":
        if os.path.isfile(full) and not os.path.islink(full):
            os.chmod(full, 0o600 if os.stat(full).st_mode & 0o044 else 0o644)
        return
    if not os.path.isdir(parent) or os.path.islink(parent):
        return
    if os.path.lexists(full):
        apply(root, "gone", path, other)
    if kind == "file":
        with open(full, "wb") as out:
            out.write(os.fsencode(path))
    elif kind == "dir":
        os.mkdir(full)
    elif kind == "link":
        os.symlink(other, full)
    elif kind == "hardlink" and os.path.isfile(source) and not os.path.islink(source):
        os.link(source, full)


def build(root, operations):
    for kind, path, other in operations:
        apply(root, kind, path, other)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=OPERATIONS, second=OPERATIONS)
# A directory with a directory in it replaced by a file: the parent of a deleted path is below a file.
@example(first=[("file", "a/a/b", "a")], second=[("file", "a", "a")])
def test_a_spliced_manifest_is_a_walks_and_its_edits_give_the_same_change_list(first, second):
    with tempfile.TemporaryDirectory() as root:
        for name in ("a", "b", "a/a"):
            os.makedirs(os.path.join(root, name), exist_ok=True)
        build(root, first)
        old = digests.manifest(root)
        old_digest = digests.digest(old)   # the lines are kept
        assert old.lines is not None
        old_directories = dict(digests.directories(old))   # and the directories, once asked for
        build(root, second)
        walked = digests.manifest(root)
        expected = changes.between(old, walked)
        touched = tuple(path for path, _ in expected.touch)
        spliced, edits = digests.splice(old, root, expected.changed, expected.deleted, touched)
        assert spliced == walked
        assert spliced.lines == [digests._digest_text(entry) for entry in walked]
        # The directories came along with the splice, not from a pass over the new manifest.
        assert spliced._directories is not None
        assert digests.directories(spliced) == {entry.path: entry for entry in walked if entry.type == digests.DIR}
        assert digests.digest(spliced) == digests.digest(list(walked))
        assert changes.between(old, spliced, edits) == expected
        # A deleted directory takes what is under it along, named or not.
        topmost = tuple(path for path in expected.deleted
                        if not any(path.startswith(other + "/") for other in expected.deleted))
        assert digests.splice(old, root, expected.changed, topmost, touched)[0] == walked
        assert digests.digest(old) == old_digest, "the manifest it came from is as it was"
        assert digests.directories(old) == old_directories
        # Edits in order, disjoint, and what is kept beside a manifest follows them.
        assert all(a.stop <= b.start for a, b in zip(edits, edits[1:]))
        paths = digests.apply_edits([entry.path for entry in old], edits,
                                    lambda edit: [entry.path for entry in edit.entries], [])
        assert paths == [entry.path for entry in walked]


def test_a_lookup_finds_entries_in_byte_order_without_a_dict(tmp_path):
    os.makedirs(tmp_path / "a" / "b")
    for name in ("a-b", "a0", "\udcff", "ü"):
        open(os.path.join(tmp_path, name), "w").close()
    entries = digests.manifest(tmp_path)
    for entry in entries:
        assert digests.find(entries, entry.path) is entry
    assert digests.find(entries, "a/c") is None and digests.find(entries, "zz") is None
    assert digests.position(entries, "a/") == [entry.path for entry in entries].index("a/b")
