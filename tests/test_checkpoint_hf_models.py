"""Hugging Face models saved by ``save_pretrained`` (tiny configs, nothing downloaded).

Without ``factory=`` the model is built from ``config.json``'s ``architectures`` class; a
weight that ``save_pretrained`` writes once for two modules (GPT-2's ``lm_head.weight`` tied
to ``transformer.wte.weight``) is filled in from its twin, so the state dict still fits.
"""

from __future__ import annotations

import pytest
import torch

from richviz.runs import Run

transformers = pytest.importorskip("transformers")


def assert_same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k].cpu(), v.cpu()), k


def test_model_built_from_its_config_json(tmp_path):
    config = transformers.BertConfig(
        vocab_size=30,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        max_position_embeddings=16,
        architectures=["BertForSequenceClassification"],
    )
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(tmp_path / "checkpoint-3")
    run = Run.from_checkpoints(tmp_path)
    assert run.steps == [3] and "BertForSequenceClassification" in run.manifest["factory"]
    assert run.checkpoint(3).meta["step_source"] == "name"
    assert_same_weights(run.load(3, device="cpu"), model.state_dict())


def test_tied_weights_left_out_by_save_pretrained(tmp_path):
    config = transformers.GPT2Config(
        vocab_size=30, n_embd=8, n_layer=1, n_head=2, n_positions=16, bos_token_id=0,
        eos_token_id=0, architectures=["GPT2LMHeadModel"],
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path / "checkpoint-5")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "checkpoint-5" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()  # noqa: SIM118
    run = Run.from_checkpoints(tmp_path, lambda: transformers.GPT2LMHeadModel(config))
    assert run.steps == [5], run.checkpoints[0].error
    loaded = run.load(5, device="cpu")
    assert_same_weights(loaded, model.state_dict())
    assert run.checkpoint(5).meta["tied_keys"] == ["lm_head.weight"]
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still one tensor
