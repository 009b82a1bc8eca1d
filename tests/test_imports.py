"""Loading checkpoints offline: what rap sets around transformers' from_pretrained."""

import pytest

from rap._imports import loading_checkpoint


@pytest.mark.parametrize(("offline", "asked", "expected"), [("1", None, "NO"), ("1", "YES", "YES"), (None, None, None)])
def test_hub_kernels_are_off_offline_unless_asked_for(monkeypatch, offline, asked, expected):
    for name, value in (("HF_HUB_OFFLINE", offline), ("USE_HUB_KERNELS", asked)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with loading_checkpoint("model", "somewhere"):
        import os

        assert os.environ.get("USE_HUB_KERNELS") == expected
    if expected is not None:
        from transformers.integrations import hub_kernels

        assert hub_kernels._kernels_enabled() is (expected == "YES")
