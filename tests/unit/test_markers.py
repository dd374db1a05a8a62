"""What the upstream-marker fetch asks rsync for: the marker, Arch's lastsync with lastupdate, nothing else."""

from common.methods.markers import companions, filter_rules


def test_only_the_marker_and_its_parent_directories_pass_the_filter():
    assert filter_rules(("project/trace/master",)) == (
        "--include=/project/", "--include=/project/trace/", "--include=/project/trace/master", "--exclude=*")


def test_arch_lastupdate_brings_lastsync_and_nothing_else_does():
    assert companions("lastupdate") == ("lastsync",)
    assert companions("archlinux/lastupdate") == ("archlinux/lastsync",)
    assert companions("project/trace/master") == ()
    assert filter_rules(("lastupdate", "lastsync")) == ("--include=/lastupdate", "--include=/lastsync", "--exclude=*")
