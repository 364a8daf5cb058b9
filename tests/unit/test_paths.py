"""resolve_in_root: paths inside a container root never escape to the host."""
import os

import pytest

from leaktrace.symbols.paths import MAX_SYMLINKS, PathResolveError, resolve_in_root


@pytest.fixture
def root(tmp_path):
    """A fake container root with /etc/shadow, /usr/lib and a few links."""
    fake = tmp_path / "root"
    (fake / "etc").mkdir(parents=True)
    (fake / "etc" / "shadow").write_text("container shadow\n")
    (fake / "usr" / "lib").mkdir(parents=True)
    (fake / "usr" / "lib" / "libx.so").write_text("x")
    return fake


def test_plain_path_is_joined_under_root(root):
    assert resolve_in_root(str(root), "/usr/lib/libx.so") == f"{root}/usr/lib/libx.so"


def test_absolute_symlink_is_reread_inside_root(root):
    os.symlink("/etc/shadow", root / "app")
    resolved = resolve_in_root(str(root), "/app")
    assert resolved == f"{root}/etc/shadow"
    assert open(resolved).read() == "container shadow\n"


def test_relative_symlink_cannot_climb_out_of_root(root):
    (root / "opt" / "a").mkdir(parents=True)
    os.symlink("../../../../../../etc/shadow", root / "opt" / "a" / "escape")
    assert resolve_in_root(str(root), "/opt/a/escape") == f"{root}/etc/shadow"


def test_dotdot_in_the_path_is_clamped_at_root(root):
    assert resolve_in_root(str(root), "/../../../etc/shadow") == f"{root}/etc/shadow"
    assert resolve_in_root(str(root), "usr/../../etc/./shadow") == f"{root}/etc/shadow"


def test_directory_symlink_in_the_middle(root):
    os.symlink("usr/lib", root / "lib")  # like /lib -> usr/lib on merged-/usr distributions
    assert resolve_in_root(str(root), "/lib/libx.so") == f"{root}/usr/lib/libx.so"


def test_dotdot_after_a_symlink_follows_the_target(root):
    os.symlink("/usr/lib", root / "l")
    # /l/.. is /usr (the link's parent in the target), as the kernel resolves it.
    assert resolve_in_root(str(root), "/l/../lib/libx.so") == f"{root}/usr/lib/libx.so"


def test_symlink_loop_raises(root):
    os.symlink("/b", root / "a")
    os.symlink("/a", root / "b")
    with pytest.raises(PathResolveError, match="too many symbolic links"):
        resolve_in_root(str(root), "/a/file")


def test_chain_at_the_limit_resolves_and_one_more_fails(root):
    names = [f"link{i}" for i in range(MAX_SYMLINKS + 1)]
    for current, following in zip(names, names[1:]):
        os.symlink(following, root / current)
    os.symlink("etc/shadow", root / names[-1])
    # link1 .. link40 is 40 links: allowed; from link0 it is 41.
    assert resolve_in_root(str(root), "/link1") == f"{root}/etc/shadow"
    with pytest.raises(PathResolveError):
        resolve_in_root(str(root), "/link0")


def test_missing_components_are_kept_for_the_caller_to_report(root):
    assert resolve_in_root(str(root), "/no/such/file") == f"{root}/no/such/file"


def test_host_root_agrees_with_realpath(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    path = str(tmp_path / "alias" / "x")
    assert resolve_in_root("/", path) == os.path.realpath(path)
