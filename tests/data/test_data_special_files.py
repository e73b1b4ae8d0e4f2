"""FIFOs, sockets and symlink loops inside a data folder (issue 25, items 2 and 7).

A FIFO named ``x.png`` used to block pretraining (cached or not), ``unimix knn`` and ``unimix
shards`` forever; a link back to an ancestor (``cat/up -> ..``) multiplied 20 images into
thousands. Now: regular files only, folders tracked by (device, inode); each skipped entry is
one ``warning:`` line, and the counts are those of the images written here. Every command runs
in its own process under a timeout, so a hang is a failure, not a stuck suite.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tarfile
from pathlib import Path

import pytest
import torch
from run_snapshot import PRETRAIN, run_cli, write_tiny_config

from unimix.backbones import create_dino_backbone
from unimix.checkpoint import list_checkpoints, load_backbone
from unimix.eval import export_extractor

CLASSES = ("cat", "dog")
#: Address space for each command (a tiny run peaks near 3.5 GB): a runaway walk fails alone.
MEMORY = 8 * 2**30
PER_CLASS = 5  # images written per class folder: the reference counts below


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: skipping ")]


def _no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and "warnings.warn" not in stderr, stderr[-3000:]


@pytest.fixture
def fifo_tree(tiny_image_folder) -> tuple[Path, list[Path]]:
    """``data/{train,test}/{cat,dog}/`` of 5 PNGs each, plus a FIFO ``x.png`` in every class
    folder of both splits and a socket ``y.jpg`` in train/cat; returns (root, special files)."""
    tiny_image_folder(CLASSES, PER_CLASS, size=16, name="data/train")
    root = tiny_image_folder(CLASSES, PER_CLASS, size=16, name="data/test").parent
    special = []
    for split in ("train", "test"):
        for c in CLASSES:
            fifo = root / split / c / "x.png"
            os.mkfifo(fifo)
            special.append(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "train" / "cat" / "y.jpg"))
    sock.close()  # the socket file stays
    special.append(root / "train" / "cat" / "y.jpg")
    return root, special


@pytest.fixture
def loop_tree(tiny_image_folder) -> tuple[Path, list[Path]]:
    """``data/{train,test}/{cat,dog}/`` of 5 PNGs each, with ``cat/up -> ..`` in both splits and
    ``dog/again -> ../../train`` in test (links back to ancestors); returns (root, links)."""
    tiny_image_folder(CLASSES, PER_CLASS, size=16, name="data/train")
    root = tiny_image_folder(CLASSES, PER_CLASS, size=16, name="data/test").parent
    links = []
    for split in ("train", "test"):
        (root / split / "cat" / "up").symlink_to("..")
        links.append(root / split / "cat" / "up")
    (root / "test" / "dog" / "again").symlink_to("../../test")
    links.append(root / "test" / "dog" / "again")
    return root, links


@pytest.fixture(scope="module")
def extractor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_dino_backbone("poolformer_nano").eval()
    meta = {"backbone": "poolformer_nano", "image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}
    return export_extractor(model, meta, tmp_path_factory.mktemp("model") / "ext", "safetensors")


# ------------------------------------------------------------------------- the listing itself
#: Lists a folder in a process of its own (a loop used to walk for ever, a FIFO to block): prints
#: {"files", "classes", "targets", "warnings"} as JSON.
_LIST = """
import json, sys, warnings
from unimix.data import ImageFolderDataset, list_image_files
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if sys.argv[1] == "walk":
        files, classes, targets = list_image_files(sys.argv[2]), [], []
    else:
        d = ImageFolderDataset(sys.argv[2])
        files, classes, targets = d.files, d.classes, d.targets
print(json.dumps({"files": files, "classes": classes, "targets": targets,
                  "warnings": [str(w.message) for w in caught]}))
