"""`ivfuse eval` end to end on real MSRS pairs, including bad input."""

import csv
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ivfuse.baselines import BASELINES
from ivfuse.cli import main
from ivfuse.evaluate import EvaluationError, evaluate, summarize
from ivfuse.report import summary_markdown


@pytest.fixture(scope="module")
def folders(tmp_path_factory, msrs_test, msrs_names):
    """ir/, vi/ with 3 real pairs; average/ and gff/ complete; broken/ with bad files."""
    root = tmp_path_factory.mktemp("eval")
    for sub in ("ir", "vi", "vi_extra", "average", "gff", "broken"):
        (root / sub).mkdir()
    for name in msrs_names:
        shutil.copy(msrs_test / "ir" / name, root / "ir" / name)
        shutil.copy(msrs_test / "vi" / name, root / "vi" / name)
        shutil.copy(msrs_test / "vi" / name, root / "vi_extra" / name)
        ir = np.asarray(Image.open(root / "ir" / name), np.float32) / 255
        vis_y = np.asarray(Image.open(root / "vi" / name).convert("L"), np.float32) / 255
        for method in ("average", "gff"):
            fused = BASELINES[method](ir, vis_y)
            # JPEG in one folder: images match by stem across extensions.
            suffix = ".jpg" if method == "gff" else ".png"
            Image.fromarray(np.round(fused * 255).astype(np.uint8)).save((root / method / name).with_suffix(suffix), quality=95)
    first, second, _ = msrs_names
    (root / "broken" / first).write_bytes(b"not a png")
    Image.new("L", (320, 240)).save(root / "broken" / second)
    # A visible image without IR partner.
    shutil.copy(root / "vi" / first, root / "vi_extra" / "lonely.png")
    return root


