"""tools/gpu_check.sh without a GPU (it must say so, exit 2 and leave everything as it was), and
tools/gpu_check_notes.py, the part that writes its figures, on fabricated results."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tools", "gpu_check.sh")
NOTES = os.path.join(REPO, "benchmarks", "msda_gpu_notes.md")


def snapshot(*folders: str) -> dict[str, tuple[int, float]]:
    """(size, mtime) of every file below the folders (relative to the repository)."""
    files = {}
    for folder in folders:
        for root, _, names in os.walk(os.path.join(REPO, folder)):
            if "__pycache__" in root:
                continue
            for name in names:
                path = os.path.join(root, name)
                files[os.path.relpath(path, REPO)] = (os.path.getsize(path), os.path.getmtime(path))
    return files


def test_without_gpu_says_so_exits_2_and_writes_nothing(tmp_path):
    before = snapshot("benchmarks", "tools", "projects")
    with open(NOTES, "rb") as f:
        notes = f.read()
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, TMPDIR=str(tmp_path))
    completed = subprocess.run(["bash", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "gpu_check: no CUDA GPU visible to PyTorch" in completed.stderr
    assert "nothing was built, run or written" in completed.stderr
    with open(NOTES, "rb") as f:
        assert f.read() == notes
    assert snapshot("benchmarks", "tools", "projects") == before  # no build, no temporary file
    assert not [name for name in os.listdir(tmp_path) if name.startswith("gpu_check.")]  # no results


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python: a GPU named "Fake GPU", pytest failing, every other step succeeding.
if [[ $1 == -c ]]; then echo "Fake GPU"; exit 0; fi
if [[ $1 == tools/gpu_check_notes.py ]]; then exec {python} "$@"; fi
echo "FORCE_CUDA=${{FORCE_CUDA:-}} $*" >> {log}
if [[ $1 == -m && $2 == pytest ]]; then echo "1 failed"; exit 1; fi
exit 0
"""


def test_with_a_gpu_runs_every_step_and_writes_the_notes(tmp_path):
    # The script's flow past the GPU probe, every command replaced by FAKE_PYTHON.
    log, notes, tmp = tmp_path / "commands.log", tmp_path / "notes.md", tmp_path / "tmp"
    tmp.mkdir()
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable, log=log))
    fake.chmod(0o755)
    notes.write_text("# Notes\n")
    env = dict(os.environ, PYTHON=str(fake), TMPDIR=str(tmp), GPU_CHECK_NOTES=str(notes))
    completed = subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1, completed.stderr  # the tests step failed
    assert "SOME STEPS FAILED" in completed.stderr
    commands = log.read_text().splitlines()
    assert [c.split()[1] for c in commands] == [
        "setup.py",
        "-m",
        "tools/check_msda_cuda.py",
        "train_net.py",
        "benchmarks/bench_msda.py",
        "benchmarks/bench_msda.py",
        "benchmarks/bench_msda.py",
    ]
    assert commands[0].startswith("FORCE_CUDA=1 setup.py -q build_ext --inplace")
    assert "configs/depotr_hm_r50.yaml" in commands[3] and "SOLVER.AMP.ENABLED True" in commands[3]
    assert "SOLVER.MAX_ITER 20" in commands[3] and "MODEL.DEVICE cuda" in commands[3]
    assert "--dtype float32" in commands[4] and "--backends" not in commands[4]  # all, original included
    assert "--dtype bfloat16 --backends reference compiled triton" in commands[5]
    text = notes.read_text()
    assert "## GPU check, " in text and ": Fake GPU" in text
    assert "| build | passed |" in text and "| tests | failed (exit 1) |" in text
    assert "| bench_float16 | passed |" in text
    assert not [name for name in os.listdir(tmp) if name.startswith("gpu_check.")]  # results removed


def test_script_names_files_that_exist():
    with open(SCRIPT) as f:
        script = f.read()
    paths = set(re.findall(r"(?:tests|tools|benchmarks|configs)/[\w/]+\.(?:py|yaml|md)", script))
    assert {"tools/check_msda_cuda.py", "configs/depotr_hm_r50.yaml", "benchmarks/bench_msda.py"} <= paths
    missing = [p for p in paths if not os.path.exists(os.path.join(REPO, p))]
    assert not missing


def bench_section(bench, dtype: str, rows: list[tuple]) -> str:
    """A bench_msda.py --write-readme section with rows (N, queries, backend, fwd+bwd ms,
    vs reference fwd+bwd, vs original fwd+bwd) on cuda, in bench_msda's own table format."""
    lines = [bench.TABLE_HEADER]
    for N, queries, backend, ms, vs_reference, vs_original in rows:
        lines.append(
            f"| cuda | 256x192 | {N} | {queries} | {backend} | 1.0 | 2.0 | {ms} | 100.00 | 10.0 "
            f"| | | {vs_reference} | {vs_original} |"
        )
    return (
        f"\n## ms_deform_attn, 2026-01-01\n\n`python benchmarks/bench_msda.py --dtype {dtype}`\n\n"
        + "\n".join(lines)
        + "\n"
    )


