"""Token strength estimates recover how random tokens were generated."""

from __future__ import annotations

import math
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from noclash.doctor.tokens import birthday, estimate

CLASSES = {
    "digits": (string.digits, 10),
    "lower": (string.ascii_lowercase, 26),
    "upper": (string.ascii_uppercase, 26),
}


@settings(max_examples=30, deadline=None)
@given(
    classes=st.sets(st.sampled_from(sorted(CLASSES)), min_size=2),
    length=st.integers(min_value=6, max_value=16),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_estimate_recovers_alphabet_and_length(classes: set[str], length: int, seed: int) -> None:
    import random

    rnd = random.Random(seed)  # uniform draws, as a token generator makes
    alphabet = "".join(CLASSES[c][0] for c in sorted(classes))
    tokens = ["".join(rnd.choice(alphabet) for _ in range(length)) for _ in range(300)]
    est = estimate(tokens)
    assert est is not None
    assert est.alphabet == sum(CLASSES[c][1] for c in classes)
    assert est.length == length
    assert math.isclose(est.bits, length * math.log2(est.alphabet))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(min_value=2, max_value=10**7), bits=st.floats(min_value=8, max_value=128))
def test_birthday_is_a_probability_and_grows_with_rows(n: int, bits: float) -> None:
    p = birthday(n, bits)
    assert 0.0 <= p <= 1.0
    assert birthday(n * 10, bits) >= p


def test_fixed_prefix_does_not_count_as_randomness() -> None:
    import random

    rng = random.Random(2)
    tokens = [
        "tok_" + "".join(rng.choice(string.ascii_lowercase) for _ in range(6)) for _ in range(100)
    ]
    est = estimate(tokens)
    assert est is not None and est.length == 6
