"""The assistant: prompts built as the paper builds them, history, recognition, location."""

import pytest
from PIL import Image

from rap import Retriever
from rap.assistant import Assistant
from rap.errors import ConceptNotFound, InvalidInput
from rap.generation import create_generator


@pytest.fixture
def filled(store, photos):
    store.add("bo", [photos / "dog_00.jpg"], info="<bo> is my corgi.", category="dog", attributes={"age": "3"})
    store.add("kit", [photos / "cat_00.jpg"], info="<kit> is a ginger cat.", category="cat")
    store.add("tea", [photos / "teapot_00.jpg"], info="<tea> is a clay teapot.", category="teapot")
    return store


def assistant(store, threshold=float("inf"), top_k=2, **generator_options):
    """The tiny test encoder is crude, so visual matches are kept whatever their distance."""
    retriever = Retriever(store, "none", top_k=top_k, threshold=threshold)
    return Assistant(store, retriever, create_generator("echo", **generator_options))


def test_visual_question_prompt_is_the_papers(filled, photos):
    bot = assistant(filled)
    answer = bot.ask("What is <kit> doing?", photos / "dog_01.jpg")
    [conversation] = bot.generator.seen
    turn = conversation[-1]
    assert turn.text() == (
        "<image>\n[1.<image>\n Name: <kit>, Info: <kit> is a ginger cat.\n"
        "2.<image>\n Name: <bo>, Info: <bo> is my corgi. age: 3.\n]What is <kit> doing?"
    )
    # query image first, then each concept's reference image in concept order
    assert turn.images[0].size == Image.open(photos / "dog_01.jpg").size
    assert [c.concept.name for c in answer.concepts] == ["kit", "bo"]
    assert [c.via for c in answer.concepts] == ["text", "image"]
    assert answer.concepts[1].box is not None and answer.concepts[1].distance is not None
    assert turn.image_keys[1:] == [filled.get("kit").images[0].sha256, filled.get("bo").images[0].sha256]


def test_text_only_question_has_no_query_image(filled):
    bot = assistant(filled)
    answer = bot.ask("How old is bo?")
    turn = bot.generator.seen[0][-1]
    assert turn.text() == "[1.<image>\n Name: <bo>, Info: <bo> is my corgi. age: 3.\n]How old is bo?"
    assert [c.concept.name for c in answer.concepts] == ["bo"]


def test_number_of_injected_concepts_follows_the_backend(filled, photos):
    bot = Assistant(filled, Retriever(filled, "none", top_k=3, threshold=float("inf")), create_generator("echo", max_concepts=1))
    answer = bot.ask("who is here?", photos / "dog_01.jpg")
    assert len(answer.concepts) == 1 and bot.generator.seen[0][-1].text().count("Name:") == 1


def test_history_adds_concepts_named_later(filled, photos):
    bot = assistant(filled, top_k=1)
    chat = bot.chat(photos / "cat_01.jpg")
    first = chat.ask("What is this?")
    assert [c.concept.name for c in first.concepts][:1] == ["kit"]
    second = chat.ask("And what about <tea>? And kit?")
    conversation = bot.generator.seen[-1]
    assert len(conversation) == 2 and conversation[0].reply == first.text
    assert conversation[1].text() == "[1.<image>\n Name: <tea>, Info: <tea> is a clay teapot.\n]And what about <tea>? And kit?"
    assert [c.concept.name for c in second.concepts][-1] == "tea"


def test_chat_object_keeps_history(filled, photos):
    bot = assistant(filled)
    chat = bot.chat(photos / "cat_01.jpg")
    pieces = list(chat.stream("Who is this?"))
    assert "".join(pieces).strip() == chat.last.text
    chat.ask("Is bo around?")
    assert len(chat.turns) == 2 and {"kit", "bo"} <= {c.concept.name for c in chat.concepts}


