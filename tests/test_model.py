import numpy as np
import pytest

from sparseae import Architecture, Autoencoder, ConfigError
from sparseae.model import Arena


@pytest.mark.parametrize("name, total, enc, dec", [
    ("default", 61670, 30340, 31330),
    ("small", 61182, 30092, 31090),
    ("large", 2 * (1000 * 60 + 60 * 30 + 30 * 10) + (60 + 30 + 10) + (30 + 60 + 1000), None, None),
])
def test_preset_parameter_counts(name, total, enc, dec):
    ae = Autoencoder(name)
    assert ae.n_params == total == ae.arch.n_params
    if enc is not None:
        assert (ae.encoder.n, ae.decoder.n) == (enc, dec)


def test_arch_parsing_and_errors():
    assert Architecture.parse("784,64,8").sizes == (784, 64, 8)
    assert Architecture.parse([5, 3]).decoder_shapes() == [(3, 5, 1)]
    assert str(Architecture.parse("default")) == "1000-30-10 / 10-30-1000"
    for bad in ("foo", "10", "10,0", "10,x"):
        with pytest.raises(ConfigError, match="arch"):
            Architecture.parse(bad)


def test_weight_views_share_memory_in_out_order():
    arena = Arena(Architecture((7, 13, 3)).decoder_shapes())  # 3->13 (stored transposed), 13->7
    rng = np.random.default_rng(3)
    arena.params[0] = rng.random(arena.n, dtype=np.float32)
    for l, (n_in, n_out, _) in enumerate(arena.shapes):
        w = arena.weight(0, l)
        assert w.shape == (n_out, n_in)
        assert np.shares_memory(w, arena.params)
        w[...] = 0
        assert np.shares_memory(arena.bias(0, l), arena.params)
    assert np.count_nonzero(arena.params[0]) == sum(o for _, o, _ in arena.shapes)


def test_init_is_pytorch_uniform_and_seeded():
    a = Autoencoder("7,13,3", seed=11)
    b = Autoencoder("7,13,3", seed=11)
    for half_a, half_b in ((a.encoder, b.encoder), (a.decoder, b.decoder)):
        np.testing.assert_array_equal(half_a.params, half_b.params)
        for l, (n_in, _, _) in enumerate(half_a.shapes):
            bound = 1 / np.sqrt(n_in)
            w = half_a.weight(0, l)
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.5 * bound
        assert half_a.mask.all() and not half_a.m.any() and not half_a.v.any()
    c = Autoencoder("7,13,3", seed=12)
    assert not np.array_equal(a.encoder.params, c.encoder.params)


def test_encode_decode_reconstruct_match_numpy():
    ae = Autoencoder("9,5,3", seed=2)
    X = np.random.default_rng(0).random((7, 9)).astype(np.float32)

    def half(arena, h):
        for l, (_, _, act) in enumerate(arena.shapes):
            z = h @ arena.weight(0, l).astype(np.float64).T + arena.bias(0, l)
            h = np.maximum(z, 0) if act == 0 else 1 / (1 + np.exp(-z))
        return h

    code = ae.encode(X)
    assert code.dtype == np.float32 and code.shape == (7, 3)
    np.testing.assert_allclose(code, half(ae.encoder, X.astype(np.float64)), rtol=1e-5, atol=1e-6)
    Y = ae.reconstruct(X)
    np.testing.assert_array_equal(Y, ae.decode(code))
    ref = half(ae.decoder, half(ae.encoder, X.astype(np.float64)))
    np.testing.assert_allclose(Y, ref, rtol=1e-5, atol=1e-6)
    assert ae.l1(X) == pytest.approx(np.abs(ref - X).mean(), rel=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 9\)"):
        ae.encode(np.zeros((2, 8)))


def test_copy_row_variants():
    a = Arena([(5, 3, 0)], 3)
    rng = np.random.default_rng(0)
    a.init(rng)
    for arr in (a.m, a.v):
        arr[...] = rng.random(arr.shape)
    a.step[:] = [4, 5, 6]
    a.zeros[:] = [7, 8, 9]
    a.mask[1, 2] = 0
    before = {k: v.copy() for k, v in a.arrays().items()}
    a.copy_row(0, 1)
    for k in ("params", "mask", "m", "v", "step", "zeros"):
        np.testing.assert_array_equal(getattr(a, k)[0], before[k][1])
    a.copy_row(2, 1, moments=False)  # m, v of row 2 untouched, the rest copied
    np.testing.assert_array_equal(a.m[2], before["m"][2])
    np.testing.assert_array_equal(a.v[2], before["v"][2])
    np.testing.assert_array_equal(a.params[2], before["params"][1])
    assert a.step[2] == 5 and a.zeros[2] == 8
    a.copy_row(2, 1, adam=False)  # Adam state reset
    assert not a.m[2].any() and not a.v[2].any() and a.step[2] == 0
    view = a.rows(1, 3)  # shares memory with rows 1..2
    view.params[0, 0] = 42.0
    assert a.params[1, 0] == 42.0 and view.population == 2
