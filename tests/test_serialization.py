import pickle

import pytest
import torch

from ivfuse.models import FusionConfig, FusionNet
from ivfuse.serialization import WeightsError, load_network, read_metadata, save_network, shipped_weights


def test_shipped_weights_load_without_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle must not be used to load weights")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    network = load_network(shipped_weights("fusion"), expected="FusionNet")
    assert isinstance(network, FusionNet) and not network.training


def test_round_trip_keeps_architecture_and_tensors(tmp_path):
    network = FusionNet(FusionConfig(widths=(4, 8, 8, 8), channel=False))
    path = save_network(network, tmp_path / "w.safetensors", note="test")
    loaded = load_network(path)
    assert loaded.config == network.config and read_metadata(path)["note"] == "test"
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])


def test_missing_corrupt_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="nope.safetensors: weights file not found"):
        load_network(tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="bad.safetensors: not a readable safetensors file"):
        load_network(tmp_path / "bad.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match="holds no ivfuse network"):
        load_network(tmp_path / "other.safetensors")


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = save_network(FusionNet(FusionConfig(widths=(4, 8, 8, 8))), tmp_path / "small.safetensors")
    tensors = {k: v for k, v in FusionNet().state_dict().items()}
    from safetensors.torch import save_file

    metadata = read_metadata(path)
    save_file(tensors, str(tmp_path / "mixed.safetensors"), metadata=metadata)
    with pytest.raises(WeightsError, match="mixed.safetensors: weights do not fit the FusionNet architecture"):
        load_network(tmp_path / "mixed.safetensors")


def test_non_finite_tensors_are_named_wherever_they_nest(tmp_path):
    from ivfuse.serialization import load_checkpoint, refuse_non_finite

    refuse_non_finite("ok.pt", {"a": torch.ones(2), "steps": torch.tensor([3]), "note": "text"})
    state = {"fusion": {"w": torch.ones(2)}, "optimizer": {"state": {0: {"exp_avg": torch.tensor([0.0, float("inf")])}}}}
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(WeightsError, match=r"checkpoint.pt: tensor optimizer.state.0.exp_avg holds 1 NaN/Inf value\(s\)"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    state["optimizer"]["state"][0]["exp_avg"][1] = 0.0
    torch.save(state, tmp_path / "checkpoint.pt")
    assert load_checkpoint(tmp_path / "checkpoint.pt", ["fusion"])["fusion"]["w"].sum() == 2
