"""Checkpoints written by the real training stacks open as runs (``Run.from_checkpoints``).

Each layout is produced by its own library, not by hand: a tiny ``LightningModule`` trained a
few steps by ``lightning.Trainer`` with a ``ModelCheckpoint`` every 2 steps and a
``CSVLogger``; a tiny Hugging Face ``PreTrainedModel`` trained by ``transformers.Trainer``
(``checkpoint-N/`` folders with ``trainer_state.json``); files written by
``safetensors.torch.save_file``; hand-written loop records of a ``torch.compile``d module
wrapped in ``DataParallel`` (keys ``module._orig_mod.``). Each opens, lists the right steps,
loads weights bit-identical to the trained model's at that step and fills the metrics table,
with the loss / accuracy the stack logged beside richviz's metrics. A malicious pickle of each
format never runs, and the error names the file.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from richviz import datasets
from richviz.cli import main
from richviz.errors import ArgumentError, CheckpointError, MissingDependencyError, ModelError
from richviz.factories import make_factory
from richviz.runs import Run
from richviz.runs.formats import discover, fit_keys
from richviz.runs.formats.layouts import name_step
from richviz.runs.formats.logs import hf_log_history, metrics_at

HIDDEN = 8


def mlp(hidden: int = HIDDEN) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))


def moons_loader(batch: int = 25) -> torch.utils.data.DataLoader:
    d = datasets.load("moons")
    ds = torch.utils.data.TensorDataset(d.x_train[:100], d.y_train[:100])
    return torch.utils.data.DataLoader(ds, batch_size=batch)


def assert_same_weights(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k].cpu(), v.cpu()), k


def assert_metrics_filled(run: Run) -> list[dict]:
    rows = run.metrics(progress=False, device="cpu")
    assert [r["step"] for r in rows] == run.steps
    for r in rows:
        assert r["error"] is None
        assert math.isfinite(r["d_lr"]) and math.isfinite(r["probe_acc"])
    return rows


class Evil:
    """Pickles as a call of os.system creating ``marker``: it must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------- Lightning


