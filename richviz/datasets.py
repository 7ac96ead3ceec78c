"""Data sets for runs: 2-D toys, 8x8 digits, modular addition, CIFAR-10, image folders and the
user's own arrays or CSV files.

Nothing downloads: toys are generated, digits ship with scikit-learn, image data come from
the user's own folder. Every loader is deterministic given ``seed`` and returns float32 inputs
and int64 labels split into train and test.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from richviz.errors import DataError, NonFiniteDataError

__all__ = [
    "LOADERS",
    "MAX_POINTS",
    "arrays",
    "blobs",
    "check_arrays",
    "cifar10",
    "circles",
    "csv_file",
    "Dataset",
    "digits",
    "image_folder",
    "load",
    "modular_addition",
    "moons",
    "names",
    "read_csv",
    "sinusoid",
    "spirals",
    "xor",
]

LOADERS: dict[str, Callable[..., Dataset]] = {}

MAX_POINTS = 20000
"""The most points the user's own data may hold (arrays, CSV rows, Playground points), the
same cap as the Playground's generated data (``n <= MAX_POINTS``). Larger data are refused
with a one-line ``DataError`` before they are read whole."""

MAX_LINE_CHARS = 100_000
"""The longest CSV line :func:`read_csv` reads (a file without line breaks is refused)."""


@dataclass
class Dataset:
    """A train/test split. ``x_*``: (N, *input_shape) float32; ``y_*``: (N,) int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


