"""Data sets: shapes, dtypes, determinism, labelling rules, clear errors; nothing downloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from richviz import datasets
from richviz.errors import DataError

TOYS = ["moons", "circles", "xor", "spirals", "sinusoid"]


@pytest.mark.parametrize("name", TOYS)
def test_toys_shapes_split_and_determinism(name):
    d = datasets.load(name, n=200, seed=1)
    assert d.name == name and d.input_shape == (2,) and d.num_classes == 2
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert len(d.x_train) == 150 and len(d.x_test) == 50
    assert set(d.y_train.tolist()) == {0, 1}
    again = datasets.load(name, n=200, seed=1)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_test, again.y_test)
    other = datasets.load(name, n=200, seed=2)
    assert not torch.equal(d.x_train, other.x_train)
    # train and test are disjoint samples
    xs = torch.cat([d.x_train, d.x_test])
    assert len(torch.unique(xs, dim=0)) == 200


def test_sinusoid_rule_and_domain():
    d = datasets.load("sinusoid", n=400)
    x = torch.cat([d.x_train, d.x_test]).double()
    y = torch.cat([d.y_train, d.y_test])
    assert x.abs().max() <= 1
    expected = (x[:, 1] > 0.6 * torch.sin(7 * x[:, 0] - 1)).long()
    assert torch.equal(y, expected)


def test_xor_rule():
    d = datasets.load("xor", n=100)
    assert torch.equal(d.y_train, (d.x_train[:, 0] * d.x_train[:, 1] > 0).long())


def test_spirals_classes():
    d = datasets.load("spirals", n=300, arms=3)
    assert d.num_classes == 3 and set(d.y_train.tolist()) == {0, 1, 2}


def test_digits():
    d = datasets.load("digits")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_test) == 1797
    assert 0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1
    assert set(d.y_test.tolist()) == set(range(10))


def test_modular_addition_encodes_pairs():
    p = 7
    d = datasets.load("modular_addition", p=p, train_fraction=0.5)
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    assert d.input_shape == (2 * p,) and d.num_classes == p and len(x) == p * p
    assert torch.equal(x.sum(1), torch.full((p * p,), 2.0))
    a, b = x[:, :p].argmax(1), x[:, p:].argmax(1)
    assert torch.equal(y, (a + b) % p)
    assert len(torch.unique(torch.stack([a, b], 1), dim=0)) == p * p
    assert abs(len(d.x_train) - 0.5 * p * p) <= 1


def test_errors_are_data_errors():
    with pytest.raises(DataError, match="unknown"):
        datasets.load("mnist")
    with pytest.raises(DataError, match="bad arguments"):
        datasets.load("moons", colour="red")
    with pytest.raises(DataError, match="test_fraction"):
        datasets.load("moons", test_fraction=1.5)
    with pytest.raises(DataError, match="cifar-10-batches-py' does not exist"):
        datasets.load("cifar10", root="/nonexistent/cifar")
    with pytest.raises(DataError, match="root="):
        datasets.load("cifar10")
    with pytest.raises(DataError, match="image_folder"):
        datasets.load("image_folder", root="/nonexistent")
    assert issubclass(DataError, ValueError)


def test_cifar10_corrupt_folder(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not cifar")
    with pytest.raises(DataError, match="incomplete or corrupt"):
        datasets.load("cifar10", root=str(tmp_path))


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            arr = rng.integers(0, 255, size=(6, 6, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    d = datasets.load("image_folder", root=str(tmp_path), test_fraction=0.2)
    assert d.num_classes == 2 and d.input_shape == (3, 6, 6)
    assert len(d.x_train) == 8 and len(d.x_test) == 2
    assert 0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1
    assert d.kwargs["root"] == str(tmp_path)


@pytest.mark.parametrize(
    "n,noise,factor,seed", [(400, 0.08, 0.5, 0), (51, 0.2, 0.3, 7), (10, 0.0, 0.8, 1)]
)
def test_circles_are_scikit_learns(n, noise, factor, seed):
    """The numpy circles equal scikit-learn's make_circles point for point (then split)."""
    from sklearn.datasets import make_circles

    x, y = make_circles(n, noise=noise, factor=factor, random_state=seed)
    expected = datasets._split("circles", x, y, 0.25, seed, 2)
    got = datasets.load("circles", n=n, noise=noise, factor=factor, seed=seed)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name


