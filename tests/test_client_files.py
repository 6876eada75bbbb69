from pathlib import Path

import pytest

from rtmo_triton.client import IMAGE_EXTENSIONS, find_images


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_folders_are_searched_recursively_for_image_extensions(tmp_path):
    touch(tmp_path, "b.jpg", "a.PNG", "sub/c.jpeg", "sub/deeper/d.webp", "e.tiff", "f.tif", "g.bmp",
          "notes.txt", "model.onnx", "sub/h.gif")
    found = find_images([tmp_path])
    rel = [f.path.relative_to(tmp_path).as_posix() for f in found]
    assert rel == ["a.PNG", "b.jpg", "e.tiff", "f.tif", "g.bmp", "sub/c.jpeg", "sub/deeper/d.webp"]
    assert [f.key for f in found] == ["a", "b", "e", "f", "g", "sub/c", "sub/deeper/d"]


def test_all_advertised_extensions_are_found(tmp_path):
    touch(tmp_path, *(f"img{ext}" for ext in IMAGE_EXTENSIONS))
    assert len(find_images([tmp_path])) == len(IMAGE_EXTENSIONS) == 7


def test_hidden_entries_are_skipped(tmp_path):
    touch(tmp_path, ".hidden.jpg", ".cache/a.jpg", "ok.jpg")
    assert [f.key for f in find_images([tmp_path])] == ["ok"]


def test_named_files_are_taken_whatever_their_extension(tmp_path):
    touch(tmp_path, "frame.raw", "dir/x.jpg")
    found = find_images([tmp_path / "frame.raw", tmp_path / "dir"])
    assert [(f.path.name, f.key) for f in found] == [("frame.raw", "frame"), ("x.jpg", "x")]


def test_output_keys_never_collide(tmp_path):
    touch(tmp_path, "a/x.jpg", "a/x.png", "b/x.jpg")
    keys = [f.key for f in find_images([tmp_path / "a", tmp_path / "b"])]
    assert keys == ["x", "x_png", "x_jpg"]
    keys = [f.key for f in find_images([tmp_path / "a/x.jpg", tmp_path / "b/x.jpg", tmp_path / "a/x.png"])]
    assert len(set(keys)) == 3


def test_the_same_file_twice_is_listed_once(tmp_path):
    touch(tmp_path, "x.jpg")
    assert len(find_images([tmp_path, tmp_path / "x.jpg", str(tmp_path / "." / "x.jpg")])) == 1


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        find_images([tmp_path / "nope"])


def test_empty_folder_gives_nothing(tmp_path):
    assert find_images([tmp_path]) == []