@pytest.fixture(scope="module")
def lightning_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real Lightning run: 6 steps, a checkpoint every 2 (plus last.ckpt), a CSVLogger."""
    L = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    class Classifier(L.LightningModule):
        # a Path and a Namespace among the hyper-parameters: weights_only=True refuses both
        def __init__(self, hidden: int = HIDDEN, out_dir: Path = Path("/tmp"), opts=None):
            super().__init__()
            self.save_hyperparameters()
            self.model = mlp(hidden)

        def training_step(self, batch, i):
            x, y = batch
            out = self.model(x)
            loss = nn.functional.cross_entropy(out, y)
            self.log("train_loss", loss)
            self.log("train_acc", (out.argmax(1) == y).float().mean())
            return loss

        def validation_step(self, batch, i):
            x, y = batch
            out = self.model(x)
            self.log("val_loss", nn.functional.cross_entropy(out, y))
            self.log("val_acc", (out.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    class Snapshot(Callback):
        def on_train_batch_end(self, trainer, module, *args):
            snapshots[trainer.global_step] = copy.deepcopy(module.model.state_dict())

    root = tmp_path_factory.mktemp("lightning")
    trainer = L.Trainer(
        max_steps=6,
        enable_progress_bar=False,
        logger=CSVLogger(root),
        enable_model_summary=False,
        accelerator="cpu",
        log_every_n_steps=1,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        callbacks=[
            Snapshot(),
            ModelCheckpoint(every_n_train_steps=2, save_top_k=-1, save_last=True),
        ],
    )
    module = Classifier(opts=argparse.Namespace(lr=0.5, note="plain data"))
    trainer.fit(module, moons_loader(), moons_loader())
    version = root / "lightning_logs" / "version_0"
    return {"version": version, "snapshots": snapshots}


def test_lightning_run_opens_with_steps_weights_and_logged_metrics(lightning_run):
    version = lightning_run["version"]
    names = sorted(p.name for p in (version / "checkpoints").iterdir())
    assert names == [
        "epoch=0-step=2.ckpt",
        "epoch=0-step=4.ckpt",
        "epoch=1-step=6.ckpt",
        "last.ckpt",
    ]
    # the real files need more than weights_only: their hyper-parameters hold a Path, a Namespace
    with pytest.raises(Exception, match="(?i)unsupported global|weights_only"):
        torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)

    run = Run.from_checkpoints(version, mlp, data="moons")
    assert run.steps == [2, 4, 6]
    last = next(c for c in run.checkpoints if c.path.name == "last.ckpt")
    assert not last.readable and "duplicate of step 6" in last.error
    for step in run.steps:
        ck = run.checkpoint(step)
        assert ck.meta["format"] == "lightning" and ck.meta["step_source"] == "record"
        assert_same_weights(run.load(step, device="cpu"), lightning_run["snapshots"][step])

    # the CSVLogger's rows: the row at CSV step s describes the model after s + 1 steps
    with open(version / "metrics.csv", newline="") as f:
        logged = list(csv.DictReader(f))
    for step in run.steps:
        val = [r for r in logged if r["val_acc"] and int(r["step"]) == step - 1]
        train = [r for r in logged if r["train_loss"] and int(r["step"]) == step - 1]
        meta = run.checkpoint(step).meta
        assert meta["test_acc"] == pytest.approx(float(val[-1]["val_acc"]))
        assert meta["test_loss"] == pytest.approx(float(val[-1]["val_loss"]))
        assert meta["train_loss"] == pytest.approx(float(train[-1]["train_loss"]))
        assert meta["logged"]["val_acc"] == meta["test_acc"]

    rows = assert_metrics_filled(run)
    for r in rows:
        assert r["test_acc"] == pytest.approx(run.checkpoint(r["step"]).meta["test_acc"])
        assert r["epoch"] == run.checkpoint(r["step"]).meta["epoch"]


def test_lightning_folder_forms(lightning_run):
    """The version folder, its checkpoints/ folder and one .ckpt file all open."""
    version = lightning_run["version"]
    assert Run.from_checkpoints(version / "checkpoints", mlp).steps == [2, 4, 6]
    assert Run.from_checkpoints(version.parent.parent, mlp).steps == [2, 4, 6]  # the root
    one = Run.from_checkpoints(version / "checkpoints" / "epoch=0-step=4.ckpt", mlp)
    assert one.steps == [4] and one.checkpoint(4).meta["test_acc"] >= 0


def test_lightning_malicious_entry_never_runs(lightning_run, tmp_path):
    """A real Lightning record with a payload in hyper_parameters: refused, named, never run."""
    src = lightning_run["version"] / "checkpoints" / "epoch=0-step=2.ckpt"
    record = torch.load(src, weights_only=False)  # the test's own trusted file
    marker = tmp_path / "pwned"
    record["hyper_parameters"]["callback"] = Evil(marker)
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save(record, folder / "epoch=0-step=2.ckpt")
    shutil.copy(lightning_run["version"] / "checkpoints" / "epoch=0-step=4.ckpt", folder)

    run = Run.from_checkpoints(folder, mlp)
    bad = run.checkpoints[0]
    assert not bad.readable and run.steps == [4]
    assert str(folder / "epoch=0-step=2.ckpt") in bad.error
    assert "'hyper_parameters'" in bad.error and "system" in bad.error
    assert "re-save" in bad.error.lower() and "\n" not in bad.error
    with pytest.raises(CheckpointError, match="epoch=0-step=2.ckpt"):
        run.load(2)
    assert not marker.exists()


# --------------------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def hf_classes():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")

    class TinyConfig(transformers.PretrainedConfig):
        model_type = "richviz_tiny_mlp"

        def __init__(self, hidden: int = HIDDEN, **kwargs):
            self.hidden = hidden
            super().__init__(**kwargs)

    class TinyMLP(transformers.PreTrainedModel):
        config_class = TinyConfig

        def __init__(self, config):
            super().__init__(config)
            self.net = mlp(config.hidden)

        def forward(self, x, labels=None):
            logits = self.net(x)
            if labels is None:
                return logits
            return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}

    return TinyConfig, TinyMLP


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory: pytest.TempPathFactory, hf_classes) -> dict:
    """A real transformers.Trainer run: 6 steps, checkpoint-2/4/6, eval every 2 steps."""
    import transformers

    TinyConfig, TinyMLP = hf_classes
    d = datasets.load("moons")

    class Points(torch.utils.data.Dataset):
        def __len__(self):
            return 100

        def __getitem__(self, i):
            return {"x": d.x_train[i], "labels": d.y_train[i]}

    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    class Snapshot(transformers.TrainerCallback):
        def on_save(self, args, state, control, model=None, **kw):
            snapshots[state.global_step] = copy.deepcopy(model.state_dict())

    out = tmp_path_factory.mktemp("hf") / "out"
    args = transformers.TrainingArguments(
        str(out),
        max_steps=6,
        save_steps=2,
        save_strategy="steps",
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        per_device_train_batch_size=25,
        learning_rate=0.1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=TinyMLP(TinyConfig()),
        args=args,
        train_dataset=Points(),
        eval_dataset=Points(),
        compute_metrics=lambda p: {
            "accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())
        },
        callbacks=[Snapshot()],
    )
    trainer.train()
    return {"out": out, "snapshots": snapshots, "factory": lambda: TinyMLP(TinyConfig())}


def test_huggingface_checkpoints_open_with_log_history(hf_run):
    out = hf_run["out"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-6",
    ]
    run = Run.from_checkpoints(out, hf_run["factory"], data="moons")
    assert run.steps == [2, 4, 6]
    assert run.manifest["source"]["layout"] == "huggingface"
    history = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    for step in run.steps:
        ck = run.checkpoint(step)
        assert ck.path == out / f"checkpoint-{step}" / "model.safetensors"
        assert ck.meta["step_source"] == "trainer_state"
        assert_same_weights(run.load(step, device="cpu"), hf_run["snapshots"][step])
        ev = [e for e in history if "eval_loss" in e and e["step"] == step][-1]
        tr = [e for e in history if "loss" in e and e["step"] == step][-1]
        assert ck.meta["test_loss"] == pytest.approx(ev["eval_loss"])
        assert ck.meta["test_acc"] == pytest.approx(ev["eval_accuracy"])
        assert ck.meta["train_loss"] == pytest.approx(tr["loss"])
    rows = assert_metrics_filled(run)
    assert [r["test_acc"] for r in rows] == [run.checkpoint(s).meta["test_acc"] for s in run.steps]
    # one checkpoint-N folder opens on its own
    assert Run.from_checkpoints(out / "checkpoint-4", hf_run["factory"]).steps == [4]


def test_huggingface_pytorch_model_bin(hf_run, tmp_path):
    """Older transformers wrote ``torch.save(state_dict, "pytorch_model.bin")``; it opens too."""
    out = tmp_path / "bin"
    for step in (2, 4):
        src = hf_run["out"] / f"checkpoint-{step}"
        dst = out / f"checkpoint-{step}"
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
        torch.save(hf_run["snapshots"][step], dst / "pytorch_model.bin")
    run = Run.from_checkpoints(out, hf_run["factory"])
    assert run.steps == [2, 4]
    assert run.checkpoint(2).path.name == "pytorch_model.bin"
    assert_same_weights(run.load(4, device="cpu"), hf_run["snapshots"][4])


def save_sharded(hf_run: dict, out: Path, steps: list[int], kind: str) -> Path:
    """``checkpoint-N/`` folders (the Trainer's, weights removed) holding a sharded model:
    ``save_pretrained(max_shard_size=100)`` writes safetensors shards and their index; the
    ``.bin`` shards older transformers wrote are made the way it made them,
    ``huggingface_hub.split_torch_state_dict_into_shards`` then ``torch.save`` per shard."""
    for step in steps:
        dst = out / f"checkpoint-{step}"
        shutil.copytree(
            hf_run["out"] / dst.name, dst, ignore=shutil.ignore_patterns("model.safetensors")
        )
        sd = hf_run["snapshots"][step]
        if kind == "safetensors":
            model = hf_run["factory"]()
            model.load_state_dict(sd)
            model.save_pretrained(dst, max_shard_size=100)
            index = dst / "model.safetensors.index.json"
        else:
            huggingface_hub = pytest.importorskip("huggingface_hub")
            split = huggingface_hub.split_torch_state_dict_into_shards(
                sd, filename_pattern="pytorch_model{suffix}.bin", max_shard_size=100
            )
            for name, keys in split.filename_to_tensors.items():
                torch.save({k: sd[k].contiguous() for k in keys}, dst / name)
            index = dst / "pytorch_model.bin.index.json"
            index.write_text(
                json.dumps({"metadata": split.metadata, "weight_map": split.tensor_to_filename})
            )
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        assert len(shards) >= 2 and all((dst / n).is_file() for n in shards)
        assert not (dst / "model.safetensors").exists()
    return out


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_huggingface_sharded_checkpoints_open(hf_run, tmp_path, kind):
    out = save_sharded(hf_run, tmp_path / kind, [2, 4], kind)
    index = (
        "model.safetensors.index.json" if kind == "safetensors" else "pytorch_model.bin.index.json"
    )
    run = Run.from_checkpoints(out, hf_run["factory"], data="moons")
    assert run.steps == [2, 4] and run.manifest["source"]["layout"] == "huggingface"
    for step in run.steps:
        ck = run.checkpoint(step)
        assert ck.path == out / f"checkpoint-{step}" / index
        assert ck.meta["step_source"] == "trainer_state" and "test_loss" in ck.meta
        assert_same_weights(run.load(step, device="cpu"), hf_run["snapshots"][step])
    assert_metrics_filled(run)
    # one sharded checkpoint-N folder opens on its own
    assert Run.from_checkpoints(out / "checkpoint-4", hf_run["factory"]).steps == [4]


def test_save_pretrained_folder_of_shards_is_one_checkpoint(hf_run, tmp_path):
    model = hf_run["factory"]()
    model.load_state_dict(hf_run["snapshots"][6])
    model.save_pretrained(tmp_path / "final_model", max_shard_size=100)  # no trainer state
    assert len(list((tmp_path / "final_model").glob("model-*.safetensors"))) >= 2
    run = Run.from_checkpoints(tmp_path / "final_model", hf_run["factory"])
    (ck,) = run.checkpoints  # the shards are one checkpoint, never one each
    assert ck.readable and ck.path.name == "model.safetensors.index.json"
    assert_same_weights(run.load(ck.step, device="cpu"), hf_run["snapshots"][6])


def test_rewritten_shard_makes_the_cached_metrics_stale(hf_run, tmp_path):
    st = pytest.importorskip("safetensors.torch")
    out = save_sharded(hf_run, tmp_path / "st", [2, 4], "safetensors")
    run = Run.from_checkpoints(out, hf_run["factory"], data="moons")
    rows = assert_metrics_filled(run)
    assert run.pending_metrics() == []
    ck = run.checkpoint(4)
    index_bytes, fingerprint, digest = ck.path.read_bytes(), ck.fingerprint(), ck.content_hash()
    # the last shard of step 4 now holds step 2's weights; the index is not touched
    weight_map = json.loads(ck.path.read_text())["weight_map"]
    last = max(set(weight_map.values()))
    keys = [k for k, name in weight_map.items() if name == last]
    st.save_file({k: hf_run["snapshots"][2][k] for k in keys}, ck.path.parent / last)
    assert ck.path.read_bytes() == index_bytes
    assert ck.fingerprint() != fingerprint and ck.content_hash() != digest
    again = Run.from_checkpoints(out, hf_run["factory"], data="moons")
    assert again.pending_metrics() == [4]  # step 2 (the init) kept its row
    mixed = again.load(4, device="cpu").state_dict()
    for k in keys:
        assert torch.equal(mixed[k], hf_run["snapshots"][2][k])
    new = again.metrics(progress=False, device="cpu")
    assert new[0] == rows[0] and new[1]["d_lr"] != rows[1]["d_lr"]


def _index_error(hf_run, tmp_path, edit) -> str:
    """The one-line reason a sharded checkpoint-2 is unreadable once ``edit(index)`` ran."""
    out = save_sharded(hf_run, tmp_path / "bad", [2], "safetensors")
    index = out / "checkpoint-2" / "model.safetensors.index.json"
    edit(index)
    run = Run.from_checkpoints(out, hf_run["factory"])
    (ck,) = run.checkpoints
    assert not ck.readable and ck.error.startswith(f"{index}: ") and "\n" not in ck.error
    with pytest.raises(CheckpointError, match="index.json"):
        run.load(2)
    return ck.error


def _weight_map_with(index: Path, **changes: str) -> None:
    data = json.loads(index.read_text())
    data["weight_map"].update(changes)
    index.write_text(json.dumps(data))


NOT_BESIDE = "is not a shard file name beside the index"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"net.0.weight": "../secret.safetensors"}, f"'../secret.safetensors' {NOT_BESIDE}"),
        ({"net.0.weight": "/etc/passwd.bin"}, f"'/etc/passwd.bin' {NOT_BESIDE}"),
        ({"net.0.weight": "sub/model.safetensors"}, f"'sub/model.safetensors' {NOT_BESIDE}"),
        ({"net.0.weight": "notes.txt"}, f"'notes.txt' {NOT_BESIDE}"),
        (
            {"net.2.bias": "model-00009-of-00009.safetensors"},
            "shard model-00009-of-00009.safetensors named by the index is missing",
        ),
        (
            {"net.9.weight": "model-00001-of-00002.safetensors"},
            "shard model-00001-of-00002.safetensors lacks 1 weight(s) the index puts ",
        ),
    ],
)
def test_hostile_weight_maps_are_listed_unreadable(hf_run, tmp_path, change, expected):
    error = _index_error(hf_run, tmp_path, lambda index: _weight_map_with(index, **change))
    assert expected in error


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (json.dumps({"metadata": {}, "weights": {}}), "shard index has no 'weight_map' object"),
        ('{"weight_map": ', "not a readable shard index"),
    ],
)
def test_index_that_is_no_weight_map_is_listed_unreadable(hf_run, tmp_path, text, expected):
    error = _index_error(hf_run, tmp_path, lambda index: index.write_text(text))
    assert expected in error


def test_shard_linking_out_of_its_folder_is_refused(hf_run, tmp_path):
    outside = tmp_path / "outside.safetensors"  # the right tensors, out of the folder
    shutil.copy(hf_run["out"] / "checkpoint-2" / "model.safetensors", outside)
    link = "model-00003-of-00003.safetensors"

    def edit(index: Path) -> None:
        _weight_map_with(index, **{"net.0.weight": link})
        (index.parent / link).symlink_to(outside)

    error = _index_error(hf_run, tmp_path, edit)
    assert f"shard {link} links to a file outside its folder; refused" in error


def test_oversized_shard_index_is_refused_before_it_is_read(hf_run, tmp_path, monkeypatch):
    from richviz.runs import shards

    monkeypatch.setattr(shards, "MAX_INDEX_BYTES", 64)
    error = _index_error(hf_run, tmp_path, lambda index: None)
    assert "MiB, more than the" in error


def test_index_naming_too_many_shards_is_refused_before_any_is_looked_at(hf_run, tmp_path):
    from richviz.runs import shards

    many = {f"w{i}": f"model-{i:06d}-of-{shards.MAX_SHARDS + 1:06d}.safetensors"
            for i in range(shards.MAX_SHARDS + 1)}  # fmt: skip
    error = _index_error(
        hf_run, tmp_path, lambda index: index.write_text(json.dumps({"weight_map": many}))
    )
    assert f"names {shards.MAX_SHARDS + 1:,} shards, more than {shards.MAX_SHARDS:,}" in error


def test_sharded_bin_with_a_malicious_pickle_never_runs(hf_run, tmp_path):
    marker = tmp_path / "pwned"
    out = save_sharded(hf_run, tmp_path / "bin", [2], "bin")
    shard = out / "checkpoint-2" / "pytorch_model-00002-of-00002.bin"
    torch.save({**torch.load(shard, weights_only=True), "extra": Evil(marker)}, shard)
    run = Run.from_checkpoints(out, hf_run["factory"])
    (ck,) = run.checkpoints
    assert not ck.readable and str(shard) in ck.error and "\n" not in ck.error
    with pytest.raises(CheckpointError, match="pytorch_model-00002-of-00002.bin"):
        run.load(2)
    assert not marker.exists()


def test_huggingface_malicious_bin_never_runs(hf_run, tmp_path):
    marker = tmp_path / "pwned"
    dst = tmp_path / "evil" / "checkpoint-2"
    shutil.copytree(
        hf_run["out"] / "checkpoint-2", dst, ignore=shutil.ignore_patterns("model.safetensors")
    )
    torch.save({**hf_run["snapshots"][2], "net.extra": Evil(marker)}, dst / "pytorch_model.bin")
    run = Run.from_checkpoints(dst.parent, hf_run["factory"])
    (ck,) = run.checkpoints
    assert not ck.readable and str(dst / "pytorch_model.bin") in ck.error
    assert "system" in ck.error
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        run.load(2)
    assert not marker.exists()


def test_huggingface_factory_from_config_json_needs_a_known_class(hf_run):
    with pytest.raises(ModelError, match="TinyMLP.*factory="):
        Run.from_checkpoints(hf_run["out"])


# --------------------------------------------------------------------------- safetensors


def _train_steps(model: nn.Module, steps: list[int]):
    """SGD on moons, yielding (step, state dict copy) at each step in ``steps`` (0 = init)."""
    d = datasets.load("moons")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(max(steps) + 1):
        if step in steps:
            yield step, {k: v.detach().clone() for k, v in model.state_dict().items()}
        loss = nn.functional.cross_entropy(model(d.x_train), d.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_safetensors_files(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    named, meta_dir = tmp_path / "named", tmp_path / "meta"
    named.mkdir()
    meta_dir.mkdir()
    saved = dict(_train_steps(mlp(), [0, 3, 10]))
    for step, sd in saved.items():
        st.save_file(sd, named / f"model_step{step}.safetensors")
        # the step in the file's own metadata wins over the name
        st.save_file(
            sd, meta_dir / f"weights-{step + 100}.safetensors", metadata={"step": str(step)}
        )
    for folder in (named, meta_dir):
        run = Run.from_checkpoints(folder, mlp, data="moons")
        assert run.steps == [0, 3, 10]
        for step in run.steps:
            assert run.checkpoint(step).meta["format"] == "safetensors"
            assert_same_weights(run.load(step, device="cpu"), saved[step])
        assert_metrics_filled(run)
    assert Run.from_checkpoints(meta_dir, mlp).checkpoint(3).meta["step_source"] == "record"


def test_safetensors_malicious_pickle_never_runs(tmp_path):
    pytest.importorskip("safetensors")
    marker = tmp_path / "pwned"
    folder = tmp_path / "st"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(pickle.dumps(Evil(marker)))
    torch.save({"evil": Evil(marker)}, folder / "step_1.safetensors")  # a zip pickle, renamed
    run = Run.from_checkpoints(folder, mlp)
    assert run.steps == []
    for ck in run.checkpoints:
        assert not ck.readable and str(ck.path) in ck.error and "safetensors" in ck.error
    assert not marker.exists()


# --------------------------------------------------------------------------- plain loops


def test_loop_records_with_compile_and_dataparallel_prefixes(tmp_path):
    """``{"model", "optimizer", "epoch", "step"}`` of DataParallel(torch.compile(model))."""
    model = mlp()
    wrapped = nn.DataParallel(torch.compile(model))
    assert next(iter(wrapped.state_dict())).startswith("module._orig_mod.")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    d = datasets.load("moons")
    saved = {}
    for epoch in range(1, 4):
        for _ in range(5):
            loss = nn.functional.cross_entropy(model(d.x_train), d.y_train)
            opt.zero_grad()
            loss.backward()
            opt.step()
        step = epoch * 5
        saved[step] = {k: v.clone() for k, v in model.state_dict().items()}
        record = {
            "model": wrapped.state_dict(),
            "optimizer": opt.state_dict(),
            "epoch": epoch,
            "step": step,
            "loss": loss.item(),
        }
        # the name says the epoch; the record's step wins
        torch.save(record, tmp_path / f"ckpt_e{epoch}.pt")
    torch.save(
        {"model_state_dict": torch.compile(model).state_dict(), "epoch": 3}, tmp_path / "last.pt"
    )

    run = Run.from_checkpoints(tmp_path, mlp, data="moons")
    assert run.steps == [5, 10, 15, 16]  # last.pt: no step in record or name -> after the others
    assert run.checkpoint(16).meta["step_source"] == "order"
    for step in (5, 10, 15):
        ck = run.checkpoint(step)
        assert ck.meta["epoch"] == step // 5 and ck.meta["step_source"] == "record"
        assert ck.meta["stripped_prefix"] == "module._orig_mod."
        assert ck.meta["train_loss"] == pytest.approx(ck.meta["loss"])
        assert_same_weights(run.load(step, device="cpu"), saved[step])
    assert_same_weights(run.load(16, device="cpu"), saved[15])
    assert run.checkpoint(16).meta["stripped_prefix"] == "_orig_mod."
    assert_metrics_filled(run)


def test_loop_malicious_optimizer_entry_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(
        {"model": mlp().state_dict(), "optimizer": Evil(marker), "step": 3}, tmp_path / "a.pt"
    )
    with open(tmp_path / "b_step4.pt", "wb") as f:  # a plain (non-zip) pickle
        pickle.dump({"model": {}, "x": Evil(marker)}, f)
    run = Run.from_checkpoints(tmp_path, mlp)
    assert run.steps == []
    a, b = sorted(run.checkpoints, key=lambda c: c.path.name)
    assert str(tmp_path / "a.pt") in a.error and "'optimizer'" in a.error and "system" in a.error
    assert str(tmp_path / "b_step4.pt") in b.error and "system" in b.error
    assert not marker.exists()


def test_key_mismatch_is_one_line_naming_keys(tmp_path):
    torch.save({"model": nn.Linear(2, 2).state_dict(), "step": 1}, tmp_path / "x.pt")
    (ck,) = Run.from_checkpoints(tmp_path, mlp).checkpoints
    assert "missing ['0.weight'" in ck.error and "unexpected ['weight'" in ck.error
    assert "\n" not in ck.error
    torch.save({"state_dict": mlp(hidden=4).state_dict()}, tmp_path / "x.pt")
    (ck,) = Run.from_checkpoints(tmp_path, mlp).checkpoints
    assert "has shape (4, 2), the model expects (8, 2)" in ck.error


def test_prefix_removed_only_when_it_makes_the_keys_match():
    ref = mlp().state_dict()
    sd = {f"model.{k}": v for k, v in ref.items()}
    assert fit_keys(sd, ref)[1] == "model."
    assert fit_keys(dict(ref), ref)[1] == ""
    # "0.weight" also ends "10.weight"-like keys: only a '.'-boundary prefix is a candidate
    other = {f"model.1{k}": v for k, v in ref.items()}
    assert fit_keys(other, ref) == (other, "")
    # a prefix whose stripped keys do not fit (missing one) is not taken
    partial = {f"model.{k}": v for k, v in list(ref.items())[:-1]}
    assert fit_keys(partial, ref)[1] == ""


def test_logged_metrics_at_a_step(tmp_path):
    state = {
        "global_step": 4,
        "log_history": [
            {"step": 2, "loss": 0.5, "epoch": 1.0},
            {"step": 4, "loss": 0.3, "eval_loss": 0.4, "eval_accuracy": 0.9},
            {"step": 4, "train_runtime": 1.0, "train_loss": 0.45},  # summary: a mean, skipped
        ],
    }
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    rows, step = hf_log_history(tmp_path / "trainer_state.json")
    assert step == 4 and len(rows) == 2
    at4 = metrics_at(rows, 4)
    assert (at4["train_loss"], at4["test_loss"], at4["test_acc"]) == (0.3, 0.4, 0.9)
    assert metrics_at(rows, 3) == {
        "logged": {"epoch": 1.0, "loss": 0.5},
        "train_loss": 0.5,
        "epoch": 1,
    }
    assert metrics_at(rows, 1) == {}
    assert metrics_at(rows, 3, offset=1)["train_loss"] == 0.5  # a CSVLogger row at 2 is step 3


def test_name_steps():
    assert name_step("epoch=3-step=1200") == (1200, 3)
    assert name_step("ckpt_e10") == (10, 10)
    assert name_step("model_step1000") == (1000, None)
    assert name_step("last") == (None, None)


def test_no_checkpoints_and_missing_factory(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints"):
        discover(tmp_path)
    torch.save(mlp().state_dict(), tmp_path / "a.pt")
    with pytest.raises(ModelError, match="factory= is needed"):
        Run.from_checkpoints(tmp_path)
    with pytest.raises(ModelError, match="model instance"):
        Run.from_checkpoints(tmp_path, mlp())


# --------------------------------------------------------------------------- factories and CLI


def test_factories_build_without_downloading():
    model = make_factory("torchvision:resnet18", num_classes=3)()
    assert model.fc.out_features == 3
    assert "resnet18" in make_factory("torchvision:resnet18").__qualname__
    with pytest.raises(ArgumentError, match="resnet18"):
        make_factory("torchvision:resnet1")
    assert isinstance(make_factory("torch.nn:Identity")(), nn.Identity)
    with pytest.raises(ArgumentError, match="factory="):
        make_factory("resnet18")
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="pip install timm"):
            make_factory("timm:resnet18")
    else:
        assert isinstance(make_factory("timm:resnet18", num_classes=2)(), nn.Module)


def test_cli_info_and_metrics_with_factory(lightning_run, tmp_path, capsys):
    factory = tmp_path / "mine.py"
    factory.write_text(
        "import torch\nfrom torch import nn\n\n"
        f"def build():\n    return nn.Sequential(nn.Linear(2, {HIDDEN}), nn.Tanh(), "
        f"nn.Linear({HIDDEN}, 2))\n"
    )
    folder = tmp_path / "copy"
    shutil.copytree(lightning_run["version"], folder)
    spec = f"{factory}:build"
    assert main(["info", str(folder), "--factory", spec]) == 0
    out = capsys.readouterr().out
    assert "lightning" in out and "epoch=0-step=4.ckpt" in out
    assert "4 checkpoints, 1 unreadable" in out
    assert main(["metrics", str(folder), "--factory", spec, "--data", "moons", "-q"]) == 0
    out = capsys.readouterr().out
    assert "d_lr" in out and "test_acc" in out
    lines = [line.split() for line in out.splitlines()]
    table = [row for row in lines if len(row) > 2 and row[0].isdigit() and row[1] != "-"]
    assert [row[0] for row in table] == ["2", "4", "6"]
    assert main(["info", str(folder / "nothing"), "--factory", spec]) == 1
    assert "error:" in capsys.readouterr().err
    assert main(["metrics", str(folder), "--factory", spec]) == 1
    assert "--data NAME is needed" in capsys.readouterr().err
    assert main(["info", str(folder)]) == 1  # no run.json, no --factory: says what to pass
    assert "not a richviz run" in capsys.readouterr().err
