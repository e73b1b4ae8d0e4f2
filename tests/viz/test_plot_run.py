"""``unimix plot RUN``: a tiny real run's curves as a PNG (opened with PIL: its size, and pixels
that are not all one colour), each panel's line equal to the values in ``metrics.jsonl`` as
written, "not logged" where a series is missing, one-line errors; the race plot of the benchmark
uses the same panels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_dino_train import _write_config

from unimix.cli import main as unimix_main
from unimix.ssl.pretrain_cli import main as pretrain_main
from unimix.viz.curves import NOT_LOGGED
from unimix.viz.race_plot import plot_race
from unimix.viz.run_plot import run_figure

# 12 × 6.5 inches at 100 dpi
PNG_SIZE = (1200, 650)


def _assert_non_blank_png(path: Path, size: tuple[int, int]) -> None:
    image = Image.open(path)
    assert image.format == "PNG" and image.size == size
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 0
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # lines, text, not a flat fill


def _panels(fig) -> dict[str, object]:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}


def _said(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


@pytest.mark.slow
def test_plot_of_a_tiny_real_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    config = _write_config(tmp_path, logging={"every_steps": 1, "progress_bar": False})
    knn = ["eval.knn_every_epochs=0.5", "eval.num_train=32", "eval.num_test=16", "eval.k=5"]
    args = ["-c", str(config), "-o", str(out), "max_steps=6", "checkpoint.every_steps=0", *knn]
    assert pretrain_main([*args, "eval.knn_at_end=true"]) == 0
    capsys.readouterr()

    assert unimix_main(["plot", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out / 'curves.png'}"
    _assert_non_blank_png(out / "curves.png", PNG_SIZE)
    assert unimix_main(["plot", str(out), "--output", str(tmp_path / "a" / "b.png")]) == 0
    _assert_non_blank_png(tmp_path / "a" / "b.png", PNG_SIZE)

    # what each panel draws is what the run wrote
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss" in r]
    final = json.loads((out / "knn.json").read_text())
    panels = _panels(run_figure(records, final, "tiny"))
    assert len(panels) == 6
    for title, key in [
        ("DINO loss", "loss"),
        ("learning rate", "lr"),
        ("teacher momentum", "momentum"),
    ]:
        (line,) = panels[title].get_lines()
        assert list(line.get_xdata()) == [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]
        assert list(line.get_ydata()) == [r[key] for r in logged]
    entropy = next(ax for t, ax in panels.items() if t.startswith("teacher entropy"))
    sample, mean = entropy.get_lines()
    assert list(sample.get_ydata()) == [r["teacher_entropy"] for r in logged]
    assert list(mean.get_ydata()) == [r["teacher_mean_entropy"] for r in logged]
    knn_lines = panels["teacher k-NN top-1"].get_lines()
    online = [(r["step"], r["knn_top1"]) for r in records if "knn_top1" in r]
    assert (
        [(x, y) for x, y in zip(*knn_lines[0].get_data(), strict=True)]
        == online
        == [(3, pytest.approx(online[0][1]))]
    )
    # the final numbers as horizontal lines
    assert [line.get_ydata()[0] for line in knn_lines[1:]] == [final["trained"], final["untrained"]]
    assert not any(NOT_LOGGED in _said(ax) for ax in panels.values())


def test_missing_series_say_not_logged(tmp_path: Path) -> None:
    # a loop that logs loss and lr only (like the lightly peer), a record without a step and a
    # line cut by a kill
    lines = [json.dumps({"event": "start", "args": {}})]
    lines += [json.dumps({"step": s, "loss": 5.0 - s, "lr": 0.1 * s}) for s in (1, 2, 3)]
    lines.append('{"step": 4, "lo')
    run = tmp_path / "peer"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(lines))
    assert unimix_main(["plot", str(run)]) == 0
    _assert_non_blank_png(run / "curves.png", PNG_SIZE)

    records = [json.loads(line) for line in lines[:-1]]
    panels = _panels(run_figure(records, None, "peer"))
    assert list(panels["DINO loss"].get_lines()[0].get_ydata()) == [4.0, 3.0, 2.0]
    missing = [title for title, ax in panels.items() if _said(ax) == [NOT_LOGGED]]
    assert len(missing) == 4 and "teacher momentum" in missing and "teacher k-NN top-1" in missing
    assert not panels["teacher momentum"].get_lines()


def test_every_panel_spans_the_runs_steps_even_with_only_the_final_knn() -> None:
    # no online k-NN, only knn.json's final numbers: the k-NN panel has no x data of its own
    records = [
        {"step": s, "loss": 1.0 / s, "lr": 0.01, "img_per_s": 100.0} for s in range(10, 101, 10)
    ]
    final = {"trained": 38.7, "untrained": 21.0}
    panels = _panels(run_figure(records, final, "no online k-NN"))
    knn = panels["teacher k-NN top-1"]
    assert [line.get_ydata()[0] for line in knn.get_lines()] == [38.7, 21.0]
    low, high = knn.get_xlim()
    assert low < 10 < 100 < high and high - low < 1.1 * 90  # the run's steps, not matplotlib's 0-1
    for ax in panels.values():  # one x range for every panel that draws
        if NOT_LOGGED not in _said(ax):
            assert ax.get_xlim() == (low, high)


def test_no_run_or_no_metrics_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert unimix_main(["plot", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'nope'}: no such run folder\n"
    assert unimix_main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "metrics.jsonl" in err
    assert not (tmp_path / "curves.png").exists()


def test_help_describes_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        unimix_main(["plot", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: unimix plot" in text
    assert "RUN" in text and "metrics.jsonl" in text
    assert "--output FILE.png" in text and "default: RUN/curves.png" in text
    assert unimix_main(["--help"]) == 0
    assert "plot" in capsys.readouterr().out


def test_race_plot_draws_every_run_and_the_floors(tmp_path: Path) -> None:
    def run(seed: int, top1: list[float]) -> dict:
        return {
            "seed": seed,
            "curve": [{"images_seen": 1000 * (i + 1), "teacher@20": v} for i, v in enumerate(top1)],
        }

    report = {
        "methods": {
            "ours": {"runs": [run(0, [20, 30]), run(1, [22, 31])]},
            "lightly": {"runs": [run(0, [18, 25])]},
        },
        "floors": {
            "ours": [
                {"network": "untrained", "bn": "none", "top1@20": 15.0},
                {"network": "untrained", "bn": "kept", "top1@20": 11.0},
            ]
        },
    }
    path = plot_race(report, tmp_path / "race.png")
    _assert_non_blank_png(path, (720, 480))  # 6 × 4 inches at 120 dpi