@pytest.mark.parametrize("n,noise,seed", [(400, 0.1, 0), (51, 0.3, 7), (10, 0.0, 1)])
def test_moons_are_scikit_learns(n, noise, seed):
    """The numpy moons equal scikit-learn's make_moons point for point (then split)."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n, noise=noise, random_state=seed)
    expected = datasets._split("moons", x, y, 0.25, seed, 2)
    got = datasets.load("moons", n=n, noise=noise, seed=seed)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name


def test_toy_data_sets_do_not_import_scikit_learn(fresh_imports):
    """moons and circles are generated without importing scikit-learn (a fresh process)."""
    code = "from richviz import datasets; datasets.load('moons'); datasets.load('circles')"
    assert fresh_imports(code, ["sklearn"]) == []


# ---- the user's own data: one cap, early refusal, errors that name but never quote


def test_user_points_are_capped_like_generated_ones():
    cap = datasets.MAX_POINTS
    assert cap == 20000  # the Playground's cap on generated points, stated in the docs
    x = np.zeros((cap, 2))
    y = np.zeros(cap, dtype=int)
    assert datasets.check_arrays(x, y, "points")[0].shape == (cap, 2)
    with pytest.raises(DataError) as info:
        datasets.check_arrays(np.zeros((cap + 1, 2)), np.zeros(cap + 1), "points")
    msg = str(info.value)
    assert msg.startswith("points:") and str(cap) in msg and "\n" not in msg
    with pytest.raises(DataError, match="arrays: 20001 points exceed the cap of 20000"):
        datasets.load("arrays", x=[[0.0, 0.0]] * (cap + 1), y=[0] * (cap + 1))


def test_bad_arguments_name_the_keys_not_the_values():
    big = [[0.5, 0.5]] * 1000
    with pytest.raises(DataError) as info:
        datasets.load("arrays", x=big, y=[0] * 1000, colour="red")
    assert "colour" in str(info.value) and "0.5" not in str(info.value)


def test_csv_over_the_cap_is_refused_while_streaming(tmp_path):
    import time

    path = tmp_path / "big.csv"
    with path.open("w") as f:
        f.write("x1,x2,y\n")
        f.write("0.25,0.5,1\n" * 1_000_000)  # the 10^6-row file (11 MB)
    t0 = time.perf_counter()
    with pytest.raises(DataError) as info:
        datasets.read_csv(path)
    elapsed = time.perf_counter() - t0
    msg = str(info.value)
    assert str(path) in msg and "20000" in msg and "\n" not in msg
    assert elapsed < 5, elapsed  # stops after 20001 rows instead of reading 10^6
    at_cap = tmp_path / "cap.csv"
    at_cap.write_text("0.25,0.5,1\n" * datasets.MAX_POINTS)
    assert len(datasets.read_csv(at_cap)[0]) == datasets.MAX_POINTS


@pytest.mark.parametrize(
    "lines, line_no",
    [
        (["x1,x2,y", "1,2,0", "root:x:0:0:secret:/root:/bin/bash"], 3),
        (["1,2,0", "", "# comment", "1,2,SECRETWORD"], 4),
        (["1,2,0", "1,2,3,SECRET"], 2),
    ],
)
def test_csv_errors_name_file_and_line_never_the_content(tmp_path, lines, line_no):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        datasets.read_csv(path)
    msg = str(info.value)
    assert f"{path}, line {line_no}:" in msg and "not a table of numbers" in msg
    assert "secret" not in msg.lower() and "root:" not in msg


def test_csv_of_another_kind_of_file(tmp_path):
    binary = tmp_path / "blob.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(DataError, match="not UTF-8 text"):
        datasets.read_csv(binary)
    one_line = tmp_path / "long.csv"
    one_line.write_text("1," * datasets.MAX_LINE_CHARS)
    with pytest.raises(DataError, match="line 1: longer than"):
        datasets.read_csv(one_line)
    with pytest.raises(DataError, match="no such CSV file"):
        datasets.read_csv(tmp_path)  # a folder