def test_cli_end_to_end(folders, msrs_names, tmp_path):
    report = tmp_path / "report"
    args = ["eval", "--ir", str(folders / "ir"), "--vis", str(folders / "vi"), "--fused", f"average={folders / 'average'}",
            "--fused", f"gff={folders / 'gff'}", "-o", str(report), "--grid-images", "2", "--grid-zoom", "0.4,0.4,0.2,0.2"]
    outcome = CliRunner().invoke(main, args)
    assert outcome.exit_code == 0, outcome.output
    assert "| average |" in outcome.stdout and "| gff |" in outcome.stdout and "**" in outcome.stdout
    assert "over 3 image(s)" in outcome.stdout
    for name in ("per_image.csv", "summary.md", "summary.csv", "figure_grid.png", "bars/Qabf.png", "bars/Nabf.png"):
        assert (report / name).is_file(), name
    with open(report / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {row["image"] for row in rows} == {n.rsplit(".", 1)[0] for n in msrs_names}
    with open(report / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == 2 * 12
    # The average adds no artefacts (Nabf ~ 0 up to 8-bit rounding): best (lowest) there.
    nabf = {row["method"]: row for row in summary if row["metric"] == "Nabf"}
    assert float(nabf["average"]["mean"]) < 1e-4 and nabf["average"]["best"] == "1" and nabf["gff"]["best"] == "0"


def test_bad_fused_files_are_skipped_and_reported(folders, msrs_names):
    result = evaluate(folders / "ir", folders / "vi_extra", {"average": folders / "average", "broken": folders / "broken"},
                      metrics=["EN", "SSIM"], progress=False)
    first, second, third = (n.rsplit(".", 1)[0] for n in msrs_names)
    reasons = {(s.method, s.image): s.reason for s in result.skipped}
    assert first in reasons[("broken", first)]  # corrupt file named
    assert "320x240" in reasons[("broken", second)] and "640x480" in reasons[("broken", second)]
    assert reasons[("broken", third)] == "no fused image"
    assert ("*", "lonely") in reasons
    # "broken" has no result at all, so "average" is still summarised over all its images.
    assert result.evaluated_methods == ["average"] and len(result.compared) == 3
    text = summary_markdown(result)
    assert "No image could be evaluated for: broken" in text
    assert all(image in text for image in (first, second, third, "lonely"))


def test_cli_partial_run_exits_1_and_names_skipped_files(folders, msrs_names, tmp_path):
    outcome = CliRunner().invoke(main, ["eval", "--ir", str(folders / "ir"), "--vis", str(folders / "vi_extra"), "--fused",
                                        f"average={folders / 'average'}", "--fused", f"broken={folders / 'broken'}",
                                        "--metrics", "en,sd", "--grid-images", "0", "-o", str(tmp_path / "r"), "--quiet"])
    assert outcome.exit_code == 1, outcome.output
    assert "lonely" in outcome.stderr and str(folders / "broken" / msrs_names[0]) in outcome.stderr
    assert "| average |" in outcome.stdout and "| broken |" not in outcome.stdout
    assert "No image could be evaluated for: broken" in (tmp_path / "r" / "summary.md").read_text()


def test_summary_only_over_images_every_method_has(folders, msrs_names, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(folders / "gff", partial)
    dropped = sorted(partial.iterdir())[0]
    dropped.unlink()
    result = evaluate(folders / "ir", folders / "vi", {"average": folders / "average", "partial": partial},
                      metrics=["EN"], progress=False)
    assert dropped.stem not in result.compared and len(result.compared) == 2
    assert len(result.scores["average"]) == 3  # still computed, shown per image
    stats = summarize(result)["average"]["EN"]
    expected = np.mean([result.scores["average"][image]["EN"] for image in result.compared])
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(expected)
    assert f"left out of the summary: {dropped.stem}" in summary_markdown(result)


def test_workers_give_the_same_numbers(folders):
    kwargs = dict(metrics=["MI", "PSNR"], convention="tang", progress=False)
    serial = evaluate(folders / "ir", folders / "vi", {"gff": folders / "gff"}, **kwargs)
    parallel = evaluate(folders / "ir", folders / "vi", {"gff": folders / "gff"}, workers=2, **kwargs)
    assert serial.scores == parallel.scores
    assert all(scores["PSNR"] > 60 for scores in serial.scores["gff"].values())  # tang PSNR


def test_nothing_to_evaluate_exits_non_zero(folders, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    runner = CliRunner()
    outcome = runner.invoke(main, ["eval", "--ir", str(folders / "ir"), "--vis", str(folders / "vi"),
                                   "--fused", f"x={folders / 'broken'}", "-o", str(tmp_path / "r")])
    assert outcome.exit_code == 2 and "nothing could be evaluated" in outcome.output
    outcome = runner.invoke(main, ["eval", "--ir", str(empty), "--vis", str(folders / "vi"),
                                   "--fused", f"x={folders / 'gff'}", "-o", str(tmp_path / "r")])
    assert outcome.exit_code == 2 and "no IR/visible pair" in outcome.output
    outcome = runner.invoke(main, ["eval", "--ir", str(folders / "ir"), "--vis", str(folders / "vi"),
                                   "--fused", f"x={tmp_path / 'missing'}", "-o", str(tmp_path / "r")])
    assert outcome.exit_code == 2 and "missing" in outcome.output
    outcome = runner.invoke(main, ["eval", "--ir", str(folders / "ir"), "--vis", str(folders / "vi"),
                                   "--fused", "no-equals-sign", "-o", str(tmp_path / "r")])
    assert outcome.exit_code != 0 and "NAME=DIR" in outcome.output
    with pytest.raises(EvaluationError, match="folder not found"):
        evaluate(tmp_path / "nope", folders / "vi", {"x": folders / "gff"})


def test_images_too_small_for_vif_give_nan_not_a_crash(tmp_path):
    for sub in ("ir", "vi", "tiny"):
        (tmp_path / sub).mkdir()
    rng = np.random.default_rng(0)
    for sub in ("ir", "vi", "tiny"):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / sub / "small.png")
    result = evaluate(tmp_path / "ir", tmp_path / "vi", {"tiny": tmp_path / "tiny"}, metrics=["EN", "VIF"], progress=False)
    scores = result.scores["tiny"]["small"]
    assert np.isfinite(scores["EN"]) and np.isnan(scores["VIF"])
    assert any("VIF undefined" in note for note in result.notes)


def test_unknown_grid_image_writes_no_report(folders, tmp_path):
    arguments = ["eval", "--ir", str(folders / "ir"), "--vis", str(folders / "vi"), "--fused", f"average={folders / 'average'}",
                 "-o", str(tmp_path / "report"), "--metrics", "EN", "--grid-images", "no_such_image", "--quiet"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2 and "no_such_image" in result.stderr
    assert not (tmp_path / "report").exists()


def test_every_nth_pair_from_the_first(folders, msrs_names, tmp_path):
    stems = [name.rsplit(".", 1)[0] for name in msrs_names]
    result = evaluate(folders / "ir", folders / "vi", {"average": folders / "average"}, metrics=["EN"], progress=False, images=2)
    assert result.compared == [stems[0], stems[2]] and sorted(result.sources) == result.compared
    assert result.selection == "2 pairs at positions 1, 3, 5, ... of the 3 pairs sorted by name"
    outcome = CliRunner().invoke(main, ["eval", "--ir", str(folders / "ir"), "--vis", str(folders / "vi"), "--fused", f"average={folders / 'average'}",
                                        "--metrics", "EN", "--grid-images", "0", "--images", "every:2", "-o", str(tmp_path / "r"), "--quiet"])
    assert outcome.exit_code == 0, outcome.output
    assert "Images: 2 pairs at positions 1, 3, 5, ..." in outcome.stdout and "over 2 image(s)" in outcome.stdout
    assert "Images: 2 pairs at positions" in (tmp_path / "r" / "summary.md").read_text()
    for bad in ("every:0", "every:x"):
        outcome = CliRunner().invoke(main, ["eval", "--ir", str(folders / "ir"), "--vis", str(folders / "vi"), "--fused", f"a={folders / 'average'}",
                                            "--images", bad, "-o", str(tmp_path / "r2")])
        assert outcome.exit_code == 2 and "every:N" in outcome.output


def test_images_listed_in_a_file(folders, msrs_names, tmp_path):
    first, second, third = msrs_names
    listing = tmp_path / "images.txt"
    # A file name, a stem, a comment, a blank line, a name without a pair, an unpaired file.
    listing.write_text(f"{first}\n# every night frame\n\n{second.rsplit('.', 1)[0]}  # stem only\nnowhere\nlonely\n")
    arguments = ["eval", "--ir", str(folders / "ir"), "--vis", str(folders / "vi_extra"), "--fused", f"average={folders / 'average'}",
                 "--metrics", "EN", "--grid-images", "0", "--images", str(listing), "-o", str(tmp_path / "r"), "--quiet"]
    outcome = CliRunner().invoke(main, arguments)
    assert outcome.exit_code == 1, outcome.output  # listed names without a pair are skipped
    assert "Images: the 2 pairs of 4 listed names" in outcome.stdout and "over 2 image(s)" in outcome.stdout
    assert "skipped nowhere [all methods]: listed, but no IR or visible image" in outcome.stderr
    assert "skipped lonely [all methods]: no IR image for" in outcome.stderr
    with open(tmp_path / "r" / "per_image.csv") as handle:
        assert {row["image"] for row in csv.DictReader(handle)} == {name.rsplit(".", 1)[0] for name in (first, second)}
    listing.write_text("nowhere\n")
    outcome = CliRunner().invoke(main, arguments)
    assert outcome.exit_code == 2 and "none of the 1 listed names has an IR/visible pair" in outcome.stderr
    outcome = CliRunner().invoke(main, [*arguments[:-5], "--images", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "r")])
    assert outcome.exit_code == 2 and "missing.txt: cannot read image list" in outcome.stderr
