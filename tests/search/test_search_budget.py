"""Budget parsing (KB = KiB = 1024 bytes) and the below-minimum error."""

import pytest

from mcutrain.search.budget import BudgetError, check_minimum, parse_bytes


@pytest.mark.parametrize("text, expected", [
    ("200KB", 200 * 1024), ("256KiB", 256 * 1024), ("256 kb", 256 * 1024), ("1MB", 1024 * 1024),
    ("1MiB", 1024 * 1024), ("204800", 204800), ("512B", 512), ("62.5KB", 64000), (4096, 4096),
])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["200 GB", "KB", "-5KB", "0", "lots", "1e3"])
def test_parse_bytes_refuses_with_the_units_it_knows(text):
    with pytest.raises(BudgetError, match="--budget|must be positive"):
        parse_bytes(text, "--budget")


@pytest.mark.parametrize("text", ["9" * 400, "2000000MB", 2**41])
def test_parse_bytes_refuses_budgets_over_one_tib(text):
    with pytest.raises(BudgetError, match=r"1 TiB"):
        parse_bytes(text, "--budget")


def test_below_minimum_names_both_numbers_in_bytes_and_kb():
    with pytest.raises(BudgetError) as err:
        check_minimum("SRAM budget", 10240, 26348, "mcunet-5fps")
    text = str(err.value)
    assert "10240 bytes (10.0 KB)" in text and "26348 bytes (25.7 KB)" in text and "16108 bytes" in text
    check_minimum("SRAM budget", 26348, 26348, "mcunet-5fps")  # exactly the minimum is fine
