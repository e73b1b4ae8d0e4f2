"""The launcher is honoured: precision and compilation come from ``accelerate launch`` unless the
recipe says otherwise, the start-up line says where each came from, and a compiled student
(keys under ``_orig_mod.``) trains with its EMA teacher and writes checkpoints with clean keys."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_dino_train import PRETRAIN, _metrics, _run, _write_config
from torch import nn

from unimix.checkpoint import clean_state_dict, list_checkpoints, load_backbone, unwrapped_key
from unimix.ssl.config import load_pretrain_config
from unimix.ssl.engine.launch import resolve_launch, world_origin
from unimix.ssl.teacher import TeacherEMA, make_teacher

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1"]
LAUNCH += ["--num_machines", "1", "--dynamo_backend", "no"]


@pytest.mark.parametrize(
    ("precision", "env", "expected"),
    [
        ("auto", {}, ("no", "default: no launcher setting")),
        ("auto", {"ACCELERATE_MIXED_PRECISION": "bf16"}, ("bf16", "from accelerate launch")),
        ("auto", {"ACCELERATE_MIXED_PRECISION": "no"}, ("no", "from accelerate launch")),
        ("fp32", {"ACCELERATE_MIXED_PRECISION": "bf16"}, ("no", "from the config")),
        ("bf16", {"ACCELERATE_MIXED_PRECISION": "no"}, ("bf16", "from the config")),
    ],
)
def test_precision_source(precision: str, env: dict[str, str], expected: tuple[str, str]) -> None:
    s = resolve_launch(precision, None, "inductor", env)
    assert (s.precision, s.precision_from) == expected
    assert f"precision {s.precision_name} ({expected[1]})" in s.describe()


@pytest.mark.parametrize(
    ("compile_model", "env", "expected"),
    [
        (None, {}, (None, "default")),
        (None, {"ACCELERATE_DYNAMO_BACKEND": "INDUCTOR"}, ("inductor", "from accelerate launch")),
        (None, {"ACCELERATE_DYNAMO_BACKEND": "NO"}, (None, "default")),
        (False, {"ACCELERATE_DYNAMO_BACKEND": "INDUCTOR"}, (None, "model.compile=false")),
        (True, {}, ("aot_eager", "from model.compile")),
    ],
)
def test_compile_source(compile_model: bool | None, env: dict, expected: tuple) -> None:
    s = resolve_launch("auto", compile_model, "aot_eager", env)
    assert (s.compile_backend, s.compile_from) == expected


def test_compile_mode_from_the_config_else_the_launcher() -> None:
    env = {"ACCELERATE_DYNAMO_BACKEND": "INDUCTOR", "ACCELERATE_DYNAMO_MODE": "max-autotune"}
    assert resolve_launch("auto", None, "inductor", env).compile_mode == "max-autotune"
    s = resolve_launch("auto", None, "inductor", env, compile_mode="reduce-overhead")
    assert s.compile_mode == "reduce-overhead"
    assert "compile inductor mode reduce-overhead (from accelerate launch)" in s.describe()
    assert resolve_launch("auto", True, "inductor", {}).compile_mode == "default"


def test_a_compiled_run_compiles_the_teacher_too_and_computes_the_same_step() -> None:
    from unimix.ssl.engine.runtime import make_accelerator
    from unimix.ssl.schedules import Schedules
    from unimix.ssl.step import DINOStep

    cfg = load_pretrain_config(None, _TINY_STEP)
    torch.manual_seed(0)
    crops = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 8, 8)]  # 2 globals, 2 locals of 4
    values = Schedules(cfg, steps_per_epoch=4).at(0)
    losses = {}
    for backend in ("no", "eager"):  # two runs in one process, each with its own setting
        compile_model = backend != "no"
        acc = make_accelerator(resolve_launch("fp32", compile_model, "eager", {}), threads=1)
        step = DINOStep(cfg, acc)
        compiled = isinstance(step.teacher_forward, torch._dynamo.eval_frame.OptimizedModule)
        assert compiled == compile_model
        assert not compiled or step.teacher_forward._orig_mod is step.teacher
        losses[backend] = [step([crops], values, batch=4)[0] for _ in range(2)]
    assert losses["eager"] == pytest.approx(losses["no"], abs=1e-6)


def test_a_second_run_in_one_process_gets_its_own_precision() -> None:
    from unimix.ssl.engine.runtime import make_accelerator

    first = make_accelerator(resolve_launch("fp32", None, "inductor", {}), threads=1)
    assert first.mixed_precision == "no"
    second = make_accelerator(resolve_launch("bf16", None, "inductor", {}), threads=1)
    assert second.mixed_precision == "bf16"  # Accelerate alone refuses to change it


_FAULTS = """
import resource, sys, torch
from unimix.ssl.engine.runtime import reuse_freed_memory
print(reuse_freed_memory() if sys.argv[1] == "reuse" else "system", file=sys.stderr)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    x = torch.ones(16 * 2**20); del x  # a 64 MB activation, made and freed
for _ in range(10):
    before = faults()
    x = torch.ones(16 * 2**20); del x
    print(faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_runs_reuse_freed_memory_instead_of_faulting_it_in_every_step() -> None:
    # Page faults counted by the kernel, per allocation: glibc alone maps and unmaps a 64 MB
    # tensor on every allocation (16,384 faults of 4 kB each time); kept, the pages are faulted
    # in once. One more fresh allocation early on is allowed: the heap is still settling while
    # torch starts its thread pool (seen in 12 of 30 runs as the third allocation, never later).
    pages = 16 * 2**20 * 4 // 4096
    counts = {}
    for mode in ("system", "reuse"):
        cmd = [sys.executable, "-c", _FAULTS, mode]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
        counts[mode] = [int(n) for n in proc.stdout.split()]
        assert proc.stderr.strip().endswith("True" if mode == "reuse" else "system")
    assert len(counts["system"]) == len(counts["reuse"]) == 10
    assert all(n >= 0.9 * pages for n in counts["system"]), counts
    assert sum(n > pages // 10 for n in counts["reuse"]) <= 1, counts
    assert sum(counts["reuse"]) < 1.2 * pages, counts


_TINY_STEP = [
    "data.batch_size=4",
    "augment.num_local=2",
    "model.backbone=vit_tiny_patch16_224",
    "model.backbone_kwargs={img_size: 16, patch_size: 4, embed_dim: 16, depth: 1, num_heads: 2,"
    " mlp_ratio: 2, dynamic_img_size: true}",
    "model.head={out_dim: 32, hidden_dim: 16, bottleneck_dim: 8}",
    "threads=1",
]


def test_world_origin_names_machines_and_launcher() -> None:
    env = {"ACCELERATE_MIXED_PRECISION": "no", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"}
    assert world_origin(2, env) == "2 machine(s) × 1 process(es), from accelerate launch"
    assert world_origin(1, {}) == "one process, no launcher"


def test_recipes_leave_precision_to_the_launcher_except_imagenet() -> None:
    assert load_pretrain_config("quickstart").precision == "auto"
    assert load_pretrain_config("imagenet").precision == "bf16"  # the reference's GPU recipe
    assert load_pretrain_config("quickstart", ["precision=fp32"]).precision == "fp32"


def test_wrapper_names_are_ignored_in_keys() -> None:
    assert unwrapped_key("_orig_mod.backbone.w") == "backbone.w"
    assert unwrapped_key("module._orig_mod.head.b") == "head.b"
    assert unwrapped_key("_orig_mod.module.head.b") == "head.b"
    assert unwrapped_key("backbone._orig_mod.stem.w") == "backbone.stem.w"
    assert unwrapped_key("head.module_list.0") == "head.module_list.0"
    assert list(clean_state_dict({"_orig_mod.backbone.x._orig_mod.w": 1})) == ["x.w"]


def test_ema_pairs_a_compiled_student_with_a_plain_teacher() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 2)))
    teacher = make_teacher(student)
    compiled = torch.compile(student, backend="eager")  # keys: _orig_mod.0.weight, ...
    ema = TeacherEMA(teacher, compiled)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    ema.update(0.5)
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        assert torch.allclose(t, s - 0.5)


