"""Idleness I_k = <dL/dp_k, p_k>: the gradient of a unit gate on prompt k.

Note on "zeroing": in a pre-LayerNorm ViT, LN(g * p) does not depend on g > 0, so the loss is
far from linear in the gate between g = 1 and g = 0 (measured on the tiny ViT: zeroing a
prompt changes the loss ~10^4 times more than -I_k predicts). The first-order statement the
score makes is about the gate near 1, which is what these tests check.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import tiny_trial
from provpt_core.backbone import BackboneConfig, load_backbone
from provpt_core.engine import fit
from provpt_core.methods.vpt import VPTDeepConfig, prompted_vit
from provpt_core.relocation.idleness import IdlenessMeter, idleness
from provpt_core.tiny_vit import TINY_VIT_NAME


@pytest.fixture(scope="module")
def trained():
    """A tiny prompted ViT (float64) after a few steps, with a fixed batch."""
    torch.manual_seed(3)
    backbone = load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights="random"))
    model = prompted_vit(VPTDeepConfig(dropout=0.0), backbone, 4, [2] * 12, "replace").double().eval()
    x, y = torch.randn(48, 3, 32, 32, dtype=torch.double), torch.randint(4, (48,))
    optimizer = torch.optim.SGD([model.prompts.weight, *model.head.parameters()], lr=0.05)
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    scores = idleness(model.prompts.weight, model.prompts.weight.grad).double()
    return model, x, y, loss.item(), scores


def test_idleness_equals_the_gradient_of_a_unit_gate(trained):
    model, x, y, _, scores = trained
    weight = model.prompts.weight.detach()
    gate = torch.ones(weight.shape[0], dtype=weight.dtype, requires_grad=True)
    logits = functional_call(model, {"prompts.weight": gate[:, None] * weight}, (x,))
    F.cross_entropy(logits, y).backward()
    torch.testing.assert_close(scores, gate.grad, rtol=1e-4, atol=1e-9)


def test_first_order_loss_change_when_a_prompt_shrinks(trained):
    model, x, y, loss, scores = trained
    delta = 0.01
    weight = model.prompts.weight.data
    changes = []
    for k in range(weight.shape[0]):
        kept = weight[k].clone()
        weight[k] = kept * (1 - delta)
        with torch.no_grad():
            changes.append(F.cross_entropy(model(x), y).item() - loss)
        weight[k] = kept
    measured, predicted = torch.tensor(changes, dtype=torch.double), -delta * scores
    assert (measured - predicted).abs().max() < 0.05 * predicted.abs().max()
    assert int(measured.argmin()) == int(scores.argmax())  # the most idle prompt is the one to prune


def test_meter_means_scores_over_batches_and_keeps_the_reference_loss_figure():
    meter = IdlenessMeter(2)
    w = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    meter.add(w, torch.tensor([[1.0, 1.0], [2.0, 0.0]]), torch.tensor(0.6), batch_size=4)
    meter.add(w, torch.tensor([[-1.0, 0.0], [0.0, 1.0]]), torch.tensor(0.2), batch_size=2)
    torch.testing.assert_close(meter.scores(), torch.tensor([(3.0 - 1.0) / 2, (1.0 - 1.0) / 2]))
    assert meter.loss() == pytest.approx(0.6 / 4 + 0.2 / 2)
    meter.reset()
    assert meter.batches == 0 and meter.scores().abs().sum() == 0


def test_accumulated_scores_match_the_reference_pass_when_prompts_stand_still(tiny_data):
    """With one full batch, a negligible lr and no clipping, the scores the training step
    accumulates in epoch 0 are the reference pass's scores at the start of epoch 1: same moves
    follow. (The two clip differently: the training step clips the prompts' gradients, the
    reference pass the head's and the gates' jointly.)"""
    events = {}
    for mode in ("accumulated", "reference"):
        relocation = {"idleness": mode, "identification_clip": None}
        method = {"name": "provpt", "num_prompts": 2, "dropout": 0.0, "relocation": relocation}
        trial = tiny_trial(method, epochs=2, lr=1e-9, batch_size=len(tiny_data.train), grad_clip=None)
        result = fit(trial, tiny_data)
        events[mode] = result.events["relocation"][0]
    a, r = events["accumulated"], events["reference"]
    torch.testing.assert_close(torch.tensor(a["block_idleness"]), torch.tensor(r["block_idleness"]), rtol=1e-3, atol=1e-7)
    assert a["loss"] == pytest.approx(r["loss"], rel=1e-4)
    assert a["moves"] == r["moves"]
