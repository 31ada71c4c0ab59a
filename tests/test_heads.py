"""The heads' own guarantees: counter-based dropout masks and mlp_pool's capacity."""

from __future__ import annotations

import pytest
import torch

from budget.heads import (
    DropoutKeys,
    MLPPool,
    PackedBatch,
    hash32,
    keep_mask,
    keep_multiplier,
    keep_ones,
    mlp_shape,
    relu_dropout,
)


def test_dropout_masks_depend_on_the_member_not_its_mates():
    keys = torch.tensor([11, 22, 33])
    together, keep = keep_mask(DropoutKeys(keys, step=4).layer_keys(1), (3, 50, 16), 0.2)
    alone, _ = keep_mask(DropoutKeys(keys[1:2], step=4).layer_keys(1), (1, 50, 16), 0.2)
    assert torch.equal(together[1], alone[0])
    other_step, _ = keep_mask(DropoutKeys(keys, step=5).layer_keys(1), (3, 50, 16), 0.2)
    other_layer, _ = keep_mask(DropoutKeys(keys, step=4).layer_keys(2), (3, 50, 16), 0.2)
    assert not torch.equal(together, other_step) and not torch.equal(together, other_layer)
    assert keep == 1 - round(0.2 * 256) / 256
    # the kept share is a binomial draw of 2400 trials: within 4 standard deviations of its probability
    big, keep = keep_mask(torch.arange(8), (8, 300, 16), 0.2)
    sd = (keep * (1 - keep) / big.numel()) ** 0.5
    assert abs(big.float().mean().item() - keep) < 4 * sd


@pytest.mark.parametrize("p", [0.001, 0.2, 0.5, 0.999])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_dropout_multiplier_is_the_keep_mask_scaled(p, dtype):
    """The clamp-made multiplier must equal the mask cast and scaled, bit for bit, whatever the rate and dtype."""
    keys = DropoutKeys(torch.tensor([3, 2**32 - 7]), step=9).layer_keys(2)
    mask, keep = keep_mask(keys, (2, 33, 20), p)
    multiplier = keep_multiplier(keys, (2, 33, 20), p, dtype)
    assert multiplier.dtype == dtype and 0 < keep <= 1
    assert torch.equal(multiplier, mask.to(dtype).mul_(1 / keep))
    ones, same_keep = keep_ones(keys, (2, 33, 20), p, dtype)
    assert same_keep == keep and torch.equal(ones, mask.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_relu_dropout_has_relu_times_mask_s_value_and_gradient(dtype):
    """In place and with a backward that reads only the output, yet the same as autograd through relu and a product."""
    h = torch.randn(3, 40, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
    h[0, 0, :4] = 0.0  # ReLU's kink: no gradient at exactly zero, as torch.relu
    keep, _ = keep_ones(DropoutKeys(torch.tensor([1, 2, 3]), step=0).layer_keys(1), (3, 40, 16), 0.3, dtype)
    grad = torch.randn(3, 40, 16, generator=torch.Generator().manual_seed(2)).to(dtype)
    reference_input = h.clone().requires_grad_()
    reference = torch.relu(reference_input) * keep
    reference.backward(grad)
    fused_input = h.clone().requires_grad_()
    fused = relu_dropout(fused_input * 1, keep)  # a non-leaf, as a layer's product is
    fused.backward(grad)
    assert torch.equal(fused, reference) and torch.equal(fused_input.grad, reference_input.grad)
    assert torch.equal(relu_dropout(h.clone(), None), torch.relu(h))


@pytest.mark.parametrize("training", [False, True])
def test_mlp_pool_folds_standardisation_and_dropout_scale_without_changing_its_function(training):
    """The folded forward computes what standardising, then relu and scaled dropout layer by layer, compute."""
    generator = torch.Generator().manual_seed(0)
    members, slots, width, dim = 2, 3, 11, 5
    head = MLPPool([torch.Generator().manual_seed(i) for i in range(members)], dim, 4, dropout=0.3).train(training)
    frames = 50 + 4 * torch.randn(members, width, dim, generator=generator)
    head.set_standardisation(frames.mean(1) + 0.5, frames.std(1) * 1.5)
    owner = torch.tensor([[0] * 4 + [1] * 3 + [2] * 4, [0] * 6 + [1] * 4 + [-1]])  # member 1: a padded row, an empty slot
    members_mask = owner.unsqueeze(1) == torch.arange(slots).view(1, -1, 1)
    keys = DropoutKeys(torch.tensor([5, 9]), step=3)
    batch = PackedBatch(n_slots=slots, frames=frames, members=members_mask, counts=members_mask.sum(-1), keys=keys)
    x = (frames - head.shift) * head.scale
    for i, layer in enumerate(head.layers):
        x = torch.relu(torch.bmm(x, layer.weight) + layer.bias.unsqueeze(1))
        if training:
            x = x * keep_multiplier(keys.layer_keys(1 + i), tuple(x.shape), 0.3, x.dtype)
    pooled = torch.bmm(members_mask.float(), x) / members_mask.sum(-1, keepdim=True).clamp_min(1)
    expected = torch.bmm(pooled, head.classifier.weight) + head.classifier.bias.unsqueeze(1)
    torch.testing.assert_close(head(batch), expected, rtol=1e-4, atol=1e-4)


def test_mlp_capacity_is_similar_across_input_widths():
    params = {}
    for dim in (34, 384, 512, 768, 1024):
        depth, width = mlp_shape(dim)
        params[dim] = dim * width + (depth - 1) * width * width
    assert mlp_shape(34)[0] == 4 and mlp_shape(1024)[0] == 1
    assert max(params.values()) / min(params.values()) < 1.6


def _reference_hash32(x: torch.Tensor) -> torch.Tensor:
    """The hash in exact int64 arithmetic, as first written: what the int32 form must reproduce bit for bit."""
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x045D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def test_the_int32_hash_is_the_exact_32_bit_hash_on_this_machine():
    """int32 products must wrap and int64-to-int32 casts keep the low bits; if a platform broke either, masks would change."""
    values = torch.cat([torch.arange(0, 70_000), torch.randint(0, 2**32, (100_000,), generator=torch.Generator().manual_seed(0)),
                        torch.tensor([2**31 - 1, 2**31, 2**32 - 1])])  # fmt: skip
    assert torch.equal(hash32(values), _reference_hash32(values))
    keys = torch.tensor([0, 2**31 + 5, 2**32 - 1])
    mask, _ = keep_mask(keys, (3, 7, 9), 0.2)
    quads = torch.arange(16)
    expected = _reference_hash32(keys.view(-1, 1) ^ quads).to(torch.int32).view(torch.uint8)[:, :63].view(3, 7, 9) >= 51
    assert torch.equal(mask, expected)