@pytest.mark.slow
def test_accelerate_launch_precision_is_honoured_and_the_recipe_wins(tmp_path: Path) -> None:
    # The case: accelerate launch --mixed_precision bf16 runs in bf16 and says so; an
    # explicit precision=fp32 override runs in fp32 and says it came from the config.
    config = _write_config(tmp_path, max_steps=2)
    bf16 = [*LAUNCH, "--mixed_precision", "bf16", *PRETRAIN, "-c", str(config)]
    proc = _run([*bf16, "-o", str(tmp_path / "bf16")], timeout=180)
    output = proc.stdout + proc.stderr
    line = next(x for x in output.splitlines() if "unimix pretrain:" in x)
    assert "precision bf16 (from accelerate launch)" in line, line
    assert "from accelerate launch), device cpu" in line, line  # where the world came from
    proc = _run([*bf16, "-o", str(tmp_path / "fp32"), "precision=fp32"], timeout=180)
    assert "precision fp32 (from the config)" in proc.stdout + proc.stderr
    assert _metrics(tmp_path / "bf16")[0]["precision"] == "bf16"
    assert _metrics(tmp_path / "fp32")[0]["precision"] == "fp32"
    l16 = [r["loss"] for r in _metrics(tmp_path / "bf16") if "loss" in r]
    l32 = [r["loss"] for r in _metrics(tmp_path / "fp32") if "loss" in r]
    assert l16 != l32 and l16 == pytest.approx(l32, abs=0.05)  # bf16 really ran, close to fp32


