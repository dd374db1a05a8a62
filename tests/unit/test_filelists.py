"""common.filelists: reading an upstream's fullfiletimelist and planning the pull from two of them."""

import os

import pytest

from common import digests, filelists


def listing(tmp_path, body, name="list"):
    path = tmp_path / name
    path.write_bytes(b"[Version]\n3\n\n[Files]\n" + body + b"\n[Checksums SHA1]\nabc\tx\n[End]\n")
    return path


def test_parse_reads_the_files_section_only(tmp_path):
    path = listing(tmp_path, b"10\td\t4096\treleases\n11\tf\t5\treleases/a b.rpm\n12\tl\t2\tlatest\n")
    assert filelists.parse(path) == {"releases": (10, "d", 4096), "releases/a b.rpm": (11, "f", 5),
                                     "latest": (12, "l", 2)}


@pytest.mark.parametrize("line, words", [
    (b"10\tf\treleases", "is not 'seconds<TAB>type<TAB>size<TAB>path'"),
    (b"ten\tf\t1\ta", "must be numbers"),
    (b"10\tf\t1\t../etc/passwd", "outside the tree"),
    (b"10\tf\t1\t/etc/passwd", "outside the tree"),
])
def test_parse_refuses_what_is_not_a_list(tmp_path, line, words):
    with pytest.raises(filelists.FilelistError, match="the line ") as raised:
        filelists.parse(listing(tmp_path, line + b"\n"))
    assert words in str(raised.value)
    (tmp_path / "empty").write_text("no sections\n")
    with pytest.raises(filelists.FilelistError, match=r"no \[Files\] section"):
        filelists.parse(tmp_path / "empty")


def entry(path, kind=digests.FILE, size=1):
    return digests.Entry(path, kind, size if kind == digests.FILE else None)


def listing_of(entries):
    return filelists.Listing(frozenset(f"{seconds}\t{kind}\t{size}\t{path}".encode()
                                       for path, (seconds, kind, size) in entries.items()))


OLD = {"a": (1, "d", 4096), "a/x": (1, "f", 1), "a/y": (1, "f", 1), "b": (1, "f", 1), "c": (1, "d", 4096),
       "c/in": (1, "f", 1)}
NEW = {"a": (2, "d", 4096), "a/x": (2, "f", 3), "a/y": (1, "f", 1), "b": (1, "f", 1), "c": (3, "f", 9),
       "d": (3, "f", 1)}


def test_a_tree_as_its_list_left_it_is_planned_from_the_lines_that_differ():
    held = [entry("."), entry("a", digests.DIR), entry("a/x"), entry("a/y"), entry("b"), entry("c", digests.DIR),
            entry("c/in")]
    plan = filelists.plan(listing_of(OLD), listing_of(NEW), held)
    # a/x changed, c became a file, d is new, a is their parent (and its own line changed).
    assert plan.transfer == ("a", "a/x", "c", "d")
    assert plan.delete == ("c", "c/in")
    assert plan.root and plan.listed == 6 and not plan.empty


def test_a_tree_unlike_its_list_is_compared_entry_by_entry():
    # One more entry than the old list (a trace file of ours, kept; and a stray one), a/y of another size.
    held = [entry("."), entry("a", digests.DIR), entry("a/x"), entry("a/y", size=7), entry("b"),
            entry("c", digests.DIR), entry("c/in"), entry("stray", digests.DIR), entry("stray/us"),
            entry("trace")]
    plan = filelists.plan(listing_of(OLD), listing_of(NEW), held, keep=("trace",))
    assert plan.transfer == ("a", "a/x", "a/y", "c", "d")
    assert plan.delete == ("c", "c/in", "stray", "stray/us")


def test_an_unchanged_list_over_its_own_tree_is_an_empty_plan():
    listed = listing_of({"a": (1, "d", 4096), "a/x": (1, "f", 1), "l": (1, "l", 1)})
    held = [entry("."), entry("a", digests.DIR), entry("a/x"), entry("l", digests.SYMLINK)]
    assert filelists.plan(listed, listed, held).empty


def test_write_lists_a_tree_as_fedora_does_and_leaves_itself_out(tmp_path):
    tree = tmp_path / "tree"
    os.makedirs(tree / "a")
    (tree / "a/x").write_text("xyz")
    os.symlink("a", tree / "l")
    filelists.write(tree, tree / "fullfiletimelist")
    listed = filelists.parse(tree / "fullfiletimelist")
    assert sorted(listed) == ["a", "a/x", "l"]
    assert listed["a/x"][1:] == ("f", 3) and listed["l"][1] == "l" and listed["a"][1] == "d"


def test_the_list_itself_in_the_tree_keeps_the_plan_to_the_lines_that_differ():
    held = [entry("."), entry("a", digests.DIR), entry("a/x"), entry("a/y"), entry("b"), entry("c", digests.DIR),
            entry("c/in"), entry("fullfiletimelist"), entry("stray")]
    # "stray" is not listed: compared entry by entry, it goes; by the lines that differ, it would stay.
    assert filelists.plan(listing_of(OLD), listing_of(NEW), held, keep=("fullfiletimelist",)).delete == \
        ("c", "c/in", "stray")
    quick = filelists.plan(listing_of(OLD), listing_of(NEW), held[:-1], keep=("fullfiletimelist",))
    assert quick.delete == ("c", "c/in") and quick.transfer == ("a", "a/x", "c", "d")


def test_names_finds_a_path_in_any_of_its_spellings():
    listed = filelists.Listing(frozenset({b"1\tf\t1\t./a/x", b"1\td\t1\tb/", b"1\td\t1\t."}))
    assert listed.names("a/x") and listed.names("b") and listed.names(".")
    assert not listed.names("x") and not listed.names("a")
    assert len(listed) == 2


def test_a_compacted_listing_still_answers_what_it_names():
    listed = filelists.Listing(frozenset({b"1\tf\t1\t./a/x", b"1\td\t1\tb/"}))
    listed.compact(paths=("a/x",))
    assert listed.text is None
    assert listed.names("a/x") and listed.names("b") and not listed.names("c")


def test_held_gives_back_the_listing_kept_for_that_very_file(tmp_path):
    path = listing(tmp_path, b"1\tf\t1\ta\n")
    kept = filelists.load(path)
    filelists.hold(("data", "p"), path, kept)
    assert filelists.held(("data", "p"), path) is kept
    # Another file at that path (a new inode, another size): read again.
    other = listing(tmp_path, b"2\tf\t22\ta\n", name="other")
    os.replace(other, path)
    assert filelists.held(("data", "p"), path) is not kept
    assert filelists.held(("data", "p"), path).entries() == {"a": (2, "f", 22)}


def test_a_list_written_with_crlf_line_ends_reads_the_same(tmp_path):
    path = tmp_path / "list"
    path.write_bytes(b"[Version]\r\n3\r\n\r\n[Files]\r\n10\tf\t5\ta\r\n[End]\r\n")
    assert filelists.parse(path) == {"a": (10, "f", 5)}
