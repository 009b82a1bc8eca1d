"""``rap ask``, ``caption``, ``chat``, ``recognize`` and ``locate``: the assistant on the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast, get_args

import typer

from rap.assistant import Answer, Assistant, Mode
from rap.cli.context import print_json, state, stderr, stdout
from rap.render import concept_rows
from rap.errors import InvalidInput
from rap.images import LoadedImage, load_image

K = typer.Option(None, "-k", "--top-k", min=1, max=100, help="Concepts to retrieve.")
BACKEND = typer.Option(None, "--backend", "-b", help="Generation backend: llava, qwen2-vl, openai, offline (or backend:model).")
MODEL = typer.Option(None, "--model", "-m", help="Model for the backend: a hub name, a folder, or a server's model name.")
JSON = typer.Option(False, "--json", help="Print JSON.")


def _assistant(ctx: typer.Context, k: int | None, backend: str | None, model: str | None) -> Assistant:
    st = state(ctx)
    overrides = {"top_k": k, "generator": backend, "model": model}
    settings = st.resolved.settings.model_copy(update={key: v for key, v in overrides.items() if v is not None})
    return Assistant.from_settings(settings, st.store())


def _photo(ctx: typer.Context, path: Path) -> LoadedImage:
    """The photo decoded reduced to what retrieval needs (``image_side``), keeping its size for boxes."""
    return load_image(path, shorter_side=state(ctx).resolved.settings.image_side)


def _mode(mode: str) -> Mode:
    """``--mode`` of recognize and locate, checked."""
    if mode not in get_args(Mode):
        raise InvalidInput(f"--mode must be 'model' or 'retriever', not {mode!r}")
    return cast(Mode, mode)


def _show(answer: Answer, as_json: bool, extra: dict | None = None) -> None:
    if as_json:
        print_json(answer.to_dict() | (extra or {}))
        return
    stdout.print(answer.text)
    stderr.print(concept_rows(answer.concepts))


def ask_command(
    ctx: typer.Context,
    first: str = typer.Argument(..., help="IMAGE then QUESTION, or just QUESTION for a text-only question."),
    second: str | None = typer.Argument(None, help="The question, when an image comes first."),
    k: int | None = K,
    backend: str | None = BACKEND,
    model: str | None = MODEL,
    as_json: bool = JSON,
) -> None:
    """Ask about your concepts, with or without a photo."""
    image_path, question = (Path(first), second) if second is not None else (None, first)
    image = _photo(ctx, image_path) if image_path else None
    assistant = _assistant(ctx, k, backend, model)
    conversation = assistant.chat(image)
    if as_json:
        _show(conversation.ask(question), True)
        return
    for piece in conversation.stream(question):
        stdout.print(piece, end="")
    stdout.print()
    assert conversation.last is not None
    stderr.print(concept_rows(conversation.last.concepts))


def caption_command(
    ctx: typer.Context,
    image: Path = typer.Argument(..., help="The photo to caption."),
    k: int | None = K,
    backend: str | None = BACKEND,
    model: str | None = MODEL,
    as_json: bool = JSON,
) -> None:
    """A personalized caption that calls your concepts by name."""
    picture = _photo(ctx, image)
    _show(_assistant(ctx, k, backend, model).caption(picture), as_json)


def chat_command(
    ctx: typer.Context,
    image: Path | None = typer.Argument(None, help="A photo to talk about (optional)."),
    k: int | None = K,
    backend: str | None = BACKEND,
    model: str | None = MODEL,
    as_json: bool = JSON,
) -> None:
    """An interactive chat with streamed answers; an empty line or Ctrl-D ends it."""
    picture = _photo(ctx, image) if image else None
    conversation = _assistant(ctx, k, backend, model).chat(picture)
    interactive = sys.stdin.isatty()
    while True:
        try:
            question = input("you: " if interactive else "")
        except EOFError:
            break
        if not question.strip():
            break
        if as_json:
            print_json(conversation.ask(question).to_dict())
            continue
        stdout.print("rap: ", end="")
        for piece in conversation.stream(question):
            stdout.print(piece, end="")
        stdout.print()


def recognize_command(
    ctx: typer.Context,
    image: Path = typer.Argument(..., help="The photo."),
    name: str = typer.Argument(..., help="The concept to look for."),
    mode: str = typer.Option("model", "--mode", help="model: ask the model; retriever: decide by calibrated distance, no generation."),
    k: int | None = K,
    backend: str | None = BACKEND,
    model: str | None = MODEL,
    as_json: bool = JSON,
) -> None:
    """Is NAME in IMAGE? Answers yes or no."""
    checked = _mode(mode)
    picture = _photo(ctx, image)
    result = _assistant(ctx, k, backend, model).recognize(picture, name, checked)
    if as_json:
        print_json(result.to_dict())
        return
    verdict = {True: "yes", False: "no", None: "unclear"}[result.present]
    stdout.print(verdict + (f" (the model said: {result.reply!r})" if result.reply is not None else ""))
    stderr.print(concept_rows([result.match]))


def locate_command(
    ctx: typer.Context,
    image: Path = typer.Argument(..., help="The photo."),
    name: str = typer.Argument(..., help="The concept to find."),
    mode: str | None = typer.Option(
        None, "--mode", help="model: ask the model for the box (the paper's grounding question); retriever: the best-matching "
        "region, no generation. Default: model when --backend or --model is given, else retriever.",
    ),
    k: int | None = K,
    backend: str | None = BACKEND,
    model: str | None = MODEL,
    as_json: bool = JSON,
) -> None:
    """Where is NAME in IMAGE? Prints its box (x0,y0,x1,y1 in pixels)."""
    chosen = _mode(mode or ("model" if backend or model else "retriever"))
    picture = _photo(ctx, image)
    location = _assistant(ctx, k, backend, model).locate(picture, name, chosen)
    if as_json:
        print_json(location.to_dict())
        return
    if location.box:
        stdout.print(",".join(map(str, location.box)))
    else:
        said = f"the model gave no box for {location.name} (it said: {location.reply!r})"
        stdout.print(said if location.reply is not None else f"{location.name} is not in this image")