def _loader(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        LOADERS[name] = fn
        return fn

    return deco


def names() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(LOADERS)


def load(name: str, **kwargs: Any) -> Dataset:
    """Load data set ``name`` (see :func:`names`) with loader keyword arguments ``kwargs``."""
    if name not in LOADERS:
        raise DataError(f"data set {name!r} is unknown; choose one of {names()}")
    try:
        ds = LOADERS[name](**kwargs)
    except TypeError as exc:
        # names the keys only: the values may be the user's whole data set
        raise DataError(f"data set {name!r}: bad arguments {sorted(kwargs)}: {exc}") from exc
    ds.kwargs = dict(kwargs)
    return ds


def _check(n: int, test_fraction: float) -> None:
    if n < 4:
        raise DataError(f"n={n} must be at least 4")
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction={test_fraction} must lie in (0, 1)")


def _split(
    name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, classes: int
) -> Dataset:
    """Shuffle with ``seed`` and split; x float32, y int64."""
    perm = np.random.default_rng(seed + 1).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, train = perm[:n_test], perm[n_test:]
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    return Dataset(name, xt[train], yt[train], xt[test], yt[test], classes)


def _shuffled_with_noise(
    x: np.ndarray, n_first: int, rng: np.random.RandomState, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's two-class toy ending: labels 0 for the first ``n_first`` rows of ``x``
    (N, 2) and 1 for the rest, rows shuffled by ``rng.shuffle``, then Gaussian noise of
    standard deviation ``noise`` from the same generator (that order gives sklearn's points)."""
    y = (np.arange(len(x)) >= n_first).astype(np.intp)
    order = np.arange(len(x))
    rng.shuffle(order)
    x, y = x[order], y[order]
    return x + rng.normal(scale=noise, size=x.shape), y


@_loader("moons")
def moons(n: int = 400, noise: float = 0.1, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """Two interleaved half circles: scikit-learn's ``make_moons`` written out in numpy (the
    same points, checked in the tests), so a sweep worker's first row and the moons runs do
    not pay ~1.6 s for importing scikit-learn.

    Upper half circle ``(cos t, sin t)`` (class 0) and lower one ``(1 - cos t, 0.5 - sin t)``
    (class 1), ``t`` evenly spaced over ``[0, pi]``, shuffled by ``RandomState(seed).shuffle``,
    then Gaussian noise of standard deviation ``noise`` from the same generator.
    """
    _check(n, test_fraction)
    n_out, n_in = n // 2, n - n // 2
    rng = np.random.RandomState(seed)
    outer = np.linspace(0, np.pi, n_out)
    inner = np.linspace(0, np.pi, n_in)
    x = np.vstack(
        [
            np.append(np.cos(outer), 1 - np.cos(inner)),
            np.append(np.sin(outer), 1 - np.sin(inner) - 0.5),
        ]
    ).T
    x, y = _shuffled_with_noise(x, n_out, rng, noise)
    return _split("moons", x, y, test_fraction, seed, 2)


@_loader("circles")
def circles(
    n: int = 400,
    noise: float = 0.08,
    factor: float = 0.5,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> Dataset:
    """Two concentric circles: scikit-learn's ``make_circles`` written out in numpy (the same
    points, checked in the tests), so the quick start does not pay for importing scikit-learn.

    Outer circle (radius 1, class 0) and inner circle (radius ``factor``, class 1) at evenly
    spaced angles, shuffled by ``RandomState(seed).shuffle``, then Gaussian noise of standard
    deviation ``noise`` from the same generator.
    """
    _check(n, test_fraction)
    n_out, n_in = n // 2, n - n // 2
    rng = np.random.RandomState(seed)
    outer = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    inner = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    x = np.vstack(
        [
            np.append(np.cos(outer), np.cos(inner) * factor),
            np.append(np.sin(outer), np.sin(inner) * factor),
        ]
    ).T
    x, y = _shuffled_with_noise(x, n_out, rng, noise)
    return _split("circles", x, y, test_fraction, seed, 2)


@_loader("xor")
def xor(n: int = 400, noise: float = 0.0, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """Uniform points in [-1, 1]^2 labelled by the sign of x1 * x2 (plus optional input noise)."""
    _check(n, test_fraction)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    x = x + noise * rng.standard_normal(x.shape)
    return _split("xor", x, y, test_fraction, seed, 2)


@_loader("spirals")
def spirals(
    n: int = 400,
    arms: int = 2,
    turns: float = 1.5,
    noise: float = 0.03,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> Dataset:
    """``arms`` interleaved spirals in about [-1, 1]^2, one class per arm."""
    _check(n, test_fraction)
    if arms < 2:
        raise DataError(f"arms={arms} must be at least 2")
    rng = np.random.default_rng(seed)
    y = np.arange(n) % arms
    r = rng.uniform(0.05, 1.0, size=n)
    theta = 2 * math.pi * (turns * r + y / arms)
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
    x = x + noise * rng.standard_normal(x.shape)
    return _split("spirals", x, y, test_fraction, seed, arms)


@_loader("sinusoid")
def sinusoid(n: int = 400, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """Zavatone-Veth et al.: uniform in [-1, 1]^2, label ``x2 > 0.6 sin(7 x1 - 1)``."""
    _check(n, test_fraction)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    y = (x[:, 1] > 0.6 * np.sin(7 * x[:, 0] - 1)).astype(np.int64)
    return _split("sinusoid", x, y, test_fraction, seed, 2)


@_loader("blobs")
def blobs(
    n: int = 400,
    classes: int = 4,
    noise: float = 0.15,
    radius: float = 0.7,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> Dataset:
    """Gaussian blobs, one per class: centres ``radius (cos 2 pi k / C, sin 2 pi k / C)``.

    Class ``k = i mod C`` for point ``i`` (balanced classes); each point is its centre plus
    isotropic Gaussian noise of standard deviation ``noise``.
    """
    _check(n, test_fraction)
    if not 2 <= classes <= 64:
        raise DataError(f"classes={classes} must lie in [2, 64]")
    if not (math.isfinite(noise) and noise >= 0):
        raise DataError(f"noise={noise} must be finite and >= 0")
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    angle = 2 * math.pi * y / classes
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], 1)
    x = centres + noise * rng.standard_normal((n, 2))
    return _split("blobs", x, y, test_fraction, seed, classes)


@_loader("digits")
def digits(seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), shape (1, 8, 8), pixel values in [0, 1]."""
    from sklearn.datasets import load_digits

    _check(100, test_fraction)
    d = load_digits()
    x = (d.images / 16.0).reshape(-1, 1, 8, 8)
    return _split("digits", x, d.target, test_fraction, seed, 10)


@_loader("modular_addition")
def modular_addition(p: int = 23, train_fraction: float = 0.4, seed: int = 0) -> Dataset:
    """All pairs (a, b) in Z_p^2 labelled (a + b) mod p; inputs are two concatenated one-hots.

    Inputs have shape (2 p,). A fraction ``train_fraction`` of the p^2 pairs is for training.
    """
    if p < 2:
        raise DataError(f"p={p} must be at least 2")
    if not 0 < train_fraction < 1:
        raise DataError(f"train_fraction={train_fraction} must lie in (0, 1)")
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    x = np.zeros((p * p, 2 * p), dtype=np.float32)
    x[np.arange(p * p), a] = 1
    x[np.arange(p * p), p + b] = 1
    ds = _split("modular_addition", x, (a + b) % p, 1 - train_fraction, seed, p)
    return ds


def _check_count(n: int, name: str) -> None:
    if n > MAX_POINTS:
        raise DataError(f"{name}: {n} points exceed the cap of {MAX_POINTS} (datasets.MAX_POINTS)")


def check_arrays(x: Any, y: Any, name: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Validate user inputs ``x`` (N, d) and integer labels ``y`` (N,); float64 and int64 copies.

    Raises ``DataError`` naming ``name`` for a wrong shape, more than :data:`MAX_POINTS` points
    (checked before anything is converted when ``x`` has a length) or labels that are not
    non-negative integers, and ``NonFiniteDataError`` (a ``DataError`` and a
    ``NonFiniteError``) for NaN or inf inputs. Messages never quote the values.
    """
    try:
        n = len(x)
    except TypeError:
        n = 0  # no length (e.g. a scalar): the shape check below names it
    _check_count(n, name)
    try:
        xa = np.array(x, dtype=np.float64)
        ya_raw = np.array(y, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{name}: x and y must be numeric arrays") from None
    if xa.ndim != 2 or xa.shape[0] < 1:
        raise DataError(f"{name}: x must have shape (N, d) with N >= 1, got {xa.shape}")
    _check_count(xa.shape[0], name)
    if ya_raw.shape != (xa.shape[0],):
        raise DataError(f"{name}: y must have shape ({xa.shape[0]},), got {ya_raw.shape}")
    if not np.all(np.isfinite(xa)):
        raise NonFiniteDataError(f"{name}: x contains non-finite values (NaN or inf)")
    if not np.all(np.isfinite(ya_raw)) or np.any(ya_raw < 0) or np.any(ya_raw != np.round(ya_raw)):
        raise DataError(f"{name}: labels y must be integers >= 0")
    return xa, ya_raw.astype(np.int64)


@_loader("arrays")
def arrays(
    x: Any = None,
    y: Any = None,
    num_classes: int | None = None,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """The user's own points: ``x`` (N, d) inputs and ``y`` (N,) integer labels (lists or arrays).

    ``num_classes`` defaults to ``max(y) + 1``. ``test_fraction = 0`` (the default, for a handful
    of points) uses every point for training and evaluates on the same points; otherwise a
    seeded shuffle holds out that fraction.
    """
    if x is None or y is None:
        raise DataError("arrays: pass x=(N, d) inputs and y=(N,) labels")
    xa, ya = check_arrays(x, y, "arrays")
    classes = int(ya.max()) + 1
    if num_classes is not None:
        if num_classes < classes:
            raise DataError(
                f"arrays: num_classes={num_classes} but the labels go up to {classes - 1}"
            )
        classes = int(num_classes)
    if test_fraction == 0:
        xt = torch.as_tensor(xa, dtype=torch.float32)
        yt = torch.as_tensor(ya, dtype=torch.int64)
        return Dataset("arrays", xt, yt, xt.clone(), yt.clone(), classes)
    if len(xa) < 4:
        raise DataError(f"arrays: {len(xa)} points cannot be split; use test_fraction=0")
    _check(len(xa), test_fraction)
    return _split("arrays", xa, ya, test_fraction, seed, classes)


def _csv_rows(path: Path, delimiter: str) -> list[list[float]]:
    """The numeric rows of ``path``, read line by line: at most :data:`MAX_POINTS` data rows and
    :data:`MAX_LINE_CHARS` characters a line, so an oversized file is refused early. Errors name
    the file and the line number, never the line's content (the path may be any file)."""
    rows: list[list[float]] = []
    seen_first = False
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for number in itertools.count(1):
                line = f.readline(MAX_LINE_CHARS + 1)
                if not line:
                    break
                if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
                    raise DataError(
                        f"{path}, line {number}: longer than {MAX_LINE_CHARS} characters"
                    )
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                try:
                    row = [float(c) for c in text.split(delimiter)]
                except ValueError:
                    if not seen_first:  # a first row that is not numeric is a header
                        seen_first = True
                        continue
                    raise DataError(f"{path}, line {number}: not a table of numbers") from None
                seen_first = True
                if rows and len(row) != len(rows[0]):
                    raise DataError(
                        f"{path}, line {number}: not a table of numbers ({len(row)} columns, "
                        f"the first row has {len(rows[0])})"
                    )
                rows.append(row)
                if len(rows) > MAX_POINTS:
                    raise DataError(
                        f"{path}: more than {MAX_POINTS} data rows (the cap, datasets.MAX_POINTS)"
                    )
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    return rows


def read_csv(
    path: str | Path, label_column: int = -1, delimiter: str = ","
) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV of numbers: each row the input coordinates plus one integer label column.

    A first row that is not numeric is taken as a header and skipped; blank lines and ``#``
    comments are skipped. At most :data:`MAX_POINTS` data rows. Returns ``(x, y)``: float64
    (N, d) and int64 (N,). Raises ``DataError`` naming the file (and the line), never quoting
    its content.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such CSV file")
    rows = _csv_rows(path, delimiter)
    if not rows:
        raise DataError(f"{path}: no data rows")
    table = np.array(rows, dtype=np.float64)
    if table.shape[1] < 2:
        raise DataError(f"{path}: every row needs the inputs and a label, got {table.shape}")
    col = label_column % table.shape[1]
    x = np.delete(table, col, axis=1)
    xa, ya = check_arrays(x, table[:, col], str(path))
    return xa, ya


@_loader("csv")
def csv_file(
    path: str | None = None,
    label_column: int = -1,
    num_classes: int | None = None,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """A CSV file read by :func:`read_csv` (inputs, then a label column), split as
    :func:`arrays`."""
    if path is None:
        raise DataError("csv: pass path=<file.csv>")
    x, y = read_csv(path, label_column)
    ds = arrays(x, y, num_classes=num_classes, test_fraction=test_fraction, seed=seed)
    ds.name = "csv"
    return ds


def _stack_images(ds: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for i in range(len(ds)):
        img, label = ds[i]
        xs.append(img)
        ys.append(int(label))
    if not xs:
        raise DataError(f"{what} holds no images")
    try:
        x = torch.stack(xs).to(torch.float32)
    except RuntimeError as exc:
        raise DataError(f"{what}: images differ in size ({exc}); resize them first") from exc
    return x, torch.as_tensor(ys, dtype=torch.int64)


def _limit(x: torch.Tensor, y: torch.Tensor, limit: int | None, seed: int):
    if limit is None or limit >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:limit]
    return x[idx], y[idx]


@_loader("cifar10")
def cifar10(
    root: str | None = None,
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Dataset:
    """CIFAR-10 from the user's local folder (torchvision format; never downloads).

    Images are (3, 32, 32) in [0, 1]; ``train_limit`` / ``test_limit`` keep a seeded subset.
    """
    import torchvision
    from torchvision.transforms import ToTensor

    if root is None:
        raise DataError("cifar10 needs root=<folder containing cifar-10-batches-py>")
    try:
        tr = torchvision.datasets.CIFAR10(
            str(root), train=True, download=False, transform=ToTensor()
        )
        te = torchvision.datasets.CIFAR10(
            str(root), train=False, download=False, transform=ToTensor()
        )
    except RuntimeError as exc:
        folder = Path(root) / "cifar-10-batches-py"
        what = "is incomplete or corrupt" if folder.is_dir() else "does not exist"
        raise DataError(
            f"cifar10: {str(folder)!r} {what} (torchvision CIFAR-10 layout expected under "
            f"root={str(root)!r}; richviz never downloads)"
        ) from exc
    x_tr = torch.as_tensor(tr.data).permute(0, 3, 1, 2).float() / 255
    x_te = torch.as_tensor(te.data).permute(0, 3, 1, 2).float() / 255
    y_tr = torch.as_tensor(tr.targets, dtype=torch.int64)
    y_te = torch.as_tensor(te.targets, dtype=torch.int64)
    x_tr, y_tr = _limit(x_tr, y_tr, train_limit, seed)
    x_te, y_te = _limit(x_te, y_te, test_limit, seed + 1)
    return Dataset("cifar10", x_tr, y_tr, x_te, y_te, 10)


@_loader("image_folder")
def image_folder(
    root: str | None = None, size: int | None = None, test_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    """Images in ``root/<class>/<file>`` (torchvision ``ImageFolder``), RGB in [0, 1].

    All images must share a size unless ``size`` resizes them to ``size x size``.
    """
    import torchvision
    from torchvision import transforms

    if root is None or not Path(root).is_dir():
        raise DataError(f"image_folder: root={root!r} is not a folder of class sub-folders")
    tf = [transforms.Resize((size, size))] if size else []
    tf.append(transforms.ToTensor())
    try:
        folder = torchvision.datasets.ImageFolder(str(root), transform=transforms.Compose(tf))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"image_folder: cannot read {str(root)!r}: {exc}") from exc
    x, y = _stack_images(folder, f"image_folder {str(root)!r}")
    ds = _split("image_folder", x.numpy(), y.numpy(), test_fraction, seed, len(folder.classes))
    return ds
