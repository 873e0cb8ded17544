import pytest
import torch

from ivfuse.models import CrossDomainInteraction, FusionConfig, FusionNet
from ivfuse.models.fusion import infrared_local_contrast, sobel_magnitude


def test_fused_luma_has_input_shape_and_unit_range():
    net = FusionNet().eval()
    with torch.no_grad():
        fused = net(torch.rand(2, 1, 48, 72), torch.rand(2, 1, 48, 72))
    assert fused.shape == (2, 1, 48, 72)
    assert 0.0 <= fused.min() and fused.max() <= 1.0


@pytest.mark.parametrize("part", ["spatial", "channel", "integration"])
def test_each_cdiim_part_can_be_switched_off(part):
    full = FusionNet()
    ablated = FusionNet(FusionConfig(**{part: False}))
    with torch.no_grad():
        assert ablated(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    assert sum(p.numel() for p in ablated.parameters()) < sum(p.numel() for p in full.parameters())


def test_spatial_interaction_is_global():
    """Changing the visible features in one corner changes IR features everywhere."""
    torch.manual_seed(0)
    cdiim = CrossDomainInteraction(8, kv_stride=2, channel=False).eval()
    ir, vis = torch.rand(1, 8, 16, 16), torch.rand(1, 8, 16, 16)
    changed = vis.clone()
    changed[..., :2, :2] += 1.0
    with torch.no_grad():
        before, _, _ = cdiim(ir, vis)
        after, _, _ = cdiim(ir, changed)
    assert (before - after)[..., 8:, 8:].abs().min() > 0


def test_sobel_magnitude_of_a_vertical_step():
    image = torch.zeros(1, 1, 5, 6)
    image[..., 3:] = 1.0
    magnitude = sobel_magnitude(image)
    assert torch.allclose(magnitude[0, 0, 2], torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0, 0.0]))


def test_gradients_reach_both_encoders():
    net = FusionNet()
    net(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)).mean().backward()
    for encoder in (net.encode_ir, net.encode_vis):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_blend_head_keeps_source_pixels_exactly():
    """With the head's weight logit large and its residual zero, the output is the IR image itself."""
    net = FusionNet(FusionConfig(head="blend")).eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([30.0, 0.0]))
        ir, vis = torch.rand(1, 1, 32, 40), torch.rand(1, 1, 32, 40)
        assert torch.allclose(net(ir, vis), ir, atol=1e-6)
        net.head.bias.copy_(torch.tensor([0.0, 5.0]))  # residual near +1: clamped to the unit range
        assert torch.allclose(net(ir, vis), torch.ones_like(ir))
    with pytest.raises(ValueError, match="head must be"):
        FusionConfig(head="linear")


def test_infrared_local_contrast_marks_warm_spots_only():
    ir = torch.full((1, 1, 40, 40), 0.3)
    ir[..., 10:14, 20:23] = 0.9
    contrast = infrared_local_contrast(ir, window=9)
    assert contrast[..., 10:14, 20:23].min() > 0.4
    outside = torch.ones_like(ir, dtype=torch.bool)
    outside[..., 10:14, 20:23] = False
    assert contrast[outside].max() < 1e-6  # flat, or cooler than the neighbourhood: nothing added
    assert infrared_local_contrast(torch.full((1, 1, 16, 16), 0.7)).max() < 1e-6


def test_salience_gain_changes_only_ir_warm_spots_and_starts_near_the_plain_network():
    torch.manual_seed(0)
    plain = FusionNet(FusionConfig(head="blend")).eval()
    salient = FusionNet(FusionConfig(head="blend", salience=True)).eval()
    salient.load_state_dict(plain.state_dict(), strict=False)
    ir, vis = torch.full((1, 1, 64, 64), 0.2), torch.rand(1, 1, 64, 64) * 0.5
    ir[..., 30:40, 30:36] = 0.8
    with torch.no_grad():
        before = plain(ir, vis)
        fresh = salient(ir, vis)
        assert torch.allclose(fresh, (before + torch.sigmoid(torch.tensor(-4.0)) * infrared_local_contrast(ir)).clamp(0, 1), atol=1e-6)
        salient.salience.out.bias.fill_(10.0)  # full gain: the whole IR local contrast is added
        after = salient(ir, vis)
    warm = infrared_local_contrast(ir) > 0
    assert torch.equal(after[~warm], before[~warm])
    assert torch.allclose(after[warm], (before + infrared_local_contrast(ir))[warm].clamp(0, 1), atol=1e-4)
    with pytest.raises(ValueError, match="no salience gain"):
        salient(ir, vis, return_blend=True)
