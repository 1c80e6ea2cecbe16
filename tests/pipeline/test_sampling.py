import random

from vlmft_cli.pipeline.sampling import SeededOrderSampler, padding_share


def test_order_depends_only_on_seed_and_epoch():
    lengths = [random.Random(0).randint(50, 500) for _ in range(200)]
    a, b = SeededOrderSampler(lengths, seed=7, group_size=8), SeededOrderSampler(lengths, seed=7, group_size=8)
    assert a.order() == b.order()
    assert sorted(a.order()) == list(range(200))
    a.set_epoch(1)
    assert a.order() != b.order()
    assert SeededOrderSampler(lengths, seed=8, group_size=8).order() != b.order()


def test_length_grouping_cuts_padding_below_ten_percent():
    rng = random.Random(1)
    lengths = [rng.choice([300, 320, 340, 360]) + rng.randint(0, 400) for _ in range(2000)]
    shuffled = SeededOrderSampler(lengths, seed=0).order()
    grouped = SeededOrderSampler(lengths, seed=0, group_size=32).order()
    assert padding_share(lengths, grouped, 2) < 0.10
    assert padding_share(lengths, grouped, 2) < padding_share(lengths, shuffled, 2)


def test_padding_share_by_hand():
    assert padding_share([10, 20, 10, 10], [0, 1, 2, 3], 2) == 1 - 50 / 60