@pytest.fixture
def results(tmp_path):
    """A results folder as tools/gpu_check.sh leaves it."""
    folder = tmp_path / "results"
    (folder / "train").mkdir(parents=True)
    (folder / "steps.tsv").write_text("build\tpassed\t61\ntests\tfailed (exit 1)\t88\ntrain\tpassed\t70\n")
    (folder / "check_msda_cuda.log").write_text(
        "torch 2.14.1\nJIT-building\n\n| backend | dtype | ok |\n|---|---|---|\n"
        "| compiled | float32 | yes |\n\nall checks passed\n"
    )
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        bench = load_script("benchmarks/bench_msda.py")
    finally:
        sys.path.remove(os.path.join(REPO, "benchmarks"))
    (folder / "bench_float32.md").write_text(
        bench_section(
            bench,
            "float32",
            [
                (32, "encoder (1020)", "reference", "40.0", "", ""),
                (32, "encoder (1020)", "compiled", "5.0", "8.00x", "1.80x"),
                (32, "encoder (1020)", "triton", "8.0", "5.00x", "1.12x"),
                (32, "encoder (1020)", "deformable_detr", "9.0", "4.44x", ""),
            ],
        )
    )
    (folder / "bench_bfloat16.md").write_text(
        bench_section(
            bench,
            "bfloat16",
            [
                (32, "encoder (1020)", "reference", "30.0", "", ""),
                (32, "encoder (1020)", "compiled", "4.0", "7.50x", ""),
                (32, "encoder (1020)", "triton", "10.0", "3.00x", ""),
            ],
        )
    )
    metrics = [
        {"iteration": 19, "total_loss": 0.25, "time": 0.31, "data_time": 0.01},
        {"iteration": 19, "keypoints/AP": 0.0},
    ]
    (folder / "train" / "metrics.json").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (folder / "train" / "log.txt").write_text(
        "iter: 19  total_loss: 0.25  time: 0.31  max_mem: 2345M\n"
        "WARNING ms_deform_attn on cuda:0 (GPU), torch.float16: backend 'compiled' failed its self-check: X; "
        "using the 'triton' backend\n"
    )
    return folder


def test_notes_section_from_results(results, tmp_path):
    notes_tool = load_script("tools/gpu_check_notes.py")
    notes = tmp_path / "notes.md"
    notes.write_text(f"# Notes\n\nbefore\n\n{notes_tool.START}\nold section\n{notes_tool.END}\n\nafter\n")
    command = [
        sys.executable,
        os.path.join(REPO, "tools", "gpu_check_notes.py"),
        "--results",
        str(results),
        "--device",
        "NVIDIA Test GPU",
        "--notes",
        str(notes),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    notes_tool.update_notes(str(notes), notes_tool.render(str(results), "NVIDIA Test GPU"))  # replaces it
    text = notes.read_text()
    assert text.startswith("# Notes\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert text.count(notes_tool.START) == 1 and "old section" not in text
    assert re.search(r"## GPU check, \d{4}-\d\d-\d\d: NVIDIA Test GPU", text)
    assert "| tests | failed (exit 1) | 88 |" in text
    assert "| compiled | float32 | yes |\n\nall checks passed" in text and "JIT-building" not in text
    # the targets, on the benchmark rows
    assert "| >= 1.5x original (fp32) | compiled | 32 | encoder (1020) | 1.80x | yes |" in text
    assert "| >= 1.5x original (fp32) | triton | 32 | encoder (1020) | 1.12x | **no** |" in text
    assert "| >= 5x reference (float32) | triton | 32 | encoder (1020) | 5.00x | yes |" in text
    assert "| bfloat16 faster than fp32 | compiled | 32 | encoder (1020) | 1.25x | yes |" in text
    assert "| bfloat16 faster than fp32 | triton | 32 | encoder (1020) | 0.80x | **no** |" in text
    assert "| deformable_detr | 1.0 | 2.0 | 9.0 |" in text  # the benchmark table itself
    # the training run
    assert "total_loss 0.25 (iteration 19) -> 0.25 (iteration 19)" in text
    assert "0.310 s" in text and "Peak CUDA memory: 2345 MiB" in text
    assert "backend 'compiled' failed its self-check: X; using the 'triton' backend" in text
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]


def test_notes_section_is_appended_when_absent(results, tmp_path):
    notes_tool = load_script("tools/gpu_check_notes.py")
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n")
    notes_tool.update_notes(str(notes), notes_tool.render(str(results), "GPU"))
    text = notes.read_text()
    assert text.startswith("# Notes\n\n" + notes_tool.START) and text.endswith(notes_tool.END + "\n")
