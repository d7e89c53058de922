"""Backbones, encoders, heads and the motion predictor: shapes, parameter counts, gradients, errors."""
import pytest
import torch
import torch.nn as nn

from vssl_nb.models import (BACKBONES, KeyframeEncoder, MotionEncoder, MotionPredictor, ProjectionHead, TinyBackbone3D,
                            build_backbone, count_parameters, r2plus1d_18, r3d_18, sincos_position_3d)


@pytest.mark.parametrize('T,S', [(4, 32), (8, 64), (5, 48), (16, 112)])
def test_tiny_backbone_shapes(T, S):
    net = TinyBackbone3D().eval()
    with torch.no_grad(): pooled, (l3, l4) = net(torch.randn(2, 3, T, S, S), return_maps=True)
    assert pooled.shape == (2, net.feature_dim) == (2, 128)
    assert l3.shape[:2] == (2, 64) and l4.shape[:2] == (2, 128)
    assert l3.shape[-1] == -(-S // 8) and l4.shape[-1] == -(-S // 16)


def test_tiny_backbone_is_small_and_rejects_short_clips():
    net = TinyBackbone3D()
    assert count_parameters(net) == 294_384
    with pytest.raises(ValueError, match='at least 4 frames'): net(torch.randn(1, 3, 3, 64, 64))
    with pytest.raises(ValueError, match=r'\(B, C, T, H, W\) with C=3'): net(torch.randn(1, 8, 3, 64, 64))


@pytest.mark.parametrize('factory,params', [(r3d_18, 33_166_272), (r2plus1d_18, 31_300_125)])
def test_video_resnet_parameter_counts(factory, params):
    # the reference implementation's counts (33,371,472 / 31,505,325) minus its 400-way classifier (512·400 + 400)
    assert count_parameters(factory()) == params


@pytest.mark.parametrize('name', ['r3d18', 'r2plus1d18'])
def test_video_resnet_shapes(name):
    net = build_backbone(name).eval()
    with torch.no_grad(): pooled, (l3, l4) = net(torch.randn(1, 3, 8, 64, 64), return_maps=True)
    assert pooled.shape == (1, 512) and net.feature_dim == 512 and net.map_dims == (256, 512)
    assert l3.shape == (1, 256, 2, 8, 8) and l4.shape == (1, 512, 1, 4, 4)


def test_r2plus1d_factorises_convolutions():
    net = r2plus1d_18()
    kernels = {m.kernel_size for m in net.modules() if isinstance(m, nn.Conv3d)}
    assert (3, 3, 3) not in kernels and {(1, 3, 3), (3, 1, 1), (1, 7, 7)} <= kernels
    assert (3, 3, 3) in {m.kernel_size for m in r3d_18().modules() if isinstance(m, nn.Conv3d)}


def test_build_backbone_registry():
    assert set(BACKBONES) == {'tiny', 'r3d18', 'r2plus1d18'}
    assert build_backbone('tiny', widths=(4, 8, 8, 16)).feature_dim == 16
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'"): build_backbone('resnet50')


def test_backbone_gradients_reach_the_stem():
    net = TinyBackbone3D(widths=(4, 8, 8, 16))
    net(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_keyframe_encoder():
    enc = KeyframeEncoder()
    assert count_parameters(enc) == 4_905_792   # ResNet-10 (one basic block per stage), counted by hand layer by layer
    small = KeyframeEncoder((16, 32, 64, 128), maxpool=False)
    assert small(torch.randn(2, 3, 64, 64)).shape == (2, 128)
    with pytest.raises(ValueError, match='KeyframeEncoder'): small(torch.randn(2, 3, 4, 64, 64))


@pytest.mark.parametrize('hw', [4, 7, 16, 56])
def test_motion_encoder_output_grid_and_first_stride(hw):
    enc = MotionEncoder((8, 16), target_shape=(2, 4, 4))
    assert enc.body[0][0].in_channels == 2 and enc.body[0][0].stride == (1, 1, 1)
    assert enc(torch.randn(3, 2, 8, hw, hw)).shape == (3, 16, 2, 4, 4)


def test_motion_encoder_rejects_rgb():
    with pytest.raises(ValueError, match='C=2'): MotionEncoder((8, 16))(torch.randn(1, 3, 4, 8, 8))


def test_projection_head_per_position():
    head = ProjectionHead(32, 64, 16)
    assert head(torch.randn(5, 32)).shape == (5, 16) and head(torch.randn(5, 7, 32)).shape == (5, 7, 16)
    assert isinstance(head.net[-1], nn.BatchNorm1d)
    assert not isinstance(ProjectionHead(32, 64, 16, out_bn=False).net[-1], nn.BatchNorm1d)
    with pytest.raises(ValueError, match=r'\(\.\.\., 32\)'): head(torch.randn(5, 31))


def test_motion_predictor_queries_and_shapes():
    bb = TinyBackbone3D(widths=(4, 8, 8, 16))
    pred = MotionPredictor(bb.map_dims, d_model=24, n_heads=4, n_encoder=1, n_decoder=1, target_shape=(2, 3, 3), out_dim=10)
    assert pred.queries.shape == (1, 24, 2, 3, 3)                      # one learned query per target position
    _, maps = bb(torch.randn(2, 3, 8, 32, 32), return_maps=True)
    out = pred(maps)
    assert out.shape == (2, 18, 10)
    assert pred(maps, target_shape=(4, 5, 5)).shape == (2, 100, 10)
    out.square().mean().backward()
    assert pred.queries.grad.abs().sum() > 0 and bb.stages[0][0].weight.grad.abs().sum() > 0
    # different positions get different predictions (the queries tell them apart)
    assert not torch.allclose(out[:, 0], out[:, 1])


def test_paper_size_predictor():
    pred = MotionPredictor((256, 512))
    assert len(pred.encoder.layers) == 2 and len(pred.decoder.layers) == 4
    assert pred.decoder.layers[0].self_attn.num_heads == 8 and pred.queries.shape[2:] == (4, 7, 7)


def test_sincos_position_code():
    code = sincos_position_3d(2, 3, 4, 30)
    assert code.shape == (24, 30)
    assert len({tuple(r.tolist()) for r in code}) == 24               # every position is distinct