def test_text_only_backend_gets_an_account_of_the_photo(filled, photos):
    bot = assistant(filled, sees_images=False)
    bot.ask("Who is this?", photos / "dog_01.jpg")
    text = bot.generator.seen[0][-1].text_only()
    assert text.startswith("(The photo: it shows <bo> (a dog,") and "<image>" not in text


def test_edit_changes_the_next_answer(filled):
    bot = assistant(filled)
    assert "corgi" in bot.ask("Tell me about <bo>").text
    filled.edit("bo", info="<bo> is a beagle now.")
    assert "beagle" in bot.ask("Tell me about <bo>").text


def test_recognize_both_modes_and_locate(filled, photos):
    bot = assistant(filled, threshold=None, reply="Yes, it is.")
    model = bot.recognize(photos / "dog_01.jpg", "bo")
    assert model.present is True and model.mode == "model" and "Is <bo> in the image?" in bot.generator.seen[0][-1].text()
    by_distance = bot.recognize(photos / "dog_00.jpg", "bo", mode="retriever")
    assert by_distance.present is True and bot.generator.seen[1:] == []
    assert bot.recognize(photos / "clock_00.jpg", "bo", mode="retriever").present is False
    location = bot.locate(photos / "dog_00.jpg", "bo")
    assert location.found and location.box == (0, 0, 256, 256)
    assert bot.locate(photos / "clock_00.jpg", "bo").box is None
    with pytest.raises(ConceptNotFound):
        bot.locate(photos / "dog_01.jpg", "ghost")


@pytest.mark.parametrize("question", ["", "   "])
def test_empty_question(filled, question):
    with pytest.raises(InvalidInput, match="empty"):
        assistant(filled).ask(question)


def test_unknown_backend_lists_known_ones():
    from rap.errors import UnknownBackend

    with pytest.raises(UnknownBackend, match="known:.*offline"):
        create_generator("gpt-17")


# -- rank, then decide: the model gets the top K labelled, and a blind one never contradicts the labels ----
from rap.answers import parse_yes_no  # noqa: E402
from rap.decided import question_kind  # noqa: E402

PRESENCE = ["Is bo here?", "Is <bo> in the image? Answer with a single word.", "do you see bo", "Are bo and kit in this photo?"]


@pytest.mark.parametrize("question", PRESENCE)
@pytest.mark.parametrize(("threshold", "present"), [(float("inf"), True), (0.01, False)])
def test_a_blind_model_never_contradicts_the_retrievers_label(filled, photos, question, threshold, present):
    """On the web page, "Is bo here?" got "No, bo is not in this photo" beside a chip saying bo matched."""
    lying = "Yes, definitely." if not present else "No, <bo> is not in this photo."
    bot = Assistant(filled, Retriever(filled, "none", top_k=2, threshold=threshold), create_generator("echo", reply=lying, sees_images=False))
    answer = bot.ask(question, photos / "dog_01.jpg")
    [bo] = [c for c in answer.concepts if c.concept.name == "bo"]
    assert bo.match is present and bo.to_dict()["match"] is present
    assert answer.model == "retriever" and bot.generator.seen == []
    # each concept asked about is answered as labelled (kit's label, when asked too, is whatever its evidence says)
    for concept in answer.concepts:
        if concept.concept.name in question:
            assert (f"<{concept.concept.name}> is in this photo" in answer.text) is concept.match
    if " and " not in question:
        assert parse_yes_no(answer.text) is present


def test_a_blind_model_is_told_where_from_the_labels_and_asked_the_rest(filled, photos):
    bot = Assistant(filled, Retriever(filled, "multiscale", top_k=2, threshold=float("inf")), create_generator("echo", reply="Somewhere else.", sees_images=False))
    chat = bot.chat(photos / "dog_01.jpg")
    where = chat.ask("Where is bo?")
    [bo] = [c for c in where.concepts if c.concept.name == "bo"]
    assert bo.match and (str(list(bo.box)) in where.text or "whole photo" in where.text) and "Somewhere" not in where.text
    assert chat.ask("What is bo doing?").text.strip() == "Somewhere else."  # not a presence question: the model answers
    assert chat.ask("Is kit here?").text.startswith("Yes, <kit> is in this photo")  # named later, labelled from the photo


