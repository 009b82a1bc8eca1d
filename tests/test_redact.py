"""One masking function for every secret rap shows or writes."""

import pytest
from pydantic import SecretStr

from rap.redact import MASK, is_secret_name, redact


@pytest.mark.parametrize("name", ["api_key", "API_KEY", "apikey", "token", "auth_token", "hf-token", "secret", "client_secret", "password", "aws_access_key", "credentials", "authorization"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["max_new_tokens", "max_concepts", "keyboard", "monkey", "tokenizer", "base_url", "timeout"])
def test_ordinary_names(name):
    assert not is_secret_name(name)


def test_redact_masks_at_any_depth_and_keeps_the_input():
    given = {"generator_options": {"api_key": "sk-1", "token": "", "timeout": 5, "extra": [{"password": "x"}]}, "key": None, "other": SecretStr("s")}
    assert redact(given) == {
        "generator_options": {"api_key": MASK, "token": "", "timeout": 5, "extra": [{"password": MASK}]},
        "key": None,
        "other": MASK,
    }
    assert given["generator_options"]["api_key"] == "sk-1"