@pytest.mark.slow
def test_accelerate_config_file_precision_is_honoured(tmp_path: Path) -> None:
    # What `accelerate config` writes: mixed_precision there reaches the run through the launcher.
    acc_config = tmp_path / "accelerate.yaml"
    acc_config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: bf16\n"
        "num_machines: 1\nnum_processes: 1\nuse_cpu: true\n"
    )
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(acc_config)]
    config = _write_config(tmp_path, max_steps=1)
    proc = _run([*launch, *PRETRAIN, "-c", str(config), "-o", str(tmp_path / "run")], timeout=180)
    assert "precision bf16 (from accelerate launch)" in proc.stdout + proc.stderr
    assert _metrics(tmp_path / "run")[0]["precision"] == "bf16"


def _final_state(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    last = list_checkpoints(out / "checkpoints")[-1]
    return {f: load_file(str(last / f)) for f in ("student.safetensors", "teacher.safetensors")}


@pytest.mark.slow
def test_compiled_run_trains_checkpoints_resumes_and_exports(tmp_path: Path) -> None:
    # accelerate launch --dynamo_backend inductor compiles the student of a nano preset (the
    # first run on a machine compiles C++ kernels for minutes; torch's cache makes reruns fast).
    nano = ["model.backbone=poolformer_nano", "model.backbone_kwargs={}", "augment.num_local=0"]
    config = _write_config(tmp_path, max_steps=4)
    inductor = [*LAUNCH[:-1], "inductor", "--mixed_precision", "no", *PRETRAIN, "-c", str(config)]
    full, cut = tmp_path / "full", tmp_path / "cut"
    proc = _run([*inductor, "-o", str(full), *nano], timeout=900)
    assert "compile inductor (from accelerate launch)" in proc.stdout + proc.stderr
    _run([*inductor, "-o", str(cut), *nano, "max_steps=2"], timeout=900)
    _run([*inductor, "-o", str(cut), *nano, "--resume", "auto"], timeout=900)
    a, b = _final_state(full), _final_state(cut)
    for file in a:
        assert not any("_orig_mod" in k or k.startswith("module.") for k in a[file])
        assert a[file].keys() == b[file].keys()
        assert all(torch.equal(a[file][k], b[file][k]) for k in a[file]), f"{file} after resume"
    losses_full = [r["loss"] for r in _metrics(full) if "loss" in r]
    assert losses_full == [r["loss"] for r in _metrics(cut) if "loss" in r]

    # The compiled run's checkpoint resumes uncompiled (model.compile=false beats the launcher),
    # loads into a plain backbone and exports.
    plain = tmp_path / "plain"
    shutil.copytree(cut, plain)
    resume = ["model.compile=false", "max_steps=5", "--resume", "auto"]
    proc = _run([*inductor, "-o", str(plain), *nano, *resume])
    assert "compile off (model.compile=false)" in proc.stdout + proc.stderr
    assert len([r for r in _metrics(plain) if "loss" in r]) == 5
    model, meta = load_backbone(full)
    assert meta["step"] == 4 and not hasattr(model, "_orig_mod")
    exported = tmp_path / "teacher.safetensors"
    _run([sys.executable, "-m", "unimix.cli", "export", str(full), "-o", str(exported)])
    assert load_file(str(exported)).keys() == model.state_dict().keys()
