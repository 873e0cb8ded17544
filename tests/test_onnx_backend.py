import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from ivfuse import Fuser  # noqa: E402
from ivfuse.cli import main  # noqa: E402
from ivfuse.io import read_image  # noqa: E402
from ivfuse.onnx_backend import BackendUnavailableError, OnnxNetwork, _export_form, export_onnx, load_backend_network  # noqa: E402
from ivfuse.segmenter import Segmenter  # noqa: E402
from ivfuse.serialization import WeightsError, load_network, shipped_weights  # noqa: E402

from .conftest import EXAMPLES  # noqa: E402


def grey_levels(image: np.ndarray) -> np.ndarray:
    return np.rint(image * 255)


@pytest.fixture(scope="module")
def fusers():
    torch.set_num_threads(1)
    return Fuser(), Fuser(backend="onnxruntime")


@pytest.fixture(scope="module")
def fusion_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "fusion.onnx"
    export_onnx(load_network(shipped_weights("fusion")), path)
    return path


def example(stem: str):
    return read_image(EXAMPLES / "ir" / stem), read_image(EXAMPLES / "vi" / stem)


def test_exported_graph_passes_the_checker_and_has_dynamic_batch_height_width(fusion_onnx):
    model = onnx.load(str(fusion_onnx))
    onnx.checker.check_model(model, full_check=True)
    dims = [[d.dim_param or d.dim_value for d in node.type.tensor_type.shape.dim] for node in model.graph.input]
    assert dims == [["batch", 1, "height", "width"]] * 2
    assert {p.key: p.value for p in model.metadata_props}["network"] == "FusionNet"


def test_exported_file_runs_other_batch_and_sizes_like_the_network(fusion_onnx):
    network = load_network(shipped_weights("fusion"))
    runner = load_backend_network(fusion_onnx, "FusionNet", backend="onnxruntime", threads=1)
    ir, vis = example("00055D.png")
    ir = torch.from_numpy(ir[100:172, 200:304].copy())[None, None].repeat(2, 1, 1, 1)
    vis_y = torch.from_numpy(vis[100:172, 200:304, 1].copy())[None, None].repeat(2, 1, 1, 1)
    vis_y[1] = vis_y[1].flip(-1)
    with torch.inference_mode():
        expected = network(ir, vis_y)
    assert runner.size_multiple == 8
    torch.testing.assert_close(runner(ir, vis_y), expected, atol=1e-4, rtol=0)


