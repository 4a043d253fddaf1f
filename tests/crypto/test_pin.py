"""PIN policy and stretching (PROTOCOL.md Part X §2)."""

from __future__ import annotations

import pytest

from xchat.crypto import pin
from xchat.errors import WeakPin


@pytest.mark.parametrize(
    "weak",
    [
        "12345",  # too short
        "123456",  # most common
        "000000",
        "111111",
        "654321",  # sequence
        "135791",  # sequence with step 2
        "121212",  # pattern
        "123123",
        "250690",  # a date
        "password",
        "abc",  # short passphrase
        "aaaaaaaaa",  # too few distinct characters
        "  1234  ",  # whitespace does not count
        "x" * 2000,
    ],
)
def test_weak_pins_are_refused(weak: str) -> None:
    with pytest.raises(WeakPin):
        pin.check_pin(weak)


@pytest.mark.parametrize("good", ["482913", "8730019", "correct horse battery", "Zürich-2031"])
def test_reasonable_pins_pass(good: str) -> None:
    assert pin.check_pin(good) == pin.normalize_pin(good)


def test_stretch_is_salted_by_version_and_address() -> None:
    a = pin.stretch_pin("482913", b"\x01" * 16, "xc1qaaa")
    assert len(a.access_key) == 32 and len(a.encryption_seed) == 32
    assert a == pin.stretch_pin(" 482913 ", b"\x01" * 16, "xc1qaaa")  # normalized
    assert a != pin.stretch_pin("482913", b"\x02" * 16, "xc1qaaa")
    assert a != pin.stretch_pin("482913", b"\x01" * 16, "xc1qaab")
    assert a.access_key != a.encryption_seed


def test_nfkc_makes_equivalent_input_equal() -> None:
    full_width = "４８２９１３"  # the same digits from an East Asian keyboard
    assert pin.check_pin(full_width) == "482913"
