import pytest

from rap.concepts import parse_attribute, validate_attributes, validate_category, validate_name
from rap.errors import InvalidInput, InvalidName


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("bo", "bo"), (" <bo> ", "bo"), ("my_dog", "my_dog"), ("toy-2", "toy-2"), ("Mr.Bean", "Mr.Bean"), ("Zoë", "Zoë"), ("7", "7")],
)
def test_valid_names(raw, clean):
    assert validate_name(raw) == clean


@pytest.mark.parametrize("raw", ["", "  ", "<>", "two words", "bo\x00", "tab\tname", "-bo", "bo_", "x" * 65, "a/b", "<b<o>>"])
def test_invalid_names(raw):
    with pytest.raises(InvalidName):
        validate_name(raw)


def test_attributes_and_category():
    assert parse_attribute("age = 3") == ("age", "3")
    with pytest.raises(InvalidInput):
        parse_attribute("age")
    assert validate_category(" Plush Toy ") == "plush toy"
    with pytest.raises(InvalidInput):
        validate_category("")
    with pytest.raises(InvalidInput):
        validate_attributes({"": "x"})
