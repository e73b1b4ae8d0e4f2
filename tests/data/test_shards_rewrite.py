"""``unimix shards`` run again into the same output folder (issue 25 follow-up): it used to keep
the earlier run's higher-numbered shards, listed and on disk, so a folder read later mixed old
images into the new set. Now a re-run leaves exactly its own ``PREFIX-NNNNNN.tar`` shards (the
earlier ones it did not rewrite are removed, with one line), keeps other prefixes' shards, and
refuses before writing anything when ``PREFIX-NNNNNN.tar`` files its index does not list are
there (not ours: never overwritten or deleted). Real folders, the real converter, tars read back
with ``tarfile``."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from unimix.data import list_image_files
from unimix.data.shards import ShardSet, iter_shard_samples
from unimix.data.shards_cli import main as shards_main

CLASSES = ("a", "b")


def _tars(out: Path) -> dict[str, int]:
    """``{name: samples}`` of every ``.tar`` in ``out``, counted by ``tarfile``; they are exactly
    those ``shards.json`` lists, with those counts."""
    on_disk = {}
    for path in sorted(out.glob("*.tar")):
        with tarfile.open(path) as tar:
            on_disk[path.name] = len({m.name.split(".")[0] for m in tar.getmembers()})
    index = json.loads((out / "shards.json").read_text())
    assert index["shards"] == on_disk and index["num_samples"] == sum(on_disk.values())
    return on_disk


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def big_and_small(tiny_image_folder) -> tuple[Path, Path]:
    """Two folders of the same classes, other pixels: 12 images (6 a class), 6 (3 a class)."""
    big = tiny_image_folder(CLASSES, per_class=6, size=8, name="big")
    small = tiny_image_folder(CLASSES, per_class=3, size=12, name="small")  # size: other bytes
    return big, small


def test_a_rerun_with_fewer_shards_leaves_only_its_own(big_and_small, tmp_path, capsys) -> None:
    big, small = big_and_small
    out = tmp_path / "shards"
    assert shards_main([str(big), str(out), "--shard-size", "3"]) == 0  # 4 shards of 3
    capsys.readouterr()
    assert shards_main([str(small), str(out), "--shard-size", "3"]) == 0  # 2 shards of 3
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == (
        f"removed 2 stale shards from {out} (shard-000002.tar … shard-000003.tar): written by an "
        "earlier run, beyond the 2 this run wrote"
    )
    assert printed[1].startswith("6 images in 2 shards (shard-000000.tar … shard-000001.tar) in ")
    assert _tars(out) == {"shard-000000.tar": 3, "shard-000001.tar": 3}
    # the folder read later holds the new images, each once, and nothing of the earlier run
    shards = ShardSet.open(out)
    read = Counter(s.data for s in iter_shard_samples(shards, range(len(shards.paths))))
    assert read == Counter(Path(f).read_bytes() for f in list_image_files(small))
    assert shards_main([str(small), str(out), "--shard-size", "3"]) == 0  # the same again
    assert "removed" not in capsys.readouterr().out and len(_tars(out)) == 2


def test_a_rerun_keeps_the_shards_of_other_prefixes(big_and_small, tmp_path, capsys) -> None:
    big, small = big_and_small
    out = tmp_path / "shards"
    assert shards_main([str(big), str(out), "--shard-size", "3", "--prefix", "train"]) == 0
    assert shards_main([str(small), str(out), "--shard-size", "3", "--prefix", "val"]) == 0
    (out / "x-000000.tar").write_bytes((out / "val-000000.tar").read_bytes())  # not ours
    val = {n: h for n, h in _files(out).items() if n.startswith(("val-", "x-"))}
    capsys.readouterr()
    assert shards_main([str(small), str(out), "--shard-size", "3", "--prefix", "train"]) == 0
    assert capsys.readouterr().out.startswith(
        f"removed 2 stale shards from {out} (train-000002.tar … train-000003.tar)"
    )
    assert {n: h for n, h in _files(out).items() if n.startswith(("val-", "x-"))} == val
    index = json.loads((out / "shards.json").read_text())
    assert index["shards"] == {
        "train-000000.tar": 3,
        "train-000001.tar": 3,
        "val-000000.tar": 3,
        "val-000001.tar": 3,
    }
    assert index["num_samples"] == 12
    assert ShardSet.open(out / "val-{000000..000001}.tar").counts == (3, 3)


def test_unlisted_shard_files_are_refused_before_writing(big_and_small, tmp_path, capsys) -> None:
    big, small = big_and_small
    out = tmp_path / "shards"
    assert shards_main([str(small), str(out), "--shard-size", "3"]) == 0
    foreign = out / "shard-000005.tar"  # beyond what a run of 4 shards writes, not listed
    foreign.write_bytes((out / "shard-000000.tar").read_bytes())
    before = _files(out)
    capsys.readouterr()
    assert shards_main([str(big), str(out), "--shard-size", "3"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: {foreign} is not listed in {out / 'shards.json'}: not a shard written here by "
        "unimix shards, this run would overwrite it or leave it beside its own shards; remove it "
        "or choose another output folder"
    ]
    assert _files(out) == before  # nothing written, nothing deleted
    foreign.unlink()
    (out / "shards.json").unlink()  # an index deleted: none of the shards is known to be ours
    before = _files(out)
    assert shards_main([str(big), str(out), "--shard-size", "3"]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {out / 'shard-000000.tar'} is not listed in {out / 'shards.json'} (nor is 1 "
        "other shard-NNNNNN.tar file): "
    )
    assert _files(out) == before
