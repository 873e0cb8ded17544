import pytest
import torch

from ivfuse.color import rgb_to_luma
from ivfuse.data import Augment, LabelledImage, Sample, draw_crops, night_copies, paste_objects, photometric_jitter

FRAME = LabelledImage("a", torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8), torch.randint(0, 9, (64, 80), dtype=torch.uint8))
JITTER = Augment(crop_size=32, contrast=0.3, brightness=0.15, gamma=0.4, noise=0.03)


def test_crops_are_a_pure_function_of_seed_and_step():
    first, again = (draw_crops([FRAME], 4, JITTER, seed=1, step=5) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_jitter_changes_the_pixels_not_the_geometry():
    plain_images, plain_labels = draw_crops([FRAME], 1, Augment(crop_size=32), seed=0, step=0)
    images, labels = draw_crops([FRAME], 1, JITTER, seed=0, step=0)
    # The jitter draws its values after the crop's: the same crop, other pixels.
    assert torch.equal(labels, plain_labels)
    assert not torch.equal(images, plain_images)
    assert images.min() >= 0 and images.max() <= 1


def test_no_jitter_draws_nothing():
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(3, 8, 8)
    assert torch.equal(photometric_jitter(image, Augment(), generator), image)
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(3).get_state())


def test_jitter_acts_on_every_plane_alike():
    image = torch.full((4, 8, 8), 0.4)
    jittered = photometric_jitter(image, Augment(contrast=0.5, brightness=0.2, gamma=0.5), torch.Generator().manual_seed(0))
    assert torch.allclose(jittered, jittered[0, 0, 0].expand_as(jittered))


def test_negative_amounts_are_refused():
    with pytest.raises(ValueError, match="gamma"):
        Augment(gamma=-0.1)


def test_object_crops_contain_an_object():
    label = torch.zeros(200, 240, dtype=torch.uint8)
    label[150:154, 20:24] = 7  # one small cone in a corner
    frame = LabelledImage("cone", torch.zeros(3, 200, 240, dtype=torch.uint8), label)
    augment = Augment(crop_size=32, scale_range=(1.0, 1.0), flip=False, object_crops=1.0)
    _, labels = draw_crops([frame], 16, augment, seed=0, step=0)
    assert all((crop == 7).any() for crop in labels)
    _, uniform = draw_crops([frame], 16, Augment(crop_size=32, scale_range=(1.0, 1.0)), seed=0, step=0)
    assert sum(bool((crop == 7).any()) for crop in uniform) < 8


def test_per_modality_jitter_draws_each_plane_separately_and_is_off_by_default():
    from ivfuse.data import jitter_planes

    image = torch.full((4, 16, 16), 0.5)
    image[:, :, :8] = 0.25  # some contrast for the contrast jitter to act on
    alike = jitter_planes(image, [1, 3], Augment(contrast=0.5, gamma=0.5), torch.Generator().manual_seed(1))
    separate = jitter_planes(image, [1, 3], Augment(contrast=0.5, gamma=0.5, per_modality=True), torch.Generator().manual_seed(1))
    assert torch.equal(alike[0], alike[1])  # one draw for all planes
    assert not torch.equal(separate[0], separate[1]) and torch.equal(separate[1], separate[3])


def test_blur_smooths_each_plane():
    from ivfuse.data import jitter_planes

    image = torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = jitter_planes(image, [1, 3], Augment(blur=3.0), torch.Generator().manual_seed(0))
    assert blurred.shape == image.shape and blurred.diff(dim=-1).abs().mean() < image.diff(dim=-1).abs().mean()


def test_night_copies_darken_the_visible_image_of_day_pairs_only():
    # A bright and a dark visible image of the same scene; IR and label are shared.
    ir, label = torch.randint(0, 256, (1, 32, 40), dtype=torch.uint8), torch.randint(0, 9, (32, 40), dtype=torch.uint8)
    day = Sample("day", ir, torch.randint(100, 256, (3, 32, 40), dtype=torch.uint8), label)
    night = Sample("night", ir, torch.randint(0, 40, (3, 32, 40), dtype=torch.uint8), label)
    copies = night_copies([day, night], (20, 30), noise=3.0, seed=0)
    assert [copy.name for copy in copies] == ["day#night"]
    copy = copies[0]
    assert copy.ir is day.ir and copy.label is day.label
    assert copy.vis.dtype == torch.uint8 and copy.vis.shape == day.vis.shape
    assert 19 <= 255 * float(rgb_to_luma(copy.vis[None].float() / 255).mean()) <= 31  # within the range, give or take the noise
    again = night_copies([day, night], (20, 30), noise=3.0, seed=0)[0]
    assert torch.equal(copy.vis, again.vis)
    assert not torch.equal(copy.vis, night_copies([day], (20, 30), noise=3.0, seed=1)[0].vis)


def test_paste_objects_copies_the_donors_object_pixels_and_labels_in_place():
    ir, vis = torch.zeros(1, 4, 5, dtype=torch.uint8), torch.zeros(3, 4, 5, dtype=torch.uint8)
    label = torch.zeros(4, 5, dtype=torch.uint8)
    label[0, 0] = 2  # the frame's own person stays where the donor has none
    donor_ir, donor_vis = torch.full((1, 4, 5), 200, dtype=torch.uint8), torch.full((3, 4, 5), 100, dtype=torch.uint8)
    donor_label = torch.zeros(4, 5, dtype=torch.uint8)
    donor_label[1:3, 2:4] = 1  # a car
    donor_label[3, 4] = 255  # unlabelled: not an object
    (pasted_ir, pasted_vis), pasted_label = paste_objects((ir, vis), label, (donor_ir, donor_vis), donor_label)
    car = donor_label == 1
    assert torch.equal(pasted_label, torch.where(car, 1, label).to(torch.uint8))
    assert (pasted_ir[:, car] == 200).all() and (pasted_ir[:, ~car] == 0).all()
    assert (pasted_vis[:, car] == 100).all() and (pasted_vis[:, ~car] == 0).all()
    # A donor of another size, or without labels, gives nothing.
    for other in (donor_label[:3], None):
        planes, same = paste_objects((ir, vis), label, (donor_ir, donor_vis), other)
        assert same is label and planes[0] is ir


def test_copy_paste_brings_objects_of_other_frames_into_the_crops_and_is_off_by_default():
    empty = LabelledImage("road", torch.zeros(3, 32, 32, dtype=torch.uint8), torch.zeros(32, 32, dtype=torch.uint8))
    label = torch.zeros(32, 32, dtype=torch.uint8)
    label[8:24, 8:24] = 1
    with_car = LabelledImage("car", (label * 255).expand(3, 32, 32).contiguous(), label)
    augment = Augment(crop_size=32, scale_range=(1.0, 1.0), flip=False)
    images, labels = draw_crops([empty, with_car], 64, augment, seed=0, step=0)
    roads = images.flatten(1).amax(1) == 0
    assert roads.any() and (labels[roads] == 0).all()
    pasted_images, pasted_labels = draw_crops([empty, with_car], 64, Augment(crop_size=32, scale_range=(1.0, 1.0), flip=False, copy_paste=1.0), seed=0, step=0)
    # The road frame now receives the car when the car frame is drawn as donor (half the time),
    # pixels and label alike.
    cars, pasted_cars = ((crops == 1).flatten(1).any(1).sum() for crops in (labels, pasted_labels))
    assert pasted_cars > cars + 8
    assert torch.equal(pasted_images[:, 0] == 1, pasted_labels == 1)
    with pytest.raises(ValueError, match="copy_paste"):
        Augment(copy_paste=1.5)
