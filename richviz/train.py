"""Reference trainer: writes checkpoint runs for the presets (lazy/rich by output scale alpha).

The recipes (:class:`Config`, :data:`PRESETS`) live in :mod:`richviz.presets` and are
re-exported here.

Lazy vs rich follows Chizat, Oyallon & Bach: with ``alpha`` set the model is
``alpha * (f(x) - f0(x))`` (:class:`richviz.architectures.Centered`) and the learning rate is
divided by ``alpha**2`` (SGD) or ``alpha`` (Adam/AdamW, whose steps do not scale with the
gradient), so the function moves at the same speed for every alpha: large alpha is lazy, small
alpha is rich. Checkpoints are saved at log-spaced steps, step 0 always.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from richviz import datasets, validation
from richviz.architectures import build_model
from richviz.devices import check_device, module_device, to_device
from richviz.errors import ArgumentError
from richviz.optimizers import make_optimizer
from richviz.presets import ALPHA_RANGE, PRESETS, Config, _check_fractions, resolve  # noqa: F401
from richviz.progress import reporter
from richviz.runs import Run, RunWriter, check_run_folder

__all__ = [
    "PRESETS",
    "checkpoint_steps",
    "Config",
    "evaluate",
    "resolve",
    "train",
]


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """About ``n`` log-spaced steps in [0, steps]: always 0, 1 and ``steps``, no duplicates."""
    validation.check_int(steps, "steps", low=1)
    validation.check_int(n, "n", low=2)
    pts = {0, steps}
    if n > 2:
        for k in range(n - 1):
            pts.add(int(round(math.exp(math.log(steps) * k / (n - 2)))))
    return sorted(p for p in pts if 0 <= p <= steps)


def _loss(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "ce":
        return F.cross_entropy(out, y)
    target = F.one_hot(y, out.shape[1]).to(out.dtype)
    return 0.5 * ((out - target) ** 2).sum(1).mean()


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, chunk: int = 1000
) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on (x, y), evaluated in chunks in eval mode.

    Each chunk is moved to the model's device (x and y may live on the CPU)."""
    was_training = model.training
    model.eval()
    dev = module_device(model)
    total_loss, correct = 0.0, 0
    for i in range(0, len(x), chunk):
        out = model(to_device(x[i : i + chunk], dev))
        yy = to_device(y[i : i + chunk], dev)
        total_loss += float(_loss(loss, out, yy)) * len(yy)
        correct += int((out.argmax(1) == yy).sum())
    model.train(was_training)
    return total_loss / len(x), correct / len(x)


class CatapultWarning(UserWarning):
    """The SGD step exceeds the stable bound 2 (1 + momentum) / lambda_max at initialisation."""


def train_subset(n: int, fraction: float, seed: int) -> torch.Tensor:
    """Indices of the round(fraction * n) (at least 1) training samples kept, fixed by ``seed``."""
    _check_fractions(fraction, None)
    k = max(1, int(round(fraction * n)))
    if k >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(10007 + seed)
    return torch.randperm(n, generator=gen)[:k].sort().values


def flip_labels(y: torch.Tensor, fraction: float, num_classes: int, seed: int) -> torch.Tensor:
    """A copy of ``y`` with exactly round(fraction * n) labels moved to another class.

    The flipped samples and their new classes (uniform over the other C - 1) are fixed by
    ``seed``; ``fraction`` = 0 returns an unchanged copy.
    """
    _check_fractions(None, fraction)
    y = y.clone()
    k = int(round(fraction * len(y)))
    if k == 0 or num_classes < 2:
        return y
    gen = torch.Generator().manual_seed(20011 + seed)
    idx = torch.randperm(len(y), generator=gen)[:k]
    shift = torch.randint(1, num_classes, (k,), generator=gen)
    y[idx] = (y[idx].cpu() + shift).remainder(num_classes).to(y.device)
    return y


