"""Results written whole: the old content or the new, never a part, and no partial file left behind."""
import tarfile

import pytest

from rtmo_triton.whole_files import write_whole, writing


def test_write_whole_replaces_text_and_bytes(tmp_path):
    path = tmp_path / "result.json"
    write_whole(path, "old")
    write_whole(path, b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_writer_that_fails_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "packages.tar.gz"
    path.write_text("old")
    with pytest.raises(OSError, match="disk full"), writing(path) as partial:
        partial.write_text("half an archi")
        raise OSError("disk full")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_streaming_writer_lands_complete(tmp_path):
    (member := tmp_path / "member.txt").write_text("x" * 1000)
    archive = tmp_path / "out" / "a.tar.gz"
    archive.parent.mkdir()
    with writing(archive) as partial, tarfile.open(partial, "w:gz") as tar:
        tar.add(member, arcname=member.name)
        assert not archive.exists()  # nobody sees it before it is whole
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["member.txt"]
    assert [p.name for p in archive.parent.iterdir()] == ["a.tar.gz"]
