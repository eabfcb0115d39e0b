"""depotr.file_io: a destination is replaced whole or left as it was, never half-written."""

import os
import stat

import pytest

from depotr.file_io import atomic_output_path, atomic_write, output_problem, remove_temporary_files, write_image


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    path.write_bytes(b"old")
    atomic_write(str(path), lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"old")

    def half_write(f):
        f.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_write(str(path), half_write)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_output_path_is_in_the_destination_folder(tmp_path):
    with atomic_output_path(str(tmp_path / "model.onnx")) as tmp:
        assert tmp.startswith(str(tmp_path)) and tmp != str(tmp_path / "model.onnx")
        with open(tmp, "w") as f:
            f.write("onnx")
    assert (tmp_path / "model.onnx").read_text() == "onnx"


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
def test_written_file_gets_the_umask_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(str(tmp_path / "out.json"), lambda f: f.write(b"{}"))
        plain = tmp_path / "plain.json"
        plain.write_bytes(b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out.json").st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    assert stat.S_IMODE(os.stat(plain).st_mode) == 0o666 & ~umask


def test_leftover_temporary_files_are_removed(tmp_path):
    (tmp_path / "inference").mkdir()
    orphans = [tmp_path / ".tmp-0123456789ab-model_0000099.pth", tmp_path / "inference" / ".tmp-ab-results.json"]
    for path in orphans:
        path.write_bytes(b"half")
    (tmp_path / "model_final.pth").write_bytes(b"whole")
    assert sorted(remove_temporary_files(str(tmp_path))) == sorted(map(str, orphans))
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["inference", "model_final.pth"]


def test_output_problem_of_files_and_folders_to_write_into(tmp_path):
    (tmp_path / "file").write_text("a file")
    missing = tmp_path / "missing" / "deeper"
    assert output_problem(str(missing / "out.json")) == f"its folder {missing} does not exist"
    assert not (tmp_path / "missing").exists()
    assert output_problem(str(missing / "out.json"), create=True) is None and missing.is_dir()  # made
    assert output_problem(str(tmp_path)) == "it is a folder"
    assert output_problem(str(tmp_path / "file" / "out.json")) == f"its folder {tmp_path / 'file'} is not a folder"
    # folder: the folder to write into itself.
    assert output_problem(str(tmp_path / "out"), folder=True) == "it does not exist"
    assert output_problem(str(tmp_path / "out"), folder=True, create=True) is None and (tmp_path / "out").is_dir()
    assert output_problem(str(tmp_path / "file"), folder=True, create=True) == "it is not a folder"
    made = output_problem(str(tmp_path / "file" / "out"), folder=True, create=True)
    assert made.startswith("it cannot be made: ") and str(tmp_path / "file" / "out") in made


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_problem_of_a_read_only_folder(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert output_problem(str(tmp_path / "ro" / "out.json")) == f"its folder {tmp_path / 'ro'} is not writable"
    assert output_problem(str(tmp_path / "ro"), folder=True) == "it is not writable"


def test_write_image_encodes_by_extension_and_writes_nothing_when_it_cannot(tmp_path):
    import cv2
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    write_image(str(tmp_path / "a.png"), image)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a.png")), image)  # PNG: lossless, BGR kept
    write_image(str(tmp_path / "b.jpg"), image)
    assert (tmp_path / "b.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
    with pytest.raises(OSError, match="cannot encode .*c.txt"):
        write_image(str(tmp_path / "c.txt"), image)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.jpg"]
