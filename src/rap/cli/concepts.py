"""``rap concept add|list|show|edit|remove``."""

from __future__ import annotations

from pathlib import Path

import typer

from rap.cli.context import print_json, state, stdout
from rap.render import concept_table, concepts_table
from rap.concepts import DEFAULT_CATEGORY, parse_attribute, validate_name
from rap.images import check_image

app = typer.Typer(help="Remember, edit and forget concepts.", no_args_is_help=True)

IMAGE = typer.Option(..., "--image", "-i", help="A reference image; repeat for several.")
JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


@app.command("add")
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The handle you will type, e.g. bo (the model sees <bo>)."),
    images: list[Path] = IMAGE,
    info: str = typer.Option("", "--info", help="A short description: '<bo> is my Shiba Inu with a black collar'."),
    category: str = typer.Option(DEFAULT_CATEGORY, "--category", "-c", help="What it is (dog, person, plush toy): the detector looks for it."),
    attributes: list[str] = typer.Option([], "--attr", help="KEY=VALUE, e.g. --attr age=3; repeat for several."),
    as_json: bool = JSON,
) -> None:
    """Remember a new concept; the next retrieval sees it."""
    attrs = dict(parse_attribute(a) for a in attributes)
    name, checked = validate_name(name), [check_image(image) for image in images]  # bad input makes no store
    concept = state(ctx).store(create=True).add(name, checked, info=info, category=category, attributes=attrs)
    if as_json:
        print_json(concept.to_dict())
    else:
        stdout.print(f"remembered {concept.token} ({concept.category}, {len(concept.images)} image(s))")


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List the remembered concepts."""
    concepts = state(ctx).store().list()
    if as_json:
        print_json([c.to_dict() for c in concepts])
    elif concepts:
        stdout.print(concepts_table(concepts))
    else:
        stdout.print("no concepts yet; add one with: rap concept add NAME --image PHOTO --info TEXT --category CAT")


@app.command("show")
def show(ctx: typer.Context, name: str = typer.Argument(..., help="Concept name."), as_json: bool = JSON) -> None:
    """Show one concept in full."""
    concept = state(ctx).store().get(name)
    if as_json:
        print_json(concept.to_dict())
    else:
        stdout.print(concept_table(concept))


@app.command("edit")
def edit(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Concept name."),
    rename: str | None = typer.Option(None, "--name", help="A new name."),
    info: str | None = typer.Option(None, "--info", help="A new description."),
    category: str | None = typer.Option(None, "--category", "-c", help="A new category."),
    attributes: list[str] = typer.Option([], "--attr", help="Set KEY=VALUE; repeat for several."),
    unset: list[str] = typer.Option([], "--unset-attr", help="Remove attribute KEY; repeat for several."),
    add_images: list[Path] = typer.Option([], "--add-image", help="Add a reference image; repeat for several."),
    remove_images: list[int] = typer.Option([], "--remove-image", help="Remove the image with this id (see 'rap concept show')."),
    as_json: bool = JSON,
) -> None:
    """Change a concept; the next retrieval and answer reflect it at once."""
    concept = state(ctx).store().edit(
        name,
        rename=rename,
        info=info,
        category=category,
        set_attributes=dict(parse_attribute(a) for a in attributes),
        unset_attributes=unset,
        add_images=add_images,
        remove_images=remove_images,
    )
    if as_json:
        print_json(concept.to_dict())
    else:
        stdout.print(f"updated {concept.token}")


@app.command("remove")
def remove(ctx: typer.Context, name: str = typer.Argument(..., help="Concept name.")) -> None:
    """Forget a concept and its images."""
    store = state(ctx).store()
    token = store.get(name).token
    store.remove(name)
    stdout.print(f"forgot {token}")