def test_a_seeing_model_gets_weak_candidates_labelled_weak(filled, photos):
    bot = Assistant(filled, Retriever(filled, "none", top_k=2, threshold=0.01), create_generator("echo"))
    answer = bot.ask("Who is this?", photos / "dog_01.jpg")
    text = bot.generator.seen[0][-1].text()
    assert len(answer.concepts) == 2 and not any(c.match for c in answer.concepts)
    assert text.count("(A weak match: it may not be in this image.)") == 2 and answer.model == "echo"
    # a named concept is not weak, whatever its label: the user asked about it
    bot.ask("What is <kit> doing?", photos / "dog_01.jpg")
    assert "Info: <kit> is a ginger cat.\n" in bot.generator.seen[1][-1].text()


def test_a_text_only_backend_hears_of_matches_and_named_concepts_only(filled, photos):
    """A blind model cannot judge a weak candidate: told of one, SmolLM2 said "the dog is a ginger cat named <kit>"."""
    bot = Assistant(filled, Retriever(filled, "none", top_k=2, threshold=0.01), create_generator("echo", sees_images=False))
    answer = bot.ask("Who is this?", photos / "dog_01.jpg")
    text = bot.generator.seen[0][-1].text_only()
    assert "none of the user's people or things were recognised" in text and "<bo>" not in text and "<kit>" not in text
    assert len(answer.concepts) == 2 and not any(c.match for c in answer.concepts)  # still shown as evidence
    bot.ask("What is <kit> doing?", photos / "dog_01.jpg")
    named = bot.generator.seen[1][-1].text_only()
    assert "Info: <kit> is a ginger cat." in named and "<bo>" not in named  # the user named kit: the model hears of it


def test_a_blind_model_recognizes_by_the_retriever(filled, photos):
    bot = Assistant(filled, Retriever(filled, "none", threshold=0.01), create_generator("echo", reply="Yes", sees_images=False))
    result = bot.recognize(photos / "dog_00.jpg", "kit")
    assert (result.present, result.mode, result.reply) == (False, "retriever", None) and bot.generator.seen == []


@pytest.mark.parametrize(
    ("question", "kind"),
    [("Is bo here?", "presence"), ("is <bo> in the picture", "presence"), ("Can you see bo?", "presence"),
     ("Is there bo?", "presence"), ("Does this photo show bo?", "presence"), ("Where's bo?", "location"),
     ("where is <bo>", "location"), ("Is bo sleeping?", None), ("What is bo doing?", None), ("Is bo in the garden?", None)],
)  # fmt: skip
def test_presence_and_location_questions(question, kind):
    assert question_kind(question) == kind


@pytest.mark.parametrize(
    ("threshold", "reply", "corrected"),
    [
        (float("inf"), "It is a sunny day and <bo> is not in this picture.", "Yes, <bo> is in this photo"),
        (float("inf"), "I don't see bo anywhere.", "Yes, <bo> is in this photo"),
        (0.01, "I see <bo> running.", "No, I do not recognise <bo> in this photo"),
        (float("inf"), "<bo> is running on the grass.", None),
        (0.01, "A dog runs on the grass.", None),
    ],
)
def test_a_blind_models_free_reply_that_contradicts_the_labels_is_corrected(filled, photos, threshold, reply, corrected):
    bot = Assistant(filled, Retriever(filled, "none", top_k=1, threshold=threshold), create_generator("echo", reply=reply, sees_images=False))
    answer = bot.ask("What is going on?", photos / "dog_01.jpg")
    assert answer.text.startswith(reply.split(" ")[0]) and answer.model == "echo"
    if corrected is None:
        assert "Correction" not in answer.text
    else:
        assert answer.text.endswith(")") and f"(Correction from the retriever: {corrected}" in answer.text
