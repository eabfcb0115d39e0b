"""depotr.file_io: a destination is replaced whole or left as it was, never half-written."""
import pytest

from depotr.file_io import atomic_output_path, atomic_write


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
