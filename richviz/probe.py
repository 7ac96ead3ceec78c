"""Linear probes: a classifier head for feature extractors that have none.

Self-supervised and other headless models map inputs to features ``phi(x)`` (N, p) but have no
classifier, so there is no decision boundary to draw. A linear probe supplies one: multinomial
logistic regression (scikit-learn ``LogisticRegression``, L2 penalty ``1/(2 C) |W|^2``) on the
standardised features ``(phi - mean) / scale`` of a labelled probe set. The fitted standardiser
and weights fold into one ``nn.Linear`` acting on the raw features,

    logits = W ((phi - mean) / scale) + b = (W / scale) phi + (b - (W / scale) mean),

so ``nn.Sequential(feature_extractor, probe)`` is an ordinary classifier whose default feature
map (the input of its last ``nn.Linear``) is still ``phi``: ``decision_field`` and
``pullback_metric`` work on it unchanged. Two classes give one output column, the binary
logit ``z`` (class 1 where ``z > 0``), as scikit-learn's ``decision_function``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from richviz import validation
from richviz.devices import module_device, module_dtype
from richviz.errors import ArgumentError, ArgumentTypeError
from richviz.features import LOGITS, FeatureMap

__all__ = ["FeatureExtractor", "LinearProbe", "probe_classifier"]


class LinearProbe(nn.Linear):
    """A fitted linear probe: an ``nn.Linear`` (p -> C, or p -> 1 for two classes) on raw features.

    Attributes
    ----------
    weight, bias : the folded logistic-regression parameters (float64 after :meth:`fit`;
        ``.to(device, dtype)`` moves them like any module).
    classes : (C,) int64 buffer, the label of each output (scikit-learn's ``classes_``).
    """

    classes: torch.Tensor

    def __init__(self, in_features: int, classes: torch.Tensor, dtype: torch.dtype = torch.float64):
        classes = torch.as_tensor(classes, dtype=torch.int64)
        out = 1 if len(classes) == 2 else len(classes)
        super().__init__(in_features, out, dtype=dtype)
        self.register_buffer("classes", classes.clone())

    @classmethod
    def fit(
        cls,
        features: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray,
        *,
        C: float = 1.0,
        max_iter: int = 2000,
        standardize: bool = True,
    ) -> LinearProbe:
        """Fit logistic regression on ``features`` (N, p) and ``labels`` (N,) integer classes.

        ``C`` is scikit-learn's inverse regularisation strength; features are standardised
        (zero mean, unit variance per feature; constant features are left unscaled) unless
        ``standardize=False``. Fitted in float64 on the CPU; returns the probe in eval mode.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        x = validation.as_array(features, "features", 2).astype(np.float64)
        y = validation.as_array(labels, "labels", 1)
        if len(y) != len(x):
            raise ArgumentError(f"features has {len(x)} rows but labels has {len(y)}")
        validation.check_finite(x, "features")
        if not np.issubdtype(y.dtype, np.integer):
            raise ArgumentError(f"labels must be integer classes, got dtype {y.dtype}")
        if len(np.unique(y)) < 2:
            raise ArgumentError("labels must contain at least two classes")
        C = validation.finite_float(C, "C", low=0.0, low_open=True)
        max_iter = validation.positive_int(max_iter, "max_iter")
        scaler = StandardScaler(with_mean=standardize, with_std=standardize).fit(x)
        clf = LogisticRegression(C=C, max_iter=max_iter).fit(scaler.transform(x), y)
        mean = scaler.mean_ if standardize else np.zeros(x.shape[1])
        scale = scaler.scale_ if standardize else np.ones(x.shape[1])
        w = clf.coef_ / scale  # (C or 1, p)
        b = clf.intercept_ - w @ mean
        probe = cls(x.shape[1], torch.from_numpy(clf.classes_.astype(np.int64)))
        with torch.no_grad():
            probe.weight.copy_(torch.from_numpy(w))
            probe.bias.copy_(torch.from_numpy(b))
        probe.sklearn_ = (scaler, clf)  # the fitted estimators, for reference
        return probe.eval()

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted labels (N,) int64 (``classes[argmax]``; two classes: ``z > 0``)."""
        features = validation.as_float_tensor(features, "features", ndim=2)
        with torch.no_grad():
            z = self(features.to(device=self.weight.device, dtype=self.weight.dtype))
        idx = (z[:, 0] > 0).long() if z.shape[1] == 1 else z.argmax(1)
        return self.classes[idx]


class FeatureExtractor(nn.Module):
    """``x -> phi(x)`` (N, p) of ``model`` at ``layer`` as a module (for ``nn.Sequential``).

    ``layer``: None for the input of the model's last ``nn.Linear``, ``"logits"`` for its
    output, or a submodule name (see :class:`richviz.features.FeatureMap`).
    """

    def __init__(self, model: nn.Module, layer: str | None = None):
        super().__init__()
        self.model = model
        self.layer = LOGITS if layer is None and not _has_linear(model) else layer
        self._fm = FeatureMap(model, self.layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fm(x)


def _has_linear(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in model.modules())


def probe_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    layer: str | None = None,
    *,
    C: float = 1.0,
    max_iter: int = 2000,
    chunk_size: int = 1024,
) -> nn.Sequential:
    """``nn.Sequential(FeatureExtractor(model, layer), probe)``: a classifier for any model.

    The probe is fitted on the features of ``x`` (N, *input_shape) with labels ``y`` (N,)
    (e.g. ``run.probe()``), computed in chunks of ``chunk_size`` on the model's device, and
    placed on the model's device in its dtype. ``layer=None`` takes the input of the model's
    last ``nn.Linear`` or, for a model without one (a headless extractor), its output. The
    model's train/eval flags are left in eval mode, as for every feature map.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    chunk_size = validation.positive_int(chunk_size, "chunk_size")
    x = validation.as_float_tensor(x, "x")
    extractor = FeatureExtractor(model, layer)
    dev, dt = module_device(model), module_dtype(model)
    feats = []
    with torch.no_grad():
        for start in range(0, len(x), chunk_size):
            xb = x[start : start + chunk_size].to(device=dev, dtype=dt)
            feats.append(extractor(xb).double().cpu())
    features = torch.cat(feats) if feats else torch.empty(0, 0)
    probe = LinearProbe.fit(features, y, C=C, max_iter=max_iter).to(device=dev, dtype=dt)
    return nn.Sequential(extractor, probe).eval()
