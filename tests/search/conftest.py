"""Fixtures the search tests share."""

import pytest

from tests.helpers.digits_model import make_digits_models


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The int8 digits model file (tiny @16, trained), made once per test module."""
    return str(make_digits_models(tmp_path_factory.mktemp("digits"))[1])