"""


def _listed(how: str, folder: Path) -> dict:
    done = run_cli(["-c", _LIST, how, str(folder)], timeout=60, memory=MEMORY)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_listing_keeps_regular_files_and_links_to_them(fifo_tree, tmp_path: Path) -> None:
    root, special = fifo_tree
    train = root / "train"
    (train / "dog" / "linked.png").symlink_to(train / "dog" / "dog_0.png")  # a link: kept
    (train / "dog" / "broken.png").symlink_to(tmp_path / "nowhere.png")  # dangling: skipped
    listed = _listed("dataset", train)
    # the reference: every image name whose target is a regular file (os.path.isfile follows
    # links; rglob lists each link once without walking into linked folders)
    regular = sorted(str(p) for p in train.rglob("*.*") if os.path.isfile(p))
    assert sorted(listed["files"]) == regular and len(regular) == 2 * PER_CLASS + 1
    messages = listed["warnings"]
    for path, kind in [
        (train / "cat" / "x.png", "a FIFO"),
        (train / "dog" / "x.png", "a FIFO"),
        (train / "cat" / "y.jpg", "a socket"),
        (train / "dog" / "broken.png", "a broken symbolic link"),
    ]:
        assert sum(m.startswith(f"skipping {path}: {kind}") for m in messages) == 1, messages
    assert len(messages) == 4


def test_listing_skips_link_loops_once_each(loop_tree) -> None:
    root, links = loop_tree
    listed = _listed("walk", root)
    # the reference: every PNG written, each once (os.walk without following links)
    written = sorted(
        str(Path(d) / n) for d, _, ns in os.walk(root) for n in ns if n.endswith(".png")
    )
    assert sorted(listed["files"]) == written and len(written) == 4 * PER_CLASS
    messages = listed["warnings"]
    assert len(messages) == len(links)
    for link in links:
        assert any(m.startswith(f"skipping {link}: a link to ") and "loop" in m for m in messages)
    listed = _listed("dataset", root / "train")  # a class folder's loop back to the root
    assert len(listed["files"]) == 2 * PER_CLASS and listed["classes"] == list(CLASSES)
    assert listed["targets"] == [0] * PER_CLASS + [1] * PER_CLASS
    assert len(listed["warnings"]) == 1


def test_second_link_to_a_folder_is_listed_once(tiny_image_folder) -> None:
    root = tiny_image_folder(None, PER_CLASS, name="flat")
    (root / "sub").mkdir()
    (root / "sub" / "same").symlink_to(root / "sub")  # a loop one level down
    (root / "alias").symlink_to(root)  # the root itself under another name
    listed = _listed("walk", root)
    assert len(listed["files"]) == PER_CLASS and len(listed["warnings"]) == 2


# ------------------------------------------------------------ pretraining, knn, shards: FIFOs
def _pretrain_on(tmp_path: Path, data: Path, *extra: str) -> tuple[Path, str]:
    config = write_tiny_config(
        tmp_path,
        data={"dataset": str(data), "batch_size": 8, "num_workers": 0},
        max_steps=1,
        checkpoint={"every_steps": 0, "keep_last": 1},
    )
    out = tmp_path / "run"
    args = [*PRETRAIN[1:], "-c", str(config), "-o", str(out), *extra]
    done = run_cli(args, timeout=180, memory=MEMORY)
    assert done.returncode == 0, done.stderr[-3000:]
    _no_traceback(done.stderr)
    return out, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["false", "true"])
def test_pretraining_skips_a_fifo_instead_of_hanging(fifo_tree, tmp_path: Path, cache: str) -> None:
    root, special = fifo_tree
    out, output = _pretrain_on(tmp_path, root, f"data.cache={cache}")
    assert f"{2 * PER_CLASS} images," in output  # train/: 5 + 5 PNGs, the FIFOs and socket left out
    lines = _warnings(output)
    train_special = [p for p in special if "train" in p.parts]
    assert sorted(lines) == sorted(
        f"warning: skipping {p}: a {'socket' if p.suffix == '.jpg' else 'FIFO'}, not a regular file"
        for p in train_special
    )
    (checkpoint,) = list_checkpoints(out / "checkpoints")
    load_backbone(checkpoint)
    assert all(stat.S_ISFIFO(p.stat().st_mode) for p in special if p.name == "x.png")


@pytest.mark.slow
def test_knn_skips_a_fifo_instead_of_hanging(fifo_tree, extractor: Path, tmp_path: Path) -> None:
    root, special = fifo_tree
    report = tmp_path / "knn.json"
    done = run_cli(
        [
            "-m",
            "unimix.cli",
            "knn",
            str(extractor),
            "--data",
            str(root),
            "--k",
            "3",
            "--out",
            str(report),
            "--no-progress",
            "--device",
            "cpu",
        ],
        timeout=180,
        memory=MEMORY,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _no_traceback(done.stderr)
    result = json.loads(report.read_text())
    assert result["bank"] == 2 * PER_CLASS and result["queries"] == 2 * PER_CLASS
    assert len(_warnings(done.stderr)) == len(special)


@pytest.mark.slow
def test_shards_skip_a_fifo_instead_of_hanging(fifo_tree, tmp_path: Path) -> None:
    root, special = fifo_tree
    out = tmp_path / "shards"
    done = run_cli(
        ["-m", "unimix.cli", "shards", str(root / "train"), str(out), "--shard-size", "4"],
        timeout=120,
        memory=MEMORY,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _no_traceback(done.stderr)
    index = json.loads((out / "shards.json").read_text())
    assert index["num_samples"] == 2 * PER_CLASS and index["classes"] == list(CLASSES)
    members = []
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members += [m.name for m in tar.getmembers() if m.name.endswith(".png")]
    assert len(members) == 2 * PER_CLASS
    assert len(_warnings(done.stderr)) == len([p for p in special if "train" in p.parts])


# ------------------------------------------------------ pretraining, knn, shards: link loops
@pytest.mark.slow
def test_pretraining_counts_each_image_once_despite_a_loop(loop_tree, tmp_path: Path) -> None:
    root, links = loop_tree
    _, output = _pretrain_on(tmp_path, root)
    assert f"{2 * PER_CLASS} images," in output
    assert _warnings(output) == [
        f"warning: skipping {root / 'train/cat/up'}: a link to {root.resolve() / 'train'}, "
        "a folder already listed (a symlink loop or a second link to it)"
    ]


@pytest.mark.slow
def test_knn_and_shards_count_each_image_once_despite_a_loop(
    loop_tree, extractor: Path, tmp_path: Path
) -> None:
    root, links = loop_tree
    report = tmp_path / "knn.json"
    done = run_cli(
        [
            "-m",
            "unimix.cli",
            "knn",
            str(extractor),
            "--data",
            str(root),
            "--k",
            "3",
            "--out",
            str(report),
            "--no-progress",
            "--device",
            "cpu",
        ],
        timeout=180,
        memory=MEMORY,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _no_traceback(done.stderr)
    result = json.loads(report.read_text())
    assert result["bank"] == 2 * PER_CLASS and result["queries"] == 2 * PER_CLASS
    assert len(_warnings(done.stderr)) == len(links)

    out = tmp_path / "shards"
    done = run_cli(
        ["-m", "unimix.cli", "shards", str(root / "test"), str(out), "--unlabeled"],
        timeout=120,
        memory=MEMORY,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "shards.json").read_text())["num_samples"] == 2 * PER_CLASS
    assert len(_warnings(done.stderr)) == 2  # test/cat/up and test/dog/again