def sharpness(
    model: nn.Module, loss: str, x: torch.Tensor, y: torch.Tensor, iters: int = 20
) -> float:
    """Largest Hessian eigenvalue lambda_max of the mean ``loss`` ('ce' or 'mse') at (x, y).

    Power iteration on exact Hessian-vector products (double backward), ``iters`` of them,
    from a fixed random start; returns the Rayleigh quotient v^T H v of the last iterate.
    Gradient descent with step eta (momentum beta) is stable near this point only while
    eta lambda_max < 2 (1 + beta); beyond it the loss first rises (a catapult) or diverges.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = {k: b.clone() for k, b in model.named_buffers()}  # BatchNorm statistics
    try:
        grads = torch.autograd.grad(_loss(loss, model(x), y), params, create_graph=True)
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
    gen = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=gen).to(p) for p in params]
    lam = 0.0
    for _ in range(iters):
        norm = torch.sqrt(sum((t * t).sum() for t in v))
        v = [t / norm for t in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        lam = float(sum((a * b).sum() for a, b in zip(v, hv, strict=True)))
        v = [t.detach() for t in hv]
    return lam


SHARPNESS_SAMPLES = 1024
"""Training samples (a fixed subset) on which the stability check measures the sharpness."""

CATAPULT_RTOL = 1e-3
"""A full-batch SGD step that raises the loss by more than this (relative) is a catapult."""


def _catapult(
    model: nn.Module,
    cfg: Config,
    opt: Any,
    lr: float,
    x: torch.Tensor,
    y: torch.Tensor,
    step: int,
    before: float,
    after: float,
    cap_lr: bool,
) -> float:
    """Warn about (or, with ``cap_lr``, cap the step after) a loss rise; return the new lr."""
    lam = sharpness(model, cfg.loss, *_subset(x, y, SHARPNESS_SAMPLES))
    stable = 2.0 * (1.0 + cfg.momentum) / lam if lam > 0 else math.inf
    if cap_lr and lr > stable:
        lr = 0.9 * stable
        for group in opt.param_groups:
            group["lr"] = lr
        return lr
    if not cap_lr:
        warnings.warn(
            f"alpha={cfg.alpha:g}: catapult at step {step} (full-batch loss {before:.4g} -> "
            f"{after:.4g}): the SGD step lr/alpha^2 = {lr:.3g} exceeds the stable bound "
            f"2(1+momentum)/lambda_max = {stable:.3g} there (sharpness {lam:.3g}). Use a "
            f"larger alpha, a smaller lr, or cap_lr (--cap-lr)",
            CatapultWarning,
            stacklevel=3,
        )
    return lr


def _subset(
    x: torch.Tensor, y: torch.Tensor, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if limit is None or len(x) <= limit:
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:limit]
    return x[idx], y[idx]


def _initial_lr(
    model: nn.Module, cfg: Config, x: torch.Tensor, y: torch.Tensor, cap_lr: bool
) -> tuple[float, float, float]:
    """(lr, lambda_max, stable bound) at step 0: ``cfg.effective_lr``, checked for an
    alpha-scaled SGD run against 2 (1 + momentum) / lambda_max (capped to 0.9 of it with
    ``cap_lr``, else a :class:`CatapultWarning`); lambda_max and the bound are nan otherwise."""
    lr = cfg.effective_lr
    lam = stable = math.nan
    if cfg.alpha is not None and cfg.optimizer == "sgd":
        lam = sharpness(model, cfg.loss, *_subset(x, y, SHARPNESS_SAMPLES))
        stable = 2.0 * (1.0 + cfg.momentum) / lam if lam > 0 else math.inf
        if lr > stable:
            if cap_lr:
                lr = 0.9 * stable
            else:
                warnings.warn(
                    f"alpha={cfg.alpha:g}: the SGD step lr/alpha^2 = {lr:.3g} exceeds the "
                    f"stable bound 2(1+momentum)/lambda_max = {stable:.3g} at initialisation "
                    f"(sharpness {lam:.3g}): expect a catapult (the loss rises) or divergence. "
                    f"Use a larger alpha, lr <= {stable * cfg.alpha**2:.3g}, or cap_lr "
                    f"(--cap-lr)",
                    CatapultWarning,
                    stacklevel=3,
                )
    return lr, lam, stable


def _optimizer(cfg: Config, params: list[nn.Parameter], lr: float) -> Any:
    """The recipe's optimizer (SGD with momentum, Adam or AdamW) at learning rate ``lr``: on
    CPU :class:`richviz.optimizers.PlainOptimizer` (torch.optim's arithmetic, without its
    ~1 s import of ``torch._dynamo`` on the first step), else ``torch.optim``."""
    return make_optimizer(
        cfg.optimizer, params, lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def _manifest(
    name: str,
    cfg: Config,
    spec: dict[str, Any],
    data_kwargs: dict[str, Any],
    seed: int,
    rates: tuple[float, float, float],
    save_at: list[int],
    dev: torch.device,
) -> dict[str, Any]:
    """The run's manifest: recipe, architecture, data, seed, hyper-parameters, device.

    ``rates`` = (effective lr, lambda_max at init, stable lr) from :func:`_initial_lr`.
    """
    lr, lam, stable = rates
    return {
        "preset": name,
        "description": cfg.description,
        "architecture": spec,
        "data": {"name": cfg.data, "kwargs": data_kwargs},
        "seed": seed,
        "hparams": {
            "loss": cfg.loss,
            "optimizer": cfg.optimizer,
            "lr": cfg.lr,
            "effective_lr": lr,
            "sharpness_init": lam if math.isfinite(lam) else None,
            "stable_lr": stable if math.isfinite(stable) else None,
            "lr_capped": bool(lr != cfg.effective_lr),
            "train_fraction": cfg.train_fraction,
            "label_noise": cfg.label_noise,
            "momentum": cfg.momentum,
            "weight_decay": cfg.weight_decay,
            "batch_size": cfg.batch_size,
            "steps": cfg.steps,
            "checkpoint_steps": save_at,
        },
        "device": str(dev),
        "torch": torch.__version__,
    }


def _checked_overrides(overrides: Any) -> dict[str, Any]:
    """``overrides`` as a dict of :class:`Config` fields; ArgumentError naming a wrong key."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ArgumentError(
            f"overrides must be a mapping of Config fields, got {type(overrides).__name__}"
        )
    fields = [f.name for f in dataclasses.fields(Config)]
    for key in overrides:
        if key not in fields:
            hint = f" (use train's {key}= argument)" if key in ("seed", "device") else ""
            raise ArgumentError(
                f"overrides: {key!r} is not a Config field{hint}; fields: {', '.join(fields)}"
            )
    return dict(overrides)


