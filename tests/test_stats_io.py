"""landscape.stats (Wilson and mean intervals) and landscape.io (atomic writes)."""
from __future__ import annotations

import math

import pytest

from landscape.io import atomic_path, atomic_write, atomic_write_text
from landscape.stats import Z95, mean_interval, wilson_interval

# ----------------------------------------------------------------------------- Wilson interval

def test_z95_is_the_normal_quantile():
    # Phi(z) = 0.975  <=>  erf(z / sqrt 2) = 0.95
    assert math.erf(Z95 / math.sqrt(2)) == pytest.approx(0.95, abs=1e-12)


@pytest.mark.parametrize("correct, n, low, high", [
    (0, 10, 0.0, 0.27753),
    (10, 10, 0.72247, 1.0),
    (5, 10, 0.23659, 0.76341),
    (1, 10, 0.01787, 0.40415),
    (50, 100, 0.40383, 0.59617),
    (915, 1000, 0.89609, 0.93074),
])
def test_wilson_known_values(correct, n, low, high):
    lo, hi = wilson_interval(correct, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


@pytest.mark.parametrize("correct, n", [(10, 10), (0, 1000)])
def test_wilson_contains_observed_proportion_at_0_and_100(correct, n):
    """landscape/stats.py wilson_interval: rounding gives 10/10 an upper bound of 0.9999999999999999 and
    0/1000 a lower bound of 2e-19; max(0, .)/min(1, .) clip only the other side."""
    lo, hi = wilson_interval(correct, n)
    assert lo <= correct / n <= hi


@pytest.mark.parametrize("n", [10, 37, 1000])
def test_wilson_half_is_symmetric_and_contains_p(n):
    for correct in range(0, n + 1, max(1, n // 10)):
        lo, hi = wilson_interval(correct, n)
        mirror_lo, mirror_hi = wilson_interval(n - correct, n)
        assert lo == pytest.approx(1 - mirror_hi, abs=1e-12)
        assert hi == pytest.approx(1 - mirror_lo, abs=1e-12)
        assert 0.0 <= lo <= correct / n + 1e-12
        assert correct / n - 1e-12 <= hi <= 1.0


@pytest.mark.parametrize("correct, n", [(3, 10), (7, 20), (915, 1000)])
def test_wilson_bounds_solve_the_score_equation(correct, n):
    # The Wilson bounds are the p with |p_hat - p| = z sqrt(p (1 - p) / n).
    p_hat = correct / n
    for b in wilson_interval(correct, n):
        assert (p_hat - b) ** 2 == pytest.approx(Z95 ** 2 * b * (1 - b) / n, rel=1e-9)


def test_wilson_narrows_with_n():
    w = [hi - lo for lo, hi in (wilson_interval(n // 2, n) for n in (10, 100, 1000))]
    assert w[0] > w[1] > w[2]


def test_wilson_bad_input():
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_mean_interval():
    mean, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    half = Z95 * math.sqrt(1.0 / 3)
    assert (lo, hi) == (pytest.approx(2 - half), pytest.approx(2 + half))
    mean, lo, hi = mean_interval([4.0])
    assert mean == 4.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in mean_interval([]))


# ----------------------------------------------------------------------------- atomic writes

class Boom(RuntimeError):
    pass


def _half_writer(tmp):
    with open(tmp, "w") as f:
        f.write("partial,")
        f.flush()
    raise Boom("disk on fire")


def test_atomic_write_failure_leaves_nothing(tmp_path):
    target = tmp_path / "sub" / "results.csv"
    with pytest.raises(Boom):
        atomic_write(target, _half_writer)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []   # no temp file left behind


def test_atomic_write_failure_keeps_existing_file(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old\n")
    with pytest.raises(Boom):
        atomic_write(target, _half_writer)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_atomic_write_success_replaces(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old\n")
    seen = []

    def writer(tmp):
        seen.append(tmp)
        assert tmp != target and tmp.parent == target.parent
        assert target.read_text() == "old\n"     # the old file stays readable during the write
        tmp.write_text("new\n")

    atomic_write(target, writer)
    assert target.read_text() == "new\n"
    assert not seen[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_atomic_write_text_and_path(tmp_path):
    target = tmp_path / "a" / "b" / "config.yaml"
    atomic_write_text(target, "seed: 1\n")
    assert target.read_text() == "seed: 1\n"
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_text("seed: 2\n")
            raise KeyError("x")
    assert target.read_text() == "seed: 1\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.yaml"]


def test_atomic_write_writer_that_writes_nothing_gives_empty_file(tmp_path):
    target = tmp_path / "empty.txt"
    atomic_write(target, lambda tmp: None)
    assert target.is_file() and target.read_text() == ""


def test_atomic_write_honours_umask(tmp_path):
    """landscape/io.py atomic_path makes the file with tempfile.mkstemp (mode 0600) and renames it into
    place, so results.csv etc. are unreadable to group and others, unlike a plain open() (0644)."""
    import os

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "results.csv", "a\n")
        (tmp_path / "plain.csv").write_text("a\n")
    finally:
        os.umask(old)
    mode = (tmp_path / "results.csv").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.csv").stat().st_mode & 0o777 == 0o644
