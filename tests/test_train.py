"""The training loop on configs/tiny.toml (a few seconds per run, one thread per process)."""

import copy
import csv
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from ivfuse import train as training
from ivfuse.serialization import load_network

from .conftest import REPO

TINY_CONFIG = REPO / "configs" / "tiny.toml"
TINY_DATA = REPO / "tests" / "data" / "tiny"


def _command(*arguments: str) -> list[str]:
    return [sys.executable, *arguments]


def _environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def _train_arguments(out) -> list[str]:
    return ["-m", "ivfuse", "train", "--config", str(TINY_CONFIG), "--data-root", str(TINY_DATA), "--out", str(out)]


def _rows(path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def _assert_same_weights(first, second):
    for name in ("fusion.safetensors", "segmentation.safetensors"):
        a, b = load_network(first / name).state_dict(), load_network(second / name).state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The tiny schedule run start to end in a subprocess, as a user would run it."""
    out = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(_command(*_train_arguments(out)), env=_environment(), check=True, capture_output=True, cwd=REPO)
    return out


def test_tiny_schedule_trains_both_networks_and_logs_every_step_and_round(uninterrupted):
    config = training.load_config(TINY_CONFIG)
    phases = training.plan_phases(config.schedule)
    steps = sum(p.steps for p in phases)
    rows = _rows(uninterrupted / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(steps))
    assert {r["network"] for r in rows} == {"fusion", "segmentation"}
    # Round 0 fusion is content-only; later fusion phases add the semantic loss.
    assert all(r["semantic"] == "" for r in rows if r["round"] == "0" and r["network"] == "fusion")
    assert any(r["semantic"] != "" for r in rows if r["round"] == "2" and r["network"] == "fusion")
    assert all(r["salient"] == "" for r in rows)  # off in the tiny config
    validation = _rows(uninterrupted / "validation.csv")
    assert [r["round"] for r in validation] == ["0", "1", "2"]
    assert all(0.0 <= float(r["miou"]) <= 1.0 for r in validation)
    assert load_network(uninterrupted / "fusion.safetensors", expected="FusionNet").config == config.model
    assert load_network(uninterrupted / "segmentation.safetensors", expected="SegmentationNet").config == config.segmentation


def test_sigkill_at_a_random_moment_then_resume_ends_with_the_same_weights(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    process = subprocess.Popen(_command(*_train_arguments(out)), env=_environment(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (out / "checkpoint.pt").exists():
            assert process.poll() is None, "the run ended before writing a checkpoint"
            time.sleep(0.02)
        time.sleep(random.uniform(0.0, 1.0))
        assert process.poll() is None, "the run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert not (out / "segmentation.safetensors").exists()
    subprocess.run(_command(*_train_arguments(out), "--resume"), env=_environment(), check=True, capture_output=True, cwd=REPO)
    _assert_same_weights(uninterrupted, out)
    columns = ("step", "network", "lr", "loss", "semantic")
    assert [[r[c] for c in columns] for r in _rows(out / "log.csv")] == [[r[c] for c in columns] for r in _rows(uninterrupted / "log.csv")]
    assert _rows(out / "validation.csv") == _rows(uninterrupted / "validation.csv")


def test_two_processes_under_torchrun_end_with_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(_command(*launcher, *_train_arguments(out)), env=_environment(), capture_output=True, text=True, cwd=REPO, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    digests = (out / "rank_digests.txt").read_text().split()
    assert len(digests) == 2 and digests[0] == digests[1]
    saved = training.weights_digest(load_network(out / "fusion.safetensors"), load_network(out / "segmentation.safetensors"))
    assert digests[0] == saved


def test_content_only_config_trains_the_fusion_network_alone(tmp_path):
    config = training.load_config(REPO / "configs" / "content.toml")
    assert config.schedule.segmentation_steps == (0,) and config.schedule.semantic_weight == 0
    # The shipped content-only schedule, shortened and on the tiny data.
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, train=("MSRS", "RoadScene")),
        model=training.load_config(TINY_CONFIG).model,
        augment=dataclasses.replace(config.augment, crop_size=64),
        schedule=dataclasses.replace(config.schedule, fusion_steps=(3,)),
        run=dataclasses.replace(config.run, batch_size=2, threads=1),
    )
    outputs = training.train(config, tmp_path, data_root=str(TINY_DATA))
    assert [path.name for path in outputs] == ["fusion.safetensors"]
    assert [r["network"] for r in _rows(tmp_path / "log.csv")] == ["fusion"] * 3
    assert not (tmp_path / "segmentation.safetensors").exists()


def test_config_errors_name_the_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[schedule]\nrounds = 2\nfusion_step = 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) in \[schedule\]: fusion_step"):
        training.load_config(path)
    path.write_text("[schedule]\nrounds = 2\nfusion_steps = [1, 2, 3]\n")
    with pytest.raises(ValueError, match="one per round"):
        training.load_config(path)
    path.write_text("[run]\nthreads = 'two'\n")
    with pytest.raises(ValueError, match=r"\[run\] threads must be an integer, not 'two'"):
        training.load_config(path)
    path.write_text("[model]\nwidths = [8, 16, 32.5, 48]\n")
    with pytest.raises(ValueError, match=r"\[model\] widths must be an integer, not 32.5"):
        training.load_config(path)
    path.write_text("[salient_target]\nclasses = ['person', 'pedestrian']\n")
    with pytest.raises(ValueError, match=r"bad.toml: \[salient_target\] classes must name objects .*; not pedestrian"):
        training.load_config(path)
    # A section type shared by two sections: the message names the one that holds the value.
    path.write_text("[segmentation_optim]\nema_decay = 1.0\n")
    with pytest.raises(ValueError, match=r"bad.toml: \[segmentation_optim\] ema_decay must be in \[0, 1\)"):
        training.load_config(path)


def test_salient_target_trains_the_fusion_network_towards_ir_around_labelled_objects(tmp_path):
    # Only the salient-target loss is on: the fusion network, trained on the tiny data's
    # labelled persons, must come closer to IR in their surround than where it started.
    from ivfuse.color import split_luma
    from ivfuse.data import draw_batch, load_pairs
    from ivfuse.losses import object_surround, salient_target_loss
    from ivfuse.models import FusionNet
    from ivfuse.serialization import save_network

    torch.manual_seed(0)
    start = save_network(FusionNet(training.load_config(TINY_CONFIG).model), tmp_path / "start.safetensors")
    tiny = training.load_config(TINY_CONFIG, ["salient_target.weight=1.0", "loss.intensity=0.0", "loss.texture=0.0",
                                              "loss.ssim=0.0", "schedule.rounds=1", "schedule.fusion_steps=30",
                                              "schedule.segmentation_steps=0", "data.validation_pairs=0",
                                              f"schedule.init_fusion='{start}'"])
    training.train(tiny, tmp_path / "run", data_root=str(TINY_DATA))
    assert all(r["salient"] != "" for r in _rows(tmp_path / "run" / "log.csv"))
    samples = load_pairs([TINY_DATA / folder for folder in tiny.data.train])
    ir, vis, label = draw_batch([s for s in samples if s.label is not None], 8, tiny.augment, 123, 0)
    region = object_surround(label, tiny.salient_target.class_ids, tiny.salient_target.margin)
    assert region.any()
    vis_y = split_luma(vis)[0]
    distance = {name: salient_target_loss(load_network(path)(ir, vis_y), ir, region).item()
                for name, path in (("start", start), ("trained", tmp_path / "run" / "fusion.safetensors"))}
    assert distance["trained"] < 0.7 * distance["start"]


def test_config_values_take_their_field_types(tmp_path):
    path = tmp_path / "typed.toml"
    path.write_text("[data]\ntrain = 'MSRS/train'\n[loss]\ntexture = 10\n[schedule]\nfusion_steps = 7\n")
    config = training.load_config(path)
    assert config.data.train == ("MSRS/train",)  # one folder, not a string's characters
    assert config.loss.texture == 10.0 and type(config.loss.texture) is float
    assert config.schedule.fusion_steps == (7,)


def test_a_checkpoint_is_resumed_only_by_the_run_that_wrote_it(tmp_path):
    tiny = training.load_config(TINY_CONFIG)
    config = dataclasses.replace(tiny, schedule=dataclasses.replace(tiny.schedule, rounds=1, fusion_steps=(2,), segmentation_steps=(0,)),
                                 data=dataclasses.replace(tiny.data, validation_pairs=0))
    out = tmp_path / "run"
    training.train(config, out, data_root=str(TINY_DATA))
    with pytest.raises(ValueError, match="holds the checkpoint of an earlier run; pass --resume"):
        training.train(config, out, data_root=str(TINY_DATA))
    longer = dataclasses.replace(config, schedule=dataclasses.replace(config.schedule, fusion_steps=(3,)))
    with pytest.raises(ValueError, match=r"another config \(schedule.fusion_steps differ\)"):
        training.train(longer, out, resume=True, data_root=str(TINY_DATA))
    other_settings = dataclasses.replace(config, run=dataclasses.replace(config.run, threads=2, checkpoint_minutes=1.0))
    assert training.train(other_settings, out, resume=True, data_root=str(TINY_DATA))  # how it runs may change


def test_a_checkpoint_from_before_a_config_key_existed_still_resumes(tmp_path):
    # As if written by an ivfuse without [salient_target] and the log's "salient" column: the
    # missing key means its default, and the kept log rows get an empty column.
    import json

    tiny = training.load_config(TINY_CONFIG, ["schedule.rounds=1", "schedule.fusion_steps=2", "schedule.segmentation_steps=0",
                                              "data.validation_pairs=0"])
    out = tmp_path / "run"
    training.train(tiny, out, data_root=str(TINY_DATA))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    record = json.loads(state["run_config"])
    del record["salient_target"]
    state.update(run_config=json.dumps(record, sort_keys=True), step=1)
    torch.save(state, out / "checkpoint.pt")
    rows = _rows(out / "log.csv")
    with (out / "log.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, [k for k in rows[0] if k != "salient"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    training.train(tiny, out, resume=True, data_root=str(TINY_DATA))
    resumed = _rows(out / "log.csv")
    assert [r["step"] for r in resumed] == ["0", "1"] and resumed[0]["loss"] == rows[0]["loss"] and resumed[0]["salient"] == ""
    salient_on = training.load_config(TINY_CONFIG, ["schedule.rounds=1", "schedule.fusion_steps=2", "schedule.segmentation_steps=0",
                                                    "data.validation_pairs=0", "salient_target.weight=2.0"])
    with pytest.raises(ValueError, match=r"another config \(salient_target.weight differ\)"):
        training.train(salient_on, out, resume=True, data_root=str(TINY_DATA))


def test_overrides_change_one_key_each_and_name_bad_ones(tmp_path):
    base = training.load_config(REPO / "configs" / "content.toml")
    changed = training.load_config(REPO / "configs" / "content.toml",
                                   ["model.spatial=false", "schedule.fusion_steps=1000", "loss.texture = 12.5", "run.device=cuda"])
    assert changed.model == dataclasses.replace(base.model, spatial=False)
    assert changed.schedule.fusion_steps == (1000,) and changed.loss.texture == 12.5 and changed.run.device == "cuda"
    assert dataclasses.replace(changed, model=base.model, schedule=base.schedule, loss=base.loss, run=base.run) == base
    with pytest.raises(ValueError, match=r"unknown key\(s\) in \[model\]: spatail"):
        training.load_config(REPO / "configs" / "content.toml", ["model.spatail=false"])
    with pytest.raises(ValueError, match="expected section.key=value"):
        training.load_config(REPO / "configs" / "content.toml", ["spatial=false"])
    flat = tmp_path / "flat.toml"
    flat.write_text("model = 3\n")
    with pytest.raises(ValueError, match="model is not a \\[section\\]"):
        training.load_config(flat, ["model.spatial=false"])


def test_cli_set_reaches_the_run(tmp_path):
    arguments = _train_arguments(tmp_path / "run") + ["--set", "schedule.rounds=1", "--set", "schedule.fusion_steps=2",
                                                     "--set", "schedule.segmentation_steps=0", "--set", "data.validation_pairs=0"]
    subprocess.run(_command(*arguments), env=_environment(), check=True, capture_output=True, cwd=REPO)
    assert [r["network"] for r in _rows(tmp_path / "run" / "log.csv")] == ["fusion"] * 2
    bad = subprocess.run(_command(*_train_arguments(tmp_path / "bad"), "--set", "run.thread=2"), env=_environment(), capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "unknown key(s) in [run]: thread" in bad.stderr


def test_validation_pairs_are_held_out_of_training():
    from ivfuse.data import load_pairs

    samples = load_pairs([TINY_DATA / "MSRS", TINY_DATA / "RoadScene"])
    kept, held = training.hold_out(samples, 2)
    assert len(held) == 2 and all(s.label is not None for s in held)
    assert not {s.name for s in held} & {s.name for s in kept} and len(kept) + 2 == len(samples)


@pytest.mark.parametrize("name", ["content.toml", "content_v2.toml", "content_v3.toml", "semantic.toml", "semantic_v3.toml", "semantic_v4.toml", "segmentation.toml", "segmentation_fast.toml", "tiny.toml"])
def test_shipped_configs_load(name):
    config = training.load_config(REPO / "configs" / name)
    assert training.plan_phases(config.schedule)


@pytest.mark.parametrize(
    "weights, config",
    [("fusion_content.safetensors", "content_v3.toml"), ("fusion.safetensors", "semantic_v4.toml"), ("segmentation.safetensors", "semantic_v4.toml")],
)
def test_shipped_weights_were_trained_with_the_shipped_config(weights, config):
    """The run config recorded in the weights' metadata is, key for key, what the config file says
    today. A key or section added after the weights were trained must hold its default (every
    such default means "off"), the behaviour they were trained with; so a config that sets it,
    as ``head = "blend"`` once did, fails here. ``schedule.init_fusion`` and ``init_segmentation``
    are not compared: they name the previous stage's output wherever that run wrote it (the
    configs name the ``runs/`` folders of the commands in their headers, the weights the path
    they were trained from)."""
    import json

    from ivfuse.serialization import read_metadata

    as_json = lambda config: json.loads(json.dumps(dataclasses.asdict(config)))
    recorded = json.loads(read_metadata(REPO / "src" / "ivfuse" / "weights" / weights)["run_config"])
    shipped, defaults = as_json(training.load_config(REPO / "configs" / config)), as_json(training.RunConfig())
    assert recorded.keys() <= shipped.keys()
    for key in ("init_fusion", "init_segmentation"):
        recorded["schedule"][key] = shipped["schedule"][key]
    for section in shipped:
        assert {**defaults[section], **recorded.get(section, {})} == shipped[section], f"[{section}]"


def test_semantic_gradient_through_the_weight_map_leaves_the_residual_alone(tmp_path):
    from ivfuse.models import FusionConfig, FusionNet, blend_sources

    torch.manual_seed(0)
    network = FusionNet(FusionConfig(widths=(4, 8, 8, 8), kv_strides=(4, 2), head="blend"))
    ir, vis_y = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    weight, residual = network(ir, vis_y, return_blend=True)
    torch.testing.assert_close(blend_sources(weight, residual, ir, vis_y), network(ir, vis_y), rtol=0, atol=0)
    blend_sources(weight, residual.detach(), ir, vis_y).mean().backward()
    head_gradient = network.head.weight.grad  # output channel 0: weight, 1: residual
    assert head_gradient[0].abs().sum() > 0 and head_gradient[1].abs().sum() == 0

    tiny = training.load_config(TINY_CONFIG)
    schedule = dataclasses.replace(tiny.schedule, rounds=2, fusion_steps=(2,), segmentation_steps=(2,), semantic_gradient="weight")
    sigmoid = dataclasses.replace(tiny, schedule=schedule, data=dataclasses.replace(tiny.data, validation_pairs=0))
    with pytest.raises(ValueError, match="needs \\[model\\] head = 'blend'"):
        training.train(sigmoid, tmp_path / "sigmoid", data_root=str(TINY_DATA))
    # In the loop: with the content loss weighted 0, only the semantic loss trains the fusion
    # network (round 1), and it must leave the residual half of the head as it started.
    from ivfuse.serialization import save_network

    model = dataclasses.replace(tiny.model, head="blend")
    initial = save_network(FusionNet(model), tmp_path / "initial.safetensors")
    blend = dataclasses.replace(sigmoid, model=model, loss=dataclasses.replace(tiny.loss, intensity=0.0, texture=0.0, ssim=0.0),
                                schedule=dataclasses.replace(schedule, init_fusion=str(initial)))
    training.train(blend, tmp_path / "blend", data_root=str(TINY_DATA))
    assert any(r["semantic"] != "" for r in _rows(tmp_path / "blend" / "log.csv") if r["round"] == "1" and r["network"] == "fusion")
    before, after = (load_network(path).head for path in (initial, tmp_path / "blend" / "fusion.safetensors"))
    assert torch.equal(before.weight[1], after.weight[1]) and torch.equal(before.bias[1], after.bias[1])
    assert not torch.equal(before.weight[0], after.weight[0])


def test_objects_only_gradient_passes_at_objects_and_their_surround_only():
    from ivfuse.classes import IGNORE_INDEX

    fused = torch.rand(2, 1, 12, 12, requires_grad=True)
    label = torch.zeros(2, 12, 12, dtype=torch.long)
    label[0, 5:7, 5:7] = 2  # a person
    label[0, 3, 3] = IGNORE_INDEX  # inside its surround, but not labelled
    seen = training.objects_only_gradient(fused, label, 2)  # batch item 1: background only
    assert torch.equal(seen, fused)
    seen.sum().backward()
    expected = torch.zeros(2, 1, 12, 12)
    expected[0, 0, 3:9, 3:9] = 1
    expected[0, 0, 3, 3] = 0
    assert torch.equal(fused.grad, expected)


@pytest.mark.parametrize("mode, moves", [("objects", False), ("image", True)])
def test_objects_only_semantic_gradient_leaves_a_frame_without_objects_alone(tmp_path, mode, moves):
    """Labels with no object at all: in "objects" mode the semantic loss (the only loss here) must
    not move the fusion network; in "image" mode it must (or this test could not fail)."""
    import shutil

    import numpy as np
    from PIL import Image

    from ivfuse.models import FusionNet
    from ivfuse.serialization import save_network

    data = tmp_path / "data"
    shutil.copytree(TINY_DATA, data)
    for path in (data / "MSRS" / "label").iterdir():
        label = np.array(Image.open(path))
        Image.fromarray(np.where(label < 255, 0, label).astype(np.uint8)).save(path)
    tiny = training.load_config(TINY_CONFIG)
    initial = save_network(FusionNet(tiny.model), tmp_path / "initial.safetensors")
    schedule = dataclasses.replace(tiny.schedule, rounds=2, fusion_steps=(2,), segmentation_steps=(2,),
                                   init_fusion=str(initial), semantic_gradient=mode)
    config = dataclasses.replace(tiny, schedule=schedule, data=dataclasses.replace(tiny.data, validation_pairs=0),
                                 loss=dataclasses.replace(tiny.loss, intensity=0.0, texture=0.0, ssim=0.0))
    training.train(config, tmp_path / "run", data_root=str(data))
    assert any(r["semantic"] != "" for r in _rows(tmp_path / "run" / "log.csv") if r["round"] == "1" and r["network"] == "fusion")
    same = training.weights_digest(load_network(tmp_path / "run" / "fusion.safetensors")) == training.weights_digest(load_network(initial))
    assert same != moves


def test_init_fusion_is_loaded_and_the_segmentation_phase_leaves_it_untouched(tmp_path):
    from ivfuse.models import FusionConfig, FusionNet
    from ivfuse.serialization import save_network

    tiny = training.load_config(TINY_CONFIG)
    initial = save_network(FusionNet(tiny.model), tmp_path / "initial.safetensors")
    schedule = dataclasses.replace(tiny.schedule, rounds=1, fusion_steps=(0,), segmentation_steps=(2,), init_fusion=str(initial))
    config = dataclasses.replace(tiny, schedule=schedule, data=dataclasses.replace(tiny.data, validation_pairs=0))
    training.train(config, tmp_path / "run", data_root=str(TINY_DATA))
    assert training.weights_digest(load_network(tmp_path / "run" / "fusion.safetensors")) == training.weights_digest(load_network(initial))

    other = save_network(FusionNet(FusionConfig(widths=(4, 8, 8, 16))), tmp_path / "other.safetensors")
    config = dataclasses.replace(config, schedule=dataclasses.replace(schedule, init_fusion=str(other)))
    with pytest.raises(ValueError, match="differs from \\[model\\]"):
        training.train(config, tmp_path / "run2", data_root=str(TINY_DATA))


def _salience_config(tmp_path, **schedule):
    """The tiny schedule training only a salience gain on top of a saved plain (blend) network."""
    from ivfuse.models import FusionNet
    from ivfuse.serialization import save_network

    tiny = training.load_config(TINY_CONFIG)
    plain_model = dataclasses.replace(tiny.model, head="blend")
    torch.manual_seed(1)
    initial = save_network(FusionNet(plain_model), tmp_path / "plain.safetensors")
    return dataclasses.replace(
        tiny,
        model=dataclasses.replace(plain_model, salience=True),
        schedule=dataclasses.replace(tiny.schedule, init_fusion=str(initial), fusion_trainable="salience", semantic_weight=2.0, **schedule),
    ), initial


def test_training_only_the_salience_gain_leaves_the_rest_of_the_fusion_network_as_initialised(tmp_path):
    config, initial = _salience_config(tmp_path)
    training.train(config, tmp_path / "run", data_root=str(TINY_DATA))
    start, end = load_network(initial).state_dict(), load_network(tmp_path / "run" / "fusion.safetensors").state_dict()
    assert set(end) - set(start) == {key for key in end if key.startswith("salience.")}
    assert all(torch.equal(start[key], end[key]) for key in start)
    assert not torch.equal(end["salience.out.weight"], torch.zeros_like(end["salience.out.weight"]))

    plain = dataclasses.replace(config, model=dataclasses.replace(config.model, salience=False))
    with pytest.raises(ValueError, match="fusion_trainable = 'salience' needs \\[model\\] salience = true"):
        training.train(plain, tmp_path / "plain_run", data_root=str(TINY_DATA))
    with pytest.raises(ValueError, match="fusion_trainable must be 'all' or 'salience', not 'head'"):
        dataclasses.replace(config.schedule, fusion_trainable="head")


def test_salience_gain_trains_under_torchrun_with_the_rest_frozen(tmp_path):
    config, initial = _salience_config(tmp_path)
    out = tmp_path / "ddp"
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    settings = ["--set", "model.head='blend'", "--set", "model.salience=true", "--set", "schedule.fusion_trainable='salience'",
                "--set", f"schedule.init_fusion='{initial}'"]
    result = subprocess.run(_command(*launcher, *_train_arguments(out), *settings), env=_environment(), capture_output=True, text=True, cwd=REPO, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    digests = (out / "rank_digests.txt").read_text().split()
    assert len(digests) == 2 and digests[0] == digests[1]
    start, end = load_network(initial).state_dict(), load_network(out / "fusion.safetensors").state_dict()
    assert all(torch.equal(start[key], end[key]) for key in start)


def test_train_lists_keep_only_the_listed_pairs_of_their_folder(tmp_path):
    listing = tmp_path / "RoadScene_train.txt"
    listing.write_text("FLIR_00018\n")
    data = training.DataConfig(root=str(TINY_DATA), train=("MSRS", "RoadScene"), train_lists=("", str(listing)))
    names = [sample.name for sample in training.training_pairs(data, TINY_DATA)]
    assert names[-1] == "tiny/RoadScene/FLIR_00018" and not any("FLIR_00006" in name for name in names)
    assert sum("/MSRS/" in name for name in names) == 6  # "" keeps every pair of its folder
    listing.write_text("FLIR_00018\nFLIR_99999.png\n")
    with pytest.raises(ValueError, match="FLIR_99999"):
        training.training_pairs(data, TINY_DATA)
    with pytest.raises(ValueError, match="one file"):
        training.DataConfig(train=("MSRS", "RoadScene"), train_lists=("a.txt",))


def test_init_segmentation_starts_the_segmentation_network_from_saved_weights(tmp_path):
    from ivfuse.models import SegmentationConfig, SegmentationNet
    from ivfuse.serialization import save_network

    tiny = training.load_config(TINY_CONFIG)
    torch.manual_seed(1)
    initial = save_network(SegmentationNet(tiny.segmentation), tmp_path / "initial.safetensors")
    schedule = dataclasses.replace(tiny.schedule, rounds=1, fusion_steps=(0,), segmentation_steps=(1,), init_segmentation=str(initial))
    config = dataclasses.replace(tiny, schedule=schedule, data=dataclasses.replace(tiny.data, validation_pairs=0))
    training.train(config, tmp_path / "run", data_root=str(TINY_DATA))
    trained = load_network(tmp_path / "run" / "segmentation.safetensors").state_dict()
    start, fresh = load_network(initial).state_dict(), SegmentationNet(tiny.segmentation).state_dict()
    moved = sum((trained[key] - start[key]).abs().sum() for key in start)
    assert moved < 0.1 * sum((fresh[key] - start[key]).abs().sum() for key in start)  # one step from the saved weights

    other = save_network(SegmentationNet(SegmentationConfig(head_width=32)), tmp_path / "other.safetensors")
    config = dataclasses.replace(config, schedule=dataclasses.replace(schedule, init_segmentation=str(other)))
    with pytest.raises(ValueError, match="differs from \\[segmentation\\]"):
        training.train(config, tmp_path / "run2", data_root=str(TINY_DATA))


def test_fuse_frames_gives_the_images_ivfuse_fuse_writes(tmp_path):
    import numpy as np

    from ivfuse.data import load_pairs
    from ivfuse.fuser import Fuser
    from ivfuse.models import FusionNet
    from ivfuse.serialization import save_network

    tiny = training.load_config(TINY_CONFIG)
    network = FusionNet(tiny.model)
    weights = save_network(network, tmp_path / "fusion.safetensors")
    pair = [s for s in load_pairs([TINY_DATA / "MSRS"]) if s.label is not None][0]
    frame = training.fuse_frames(network, [pair], torch.device("cpu"))[0]
    written = Fuser(weights).fuse(pair.ir[0].numpy() / np.float32(255), pair.vis.permute(1, 2, 0).numpy() / np.float32(255))
    expected = torch.from_numpy(np.round(written * 255).astype(np.int16)).permute(2, 0, 1)
    assert frame.image.shape == pair.vis.shape and frame.image.dtype == torch.uint8
    assert (frame.image.to(torch.int16) - expected).abs().max() <= 1  # float rounding of channels-last only
    assert torch.equal(frame.label, pair.label)


@pytest.mark.parametrize("mode, fusions", [("crops", 0), ("frames", 3)])
def test_whole_frames_are_fused_once_per_segmentation_phase(tmp_path, monkeypatch, mode, fusions):
    calls = []
    fuse_frames = training.fuse_frames
    monkeypatch.setattr(training, "fuse_frames", lambda *a: calls.append(1) or fuse_frames(*a))
    config = training.load_config(TINY_CONFIG, [f'schedule.segmentation_input="{mode}"', "data.validation_pairs=0"])
    training.train(config, tmp_path / "run", data_root=str(TINY_DATA))
    assert len(calls) == fusions  # three rounds, one segmentation phase each
    rows = _rows(tmp_path / "run" / "log.csv")
    assert [r["network"] for r in rows].count("segmentation") == 12


def test_night_copies_are_fused_with_the_labelled_day_pairs(tmp_path, monkeypatch):
    fused = []
    fuse_frames = training.fuse_frames
    monkeypatch.setattr(training, "fuse_frames", lambda fusion, pairs, device: fused.append([p.name for p in pairs]) or fuse_frames(fusion, pairs, device))
    config = training.load_config(TINY_CONFIG, ['schedule.segmentation_input="frames"', "schedule.night_copies=true", "data.validation_pairs=0"])
    training.train(config, tmp_path / "run", data_root=str(TINY_DATA))
    names = fused[0]
    labelled = [n for n in names if not n.endswith("#night")]
    assert len(labelled) == 6
    # The three day frames of tests/data/tiny get a copy; the night frames are already that dark.
    assert sorted(n for n in names if n.endswith("#night")) == sorted(f"{n}#night" for n in labelled if n.endswith("D"))


@pytest.mark.parametrize("overrides, message", [
    (["schedule.night_copies=true"], "night_copies needs segmentation_input"),
    (['schedule.segmentation_input="frames"', "schedule.night_luma=[50, 40]"], "night_luma must be"),
])
def test_night_copy_settings_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        training.load_config(TINY_CONFIG, overrides)


def test_update_average_is_a_moving_average_of_weights_and_batchnorm_statistics():
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    average = copy.deepcopy(network)
    before = {k: v.clone() for k, v in average.state_dict().items()}
    with torch.no_grad():
        for tensor in network.parameters():
            tensor.add_(1.0)
    network(torch.rand(4, 1, 3, 3))  # train mode: moves the running statistics and the step counter
    training.update_average(average, network, 0.75)
    for key, value in average.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * before[key] + 0.25 * network.state_dict()[key])
        else:
            assert torch.equal(value, network.state_dict()[key])
    assert not any(tensor.requires_grad for tensor in average.state_dict().values())


def test_average_decay_starts_low_and_reaches_ema_decay():
    optim = training.OptimConfig(ema_decay=0.99)
    assert training.average_decay(optim, 0) == pytest.approx(0.1)
    assert training.average_decay(optim, 10_000) == 0.99
    with pytest.raises(ValueError, match="ema_decay"):
        training.OptimConfig(ema_decay=1.0)


def test_ema_decay_saves_the_average_and_resumes_it_from_the_checkpoint(tmp_path, monkeypatch):
    tiny = training.load_config(TINY_CONFIG)
    schedule = dataclasses.replace(tiny.schedule, rounds=1, fusion_steps=(0,), segmentation_steps=(4,))
    config = dataclasses.replace(tiny, schedule=schedule, data=dataclasses.replace(tiny.data, validation_pairs=0),
                                 segmentation_optim=dataclasses.replace(tiny.segmentation_optim, ema_decay=0.5))
    save = training._save_checkpoint

    def keep_step_two(path, *arguments):
        save(path, *arguments)
        if arguments[3] == 2:  # (networks, averages, optimizers, step, ...)
            (tmp_path / "step2.pt").write_bytes(path.read_bytes())

    monkeypatch.setattr(training, "_save_checkpoint", keep_step_two)
    training.train(config, tmp_path / "run", data_root=str(TINY_DATA))
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    saved = load_network(tmp_path / "run" / "segmentation.safetensors").state_dict()
    # The run saves the average, not the weights it trained.
    assert all(torch.equal(saved[k], state["segmentation_average"][k]) for k in saved)
    assert any(not torch.equal(saved[k], state["segmentation"][k]) for k in saved)

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "checkpoint.pt").write_bytes((tmp_path / "step2.pt").read_bytes())
    training.train(config, resumed, resume=True, data_root=str(TINY_DATA))
    again = load_network(resumed / "segmentation.safetensors").state_dict()
    assert all(torch.equal(saved[k], again[k]) for k in saved)