def test_export_form_computes_what_the_network_computes():
    network = load_network(shipped_weights("fusion"))
    ir, vis = example("00055D.png")
    ir, vis_y = (torch.from_numpy(image[:96, :136].copy())[None, None] for image in (ir, vis[..., 1]))
    export_form = _export_form(network)
    # The rewrites are in place (else the comparison below would pass trivially).
    assert type(export_form).__name__ == "_PairedStemFusionNet"
    assert [type(stage).__name__ for stage in export_form.network.decode] == ["_SplitSkipStage"] * 3
    assert export_form.network.decode[2].up is None and export_form.network.decode[1].up is not None  # 1x1 folded into reduce, 3x3 not
    with torch.inference_mode():
        torch.testing.assert_close(export_form(ir, vis_y), network(ir, vis_y), atol=1e-5, rtol=0)
        # Any subset of the rewrites (benchmarks/onnx_rewrites.py measures each) computes the same.
        for rewrites in ((), ("sobel",), ("split_skips", "salience_sum"), ("paired_stems",)):
            torch.testing.assert_close(_export_form(network, rewrites)(ir, vis_y), network(ir, vis_y), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unknown export rewrites"):
        _export_form(network, ("fast",))


def test_a_shape_run_again_gets_a_fixed_shape_session_with_the_same_output(fusion_onnx):
    runner = OnnxNetwork(fusion_onnx.read_bytes(), threads=1)
    ir, vis_y = torch.rand(1, 1, 48, 64), torch.rand(1, 1, 48, 64)
    first = runner(ir, vis_y)
    assert runner._session_for((1, 1, 48, 64)) is not runner.session  # the second run of the shape
    torch.testing.assert_close(runner(ir, vis_y), first, atol=1e-5, rtol=0)
    assert runner(torch.rand(2, 1, 16, 24), torch.rand(2, 1, 16, 24)).shape == (2, 1, 16, 24)  # a new shape still runs


@pytest.mark.parametrize("name", [0, 1, 2])
def test_real_msrs_pairs_fuse_within_one_grey_level_of_pytorch(fusers, msrs_test, msrs_names, name):
    ir, vis = read_image(msrs_test / "ir" / msrs_names[name]), read_image(msrs_test / "vi" / msrs_names[name])
    torch_fused, ort_fused = (fuser.fuse(ir, vis) for fuser in fusers)
    assert ort_fused.shape == (480, 640, 3) and ort_fused.dtype == np.float32
    assert np.abs(grey_levels(torch_fused) - grey_levels(ort_fused)).max() <= 1


@pytest.mark.parametrize(
    "stem, crop, tile_size, grey",
    [("00004N.png", (101, 203), 1024, False), ("05.png", (280, 280), 1024, False), ("00055D.png", (480, 640), 256, True)],
    ids=["padding", "grey-visible", "tiles-grey-flag"],
)
def test_padding_tiling_and_colour_paths_match_pytorch(fusers, stem, crop, tile_size, grey):
    ir, vis = (image[: crop[0], : crop[1]] for image in example(stem))
    torch_fuser, ort_fuser = fusers
    torch_fuser.tile_size = ort_fuser.tile_size = tile_size
    try:
        torch_fused, ort_fused = torch_fuser.fuse(ir, vis, grey=grey), ort_fuser.fuse(ir, vis, grey=grey)
    finally:
        torch_fuser.tile_size = ort_fuser.tile_size = 1024
    assert torch_fused.shape == ort_fused.shape
    assert np.abs(grey_levels(torch_fused) - grey_levels(ort_fused)).max() <= 1


def test_fuse_batch_gives_each_pair_what_fuse_gives(fusers):
    torch_fuser, ort_fuser = fusers
    pairs = [example("00004N.png"), example("00055D.png")]
    irs = [ir[:96, :136] for ir, _ in pairs] + [np.dstack([pairs[0][0][:96, 8:144]] * 3)]
    viss = [vis[:96, :136] for _, vis in pairs] + [pairs[0][1][:96, 8:144, 0]]
    for fuser in fusers:
        batch = fuser.fuse_batch(irs, viss)
        assert [image.shape for image in batch] == [(96, 136, 3), (96, 136, 3), (96, 136)]
        for fused, ir, vis in zip(batch, irs, viss):
            assert np.abs(grey_levels(fused) - grey_levels(fuser.fuse(ir, vis))).max() <= 1
    with pytest.raises(ValueError, match="one size"):
        torch_fuser.fuse_batch([irs[0], irs[1][:64]], [viss[0], viss[1][:64]])


@pytest.fixture(scope="module")
def calibration(datasets, tmp_path_factory):
    """Two MSRS training pairs (a night and a day scene) as a calibration folder."""
    folder = tmp_path_factory.mktemp("calibration")
    train = datasets / "MSRS" / "train"
    for sub in ("ir", "vi"):
        (folder / sub).mkdir()
        for name in ("00001D.png", "00037N.png"):
            (folder / sub / name).symlink_to(train / sub / name)
    return folder


def test_static_int8_model_stays_close_to_float(fusion_onnx, calibration):
    int8 = Fuser(backend="onnxruntime", quantize="int8", calibration=calibration)
    float32 = Fuser(fusion_onnx, backend="onnxruntime")
    ops = {node.op_type for node in onnx.load_from_string(int8.network._model).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # int8 convolutions, full-resolution ones float32
    ir, vis = example("00055D.png")
    error = (grey_levels(int8.fuse(ir, vis)) - grey_levels(float32.fuse(ir, vis))) ** 2
    assert 10 * np.log10(255**2 / error.mean()) > 45  # dB; about 56 measured, docs/onnx.md has the cost with 16 pairs


def test_int8_needs_a_calibration_folder_with_pairs(tmp_path):
    result = CliRunner().invoke(main, ["export", "--quantize", "int8", "-o", str(tmp_path / "int8.onnx")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "needs calibration pairs" in result.output
    with pytest.raises(ValueError, match="no calibration pairs"):
        export_onnx(load_network(shipped_weights("fusion")), quantize="int8", calibration=tmp_path)


def test_segmenter_runs_both_networks_in_onnxruntime():
    ir, vis = (image[:128, :192] for image in example("00055D.png"))
    labels_torch, fused_torch = Segmenter().segment(ir, vis)
    labels_ort, fused_ort = Segmenter(backend="onnxruntime").segment(ir, vis)
    assert np.abs(grey_levels(fused_torch) - grey_levels(fused_ort)).max() <= 1
    # Pixels whose top two classes are a near tie may flip on a last-bit difference.
    assert (labels_torch == labels_ort).mean() > 0.999


def test_onnx_file_for_the_torch_backend_is_refused_in_one_line(fusion_onnx):
    with pytest.raises(WeightsError, match=r"fusion\.onnx: an ONNX model runs with the onnxruntime backend") as caught:
        Fuser(fusion_onnx)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "content, message",
    [(None, "ONNX file not found"), (b"\x08\x07garbage that is not protobuf" * 4, "not a readable ONNX model"), ("bare", "without ivfuse metadata")],
)
def test_bad_onnx_files_give_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content == "bare":
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["ir"], ["fused"])], "bare",
            [onnx.helper.make_tensor_value_info("ir", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
            [onnx.helper.make_tensor_value_info("fused", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
        )
        path.write_bytes(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString())
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=message) as caught:
        Fuser(path, backend="onnxruntime")
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_segmentation_model_is_refused_as_fusion_weights(tmp_path):
    path = tmp_path / "segmentation.onnx"
    result = CliRunner().invoke(main, ["export", "--seg", "-o", str(path)])
    assert result.exit_code == 0 and "SegmentationNet" in result.output
    with pytest.raises(WeightsError, match="holds SegmentationNet, expected FusionNet"):
        Fuser(path, backend="onnxruntime")


def test_cli_export_then_fuse_with_the_file_matches_the_torch_backend(tmp_path):
    runner = CliRunner()
    model = tmp_path / "fusion.onnx"
    assert runner.invoke(main, ["export", "-o", str(model)]).exit_code == 0
    pair = ["--ir", str(EXAMPLES / "ir" / "00004N.png"), "--vis", str(EXAMPLES / "vi" / "00004N.png"), "--threads", "1"]
    outputs = {}
    for backend, extra in (("torch", []), ("onnxruntime", ["--weights", str(model)]), ("onnxruntime", [])):
        outputs[len(outputs)] = tmp_path / f"{len(outputs)}.png"
        result = runner.invoke(main, ["fuse", *pair, "-o", str(outputs[len(outputs) - 1]), "--backend", backend, *extra])
        assert result.exit_code == 0, result.output
    reference = grey_levels(read_image(outputs[0]))
    for index in (1, 2):
        assert np.abs(grey_levels(read_image(outputs[index])) - reference).max() <= 1


def test_cli_corrupt_model_exits_2_with_one_line_and_writes_nothing(tmp_path):
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not a model")
    out = tmp_path / "fused.png"
    pair = ["--ir", str(EXAMPLES / "ir" / "00004N.png"), "--vis", str(EXAMPLES / "vi" / "00004N.png")]
    result = CliRunner().invoke(main, ["fuse", *pair, "-o", str(out), "--backend", "onnxruntime", "--weights", str(model)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and f"{model}: not a readable ONNX model" in result.output
    assert list(tmp_path.iterdir()) == [model]


def test_without_onnxruntime_the_backend_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what Python does when the package is absent
    with pytest.raises(BackendUnavailableError, match=r"pip install 'ivfuse\[onnx\]'"):
        Fuser(backend="onnxruntime")
    pair = ["--ir", str(EXAMPLES / "ir" / "05.png"), "--vis", str(EXAMPLES / "vi" / "05.png"), "-o", str(tmp_path / "f.png")]
    result = CliRunner().invoke(main, ["fuse", *pair, "--backend", "onnxruntime"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "ivfuse[onnx]" in result.output


def test_export_refuses_a_file_not_named_onnx(tmp_path):
    result = CliRunner().invoke(main, ["export", "-o", str(tmp_path / "fusion.bin")])
    assert result.exit_code == 2 and "*.onnx" in result.output and not (tmp_path / "fusion.bin").exists()


def test_onnx_network_keeps_the_input_device_and_dtype(fusion_onnx):
    runner = OnnxNetwork(fusion_onnx.read_bytes(), threads=1)
    output = runner(torch.rand(1, 1, 16, 24, dtype=torch.float64), torch.rand(1, 1, 16, 24))
    assert output.dtype == torch.float32 and output.device.type == "cpu" and output.shape == (1, 1, 16, 24)