def train(
    preset_or_config: str | Config,
    out: str | os.PathLike,
    steps: int | None = None,
    alpha: float | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | Callable[[int, int], None] = True,
    data_root: str | None = None,
    data: datasets.Dataset | None = None,
    lr: float | None = None,
    train_fraction: float | None = None,
    label_noise: float | None = None,
    cap_lr: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> Run:
    """Train a preset (or a :class:`Config`) and write its run to ``out``; return the Run.

    ``steps``/``alpha``/``lr``/``train_fraction``/``label_noise`` override the preset's;
    ``seed`` fixes the initialisation, minibatch order, the training subset and the flipped
    labels (same seed, same device: same checkpoints). ``train_fraction`` keeps a seed-fixed
    subset of the training set; ``label_noise`` moves that fraction of its labels to another
    class (the run's probe set for metrics stays the clean data). ``data_root`` is the folder
    for image data (CIFAR-10). ``data`` reuses an already loaded Dataset matching the config.
    ``overrides`` sets any other :class:`Config` field (e.g. ``{"width": 64}``; the manifest
    keeps the preset's name).

    Stability: for an alpha-scaled SGD run the step lr / alpha^2 grows without bound as alpha
    shrinks, while the loss sharpness at initialisation does not shrink as fast (its
    alpha * residual * Hessian-of-f part scales as alpha, not alpha^2). The trainer measures
    lambda_max at step 0 (:func:`sharpness`, on up to ``SHARPNESS_SAMPLES`` training samples) and
    issues a :class:`CatapultWarning` when lr_eff lambda_max > 2 (1 + momentum); with
    ``cap_lr`` it lowers lr_eff to 0.9 of that bound instead. Both numbers go into the
    manifest (``hparams.sharpness_init``, ``hparams.stable_lr``).

    Every argument is checked before anything is written (a bad one raises
    :class:`~richviz.errors.ArgumentError`, a ``ValueError``, naming it and leaves no file
    behind). The manifest says ``"complete": false`` while training and ``true`` once the
    last checkpoint is saved.

    Examples
    --------
    Five steps of the ``xor`` preset into a temporary folder (checkpoints at log-spaced steps,
    step 0 always):

    >>> import os, shutil, tempfile
    >>> from richviz.train import train
    >>> folder = tempfile.mkdtemp()
    >>> run = train("xor", os.path.join(folder, "xor"), steps=5, progress=False, device="cpu")
    >>> run.steps, run.complete
    ([0, 1, 2, 3, 4, 5], True)
    >>> 0.0 <= run.checkpoint(5).meta["test_acc"] <= 1.0
    True
    >>> shutil.rmtree(folder)
    """
    name, cfg = resolve(preset_or_config)
    explicit = {
        "steps": steps,
        "alpha": alpha,
        "lr": lr,
        "train_fraction": train_fraction,
        "label_noise": label_noise,
    }
    changes = {
        **_checked_overrides(overrides),
        **{k: v for k, v in explicit.items() if v is not None},
    }
    if changes:
        cfg = dataclasses.replace(cfg, **changes)
    validation.check_int(seed, "seed", low=0, high=2**63 - 1)
    data_kwargs = dict(cfg.data_kwargs)
    if data_root is not None:
        data_kwargs["root"] = str(data_root)
    dev = check_device(device, types=("cpu", "cuda"), check_index=True, purpose=" for training")
    check_run_folder(out)
    if data is None:
        data = datasets.load(cfg.data, **data_kwargs)

    torch.manual_seed(seed)
    spec = {"name": cfg.arch, "kwargs": cfg.arch_kwargs, "alpha": cfg.alpha}
    model = build_model(spec).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]

    x_tr, y_tr = data.x_train.to(dev), data.y_train.to(dev)
    if cfg.train_fraction < 1:
        keep = train_subset(len(x_tr), cfg.train_fraction, seed).to(dev)
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if cfg.label_noise > 0:
        y_tr = flip_labels(y_tr, cfg.label_noise, data.num_classes, seed)

    lr, lam, stable = _initial_lr(model, cfg, x_tr, y_tr, cap_lr)
    opt = _optimizer(cfg, params, lr)
    save_at = checkpoint_steps(cfg.steps, cfg.checkpoints)
    manifest = _manifest(name, cfg, spec, data_kwargs, seed, (lr, lam, stable), save_at, dev)
    created = not os.path.exists(out)
    writer = RunWriter(out, manifest)

    ev_tr = _subset(x_tr, y_tr, cfg.eval_limit)
    ev_te = _subset(data.x_test.to(dev), data.y_test.to(dev), cfg.eval_limit)
    n = len(x_tr)
    bs = n if cfg.batch_size is None else min(cfg.batch_size, n)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen).to(dev)  # CPU generator: same order on any device
    pos = 0

    # The loop stays in this function (~100 lines with the setup above): the step, the data
    # order, the catapult watch and the learning rate evolve together, and checkpoints are
    # written mid-loop; split into functions, that state would be passed back and forth.
    save_set = set(save_at)
    # full-batch SGD of an alpha-scaled model should lower the loss at every step
    watch = cfg.alpha is not None and cfg.optimizer == "sgd" and bs == n
    prev = math.nan
    bar, report = reporter(progress, cfg.steps, desc="train", unit="step")
    start = time.perf_counter()
    try:
        for step in range(cfg.steps + 1):
            if step in save_set:
                tl, ta = evaluate(model, *ev_tr, cfg.loss)
                vl, va = evaluate(model, *ev_te, cfg.loss)
                meta = {
                    "epoch": step * bs / n,
                    "train_loss": tl,
                    "train_acc": ta,
                    "test_loss": vl,
                    "test_acc": va,
                    "time": time.perf_counter() - start,
                    "lr": lr,
                }
                writer.save(step, model, meta)
            if step == cfg.steps:
                break
            if bs == n:
                xb, yb = x_tr, y_tr
            else:
                if pos + bs > n:
                    order, pos = torch.randperm(n, generator=gen).to(dev), 0
                idx = order[pos : pos + bs]
                pos += bs
                xb, yb = x_tr[idx], y_tr[idx]
            model.train()
            opt.zero_grad(set_to_none=True)
            batch_loss = _loss(cfg.loss, model(xb), yb)
            batch_loss.backward()
            if watch:
                now = float(batch_loss.detach())
                if math.isfinite(prev) and now > prev * (1.0 + CATAPULT_RTOL):
                    lr = _catapult(model, cfg, opt, lr, x_tr, y_tr, step, prev, now, cap_lr)
                    watch = cap_lr  # warn once; with cap_lr keep capping
                prev = now
            opt.step()
            report(step + 1)
        writer.finish()
    except BaseException:
        if not writer.manifest["checkpoints"]:  # failed before the first checkpoint
            writer.discard()
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(out)
        raise
    finally:
        if bar is not None:
            bar.close()
    return Run.open(out)
